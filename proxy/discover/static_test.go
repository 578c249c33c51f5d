package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func eps(addrs ...string) []Endpoint {
	out := []Endpoint{}
	for _, a := range addrs {
		out = append(out, Endpoint{Addr: a})
	}
	return out
}

func addrsOf(es []Endpoint) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Addr)
	}
	return out
}

// next reads the watch's next set, failing rather than hanging.
func next(t *testing.T, w Watch) []Endpoint {
	t.Helper()
	select {
	case es, ok := <-w.Updates():
		if !ok {
			t.Fatal("watch closed")
		}
		return es
	case <-time.After(10 * time.Second):
		t.Fatal("no update")
		return nil
	}
}

func noUpdate(t *testing.T, w Watch) {
	t.Helper()
	select {
	case es := <-w.Updates():
		t.Fatalf("unexpected update %v", addrsOf(es))
	default:
	}
}

func TestStaticResolveAndSet(t *testing.T) {
	ctx := context.Background()
	s, err := NewStatic([]Destination{
		{Authority: "Web.Test", Addresses: []string{"10.96.0.10:80"}, Endpoints: eps("10.0.0.1:8080", "10.0.0.2:8080")},
		{Authority: "db.test:5432", Endpoints: eps("10.0.1.1:5432")},
	})
	if err != nil {
		t.Fatal(err)
	}
	web, err := s.Resolve(ctx, "web.test:80")
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	if got := addrsOf(next(t, web)); !reflect.DeepEqual(got, []string{"10.0.0.1:8080", "10.0.0.2:8080"}) {
		t.Fatalf("first set %v", got)
	}
	db, err := s.Resolve(ctx, "DB.test:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	next(t, db)
	if _, err := s.Resolve(ctx, "nope.test:80"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Resolve(unknown) error %v, want ErrNotFound", err)
	}

	// A new set reaches every watch; a removed authority reads as empty.
	if err := s.Set([]Destination{{Authority: "web.test", Endpoints: eps("10.0.0.3:8080")}}); err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(next(t, web)); !reflect.DeepEqual(got, []string{"10.0.0.3:8080"}) {
		t.Errorf("after Set, web's set is %v", got)
	}
	if got := next(t, db); len(got) != 0 {
		t.Errorf("after its removal, db's set is %v, want empty", addrsOf(got))
	}
	if _, ok := s.LookupAddr(netip.MustParseAddrPort("10.96.0.10:80")); ok {
		t.Error("an address removed by Set still resolves")
	}

	// Only the newest undelivered set is kept.
	for i := range 5 {
		s.Set([]Destination{{Authority: "web.test", Endpoints: eps(fmt.Sprintf("10.0.0.%d:8080", 10+i))}})
	}
	if got := addrsOf(next(t, web)); !reflect.DeepEqual(got, []string{"10.0.0.14:8080"}) {
		t.Errorf("after five Sets, web's set is %v, want the last", got)
	}
	noUpdate(t, web)

	web.Close()
	if _, ok := <-web.Updates(); ok {
		t.Error("Updates still open after Close")
	}
	web.Close() // idempotent
	if err := s.Set(nil); err != nil {
		t.Fatal(err)
	}
}

func TestStaticSetRejectsBadSets(t *testing.T) {
	good := []Destination{{Authority: "web.test:80", Addresses: []string{"10.96.0.10:80"}, Endpoints: eps("10.0.0.1:8080")}}
	s, err := NewStatic(good)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Resolve(context.Background(), "web.test:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)

	for _, c := range []struct {
		name  string
		dests []Destination
		want  string // the error names this field
	}{
		{"empty authority", []Destination{{}}, "destinations[0].authority"},
		{"authority port", []Destination{{Authority: "web:0"}}, "destinations[0].authority"},
		{"duplicate authority", []Destination{{Authority: "web.test"}, {Authority: "WEB.test:80"}}, "destinations[1].authority"},
		{"endpoint addr", []Destination{{Authority: "web.test", Endpoints: eps("10.0.0.1:8080", "10.0.0.2")}}, "destinations[0] (web.test:80).endpoints[1].addr"},
		{"endpoint without host", []Destination{{Authority: "web.test", Endpoints: eps(":8080")}}, "endpoints[0].addr"},
		{"endpoint port", []Destination{{Authority: "web.test", Endpoints: eps("10.0.0.1:http")}}, "endpoints[0].addr"},
		{"protocol", []Destination{{Authority: "web.test", Endpoints: []Endpoint{{Addr: "10.0.0.1:80", Protocol: "h3"}}}}, "destinations[0] (web.test:80).endpoints[0].protocol"},
		{"address", []Destination{{Authority: "web.test", Addresses: []string{"web:80"}}}, "destinations[0] (web.test:80).addresses[0]"},
		{"address owned twice", []Destination{
			{Authority: "a.test", Addresses: []string{"10.96.0.1:80"}},
			{Authority: "b.test", Addresses: []string{"10.96.0.1:80"}},
		}, "destinations[1] (b.test:80).addresses[0]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.Set(c.dests)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
			// The previous set keeps serving.
			noUpdate(t, w)
			if a, ok := s.LookupAddr(netip.MustParseAddrPort("10.96.0.10:80")); !ok || a != "web.test:80" {
				t.Errorf("LookupAddr after a rejected Set = %q, %v", a, ok)
			}
			w2, err := s.Resolve(context.Background(), "web.test:80")
			if err != nil {
				t.Fatal(err)
			}
			if got := addrsOf(next(t, w2)); !reflect.DeepEqual(got, []string{"10.0.0.1:8080"}) {
				t.Errorf("after a rejected Set, web.test:80 resolves to %v", got)
			}
			w2.Close()
		})
	}
	if _, err := NewStatic([]Destination{{Authority: ""}}); err == nil {
		t.Error("NewStatic accepted a bad set")
	}
}

// Concurrent Sets: every watch ends on the set the resolver serves.
func TestStaticConcurrentSets(t *testing.T) {
	s, err := NewStatic([]Destination{{Authority: "web.test", Endpoints: eps("10.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Resolve(context.Background(), "web.test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var last []Endpoint
	var mu sync.Mutex
	done := make(chan struct{})
	go func() { // a consumer that keeps only the newest set
		defer close(done)
		for es := range w.Updates() {
			mu.Lock()
			last = es
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				s.Set([]Destination{{Authority: "web.test", Endpoints: eps(fmt.Sprintf("10.0.%d.%d:1", g, i))}})
			}
		}()
	}
	wg.Wait()
	w2, err := s.Resolve(context.Background(), "web.test")
	if err != nil {
		t.Fatal(err)
	}
	served := addrsOf(next(t, w2))
	w2.Close()
	w.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if got := addrsOf(last); !reflect.DeepEqual(got, served) {
		t.Errorf("the watch ended on %v, but the resolver serves %v", got, served)
	}
}

func TestLookupAddr(t *testing.T) {
	s, err := NewStatic([]Destination{
		{Authority: "web.test", Addresses: []string{"10.96.0.10:80", "[fd00::10]:80"}},
		{Authority: "db.test:5432", Addresses: []string{"[::ffff:10.96.0.11]:5432"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr string
		want string
	}{
		{"10.96.0.10:80", "web.test:80"},
		{"[::ffff:10.96.0.10]:80", "web.test:80"}, // a v4-mapped original destination
		{"[fd00::10]:80", "web.test:80"},
		{"10.96.0.11:5432", "db.test:5432"},
		{"10.96.0.10:81", ""},
		{"10.96.0.12:80", ""},
	} {
		got, ok := s.LookupAddr(netip.MustParseAddrPort(c.addr))
		if got != c.want || ok != (c.want != "") {
			t.Errorf("LookupAddr(%s) = %q, %v; want %q", c.addr, got, ok, c.want)
		}
	}
}

func TestCanonicalAuthority(t *testing.T) {
	for _, c := range []struct {
		in, want string // want "" means an error
	}{
		{"web", "web:80"},
		{"web:80", "web:80"},
		{"Web.NS.svc.cluster.local.:8080", "web.ns.svc.cluster.local:8080"},
		{"WEB:443", "web:443"},
		{"10.0.0.1", "10.0.0.1:80"},
		{"10.0.0.1:9090", "10.0.0.1:9090"},
		{"[::1]:8080", "[::1]:8080"},
		{"[::1]", "[::1]:80"},
		{"[FD00::A]", "[fd00::a]:80"},
		{"::1", ""},
		{"", ""},
		{":80", ""},
		{"web:0", ""},
		{"web:65536", ""},
		{"web:http", ""},
		{"web:", ""},
		{"a:b:c", ""},
		{".", ""},    // found by FuzzCanonicalAuthority: was ":80"
		{".:80", ""}, // likewise
		{"[", ""},    // found by FuzzCanonicalAuthority: was "[:80"
		{"[[::1]]:80", ""},
		{"web..:80", ""}, // found by FuzzCanonicalAuthority: was "web.:80", which canonicalised again to "web:80"
	} {
		got, err := CanonicalAuthority(c.in, 80)
		if c.want == "" {
			if err == nil {
				t.Errorf("CanonicalAuthority(%q) = %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("CanonicalAuthority(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestParseFlag(t *testing.T) {
	d, err := ParseFlag("web.test:8080=10.0.0.1:80, 10.0.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	if d.Authority != "web.test:8080" || !reflect.DeepEqual(addrsOf(d.Endpoints), []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Errorf("ParseFlag = %+v", d)
	}
	for _, bad := range []string{"", "web.test", "web.test=", "=10.0.0.1:80", "web.test=10.0.0.1", "web:0=10.0.0.1:80", "web=10.0.0.1:80,"} {
		if _, err := ParseFlag(bad); err == nil {
			t.Errorf("ParseFlag(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "--dst") {
			t.Errorf("ParseFlag(%q) error %q does not name the flag", bad, err)
		}
	}
}

func writeFile(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "destinations.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseFile(t *testing.T) {
	p := writeFile(t, `destinations:
  - authority: web.test:80
    addresses: ["10.96.0.10:80"]
    endpoints:
      - addr: 10.0.0.1:8080
        weight: 3
        labels: {zone: a}
      - addr: 10.0.0.2:8080
        protocol: h2
  - authority: mysql.test:3306
    endpoints: [{addr: "10.0.1.1:3306", protocol: opaque}]
`)
	dests, err := ParseFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Destination{
		{Authority: "web.test:80", Addresses: []string{"10.96.0.10:80"}, Endpoints: []Endpoint{
			{Addr: "10.0.0.1:8080", Weight: 3, Labels: map[string]string{"zone": "a"}},
			{Addr: "10.0.0.2:8080", Protocol: HintH2},
		}},
		{Authority: "mysql.test:3306", Endpoints: []Endpoint{{Addr: "10.0.1.1:3306", Protocol: HintOpaque}}},
	}
	if !reflect.DeepEqual(dests, want) {
		t.Errorf("ParseFile =\n%+v\nwant\n%+v", dests, want)
	}

	// None, said explicitly; a trailing "---" is no second document.
	if dests, err := ParseFile(writeFile(t, "destinations: []\n---\n# end\n")); err != nil || len(dests) != 0 {
		t.Errorf("destinations: []: %v, %v", dests, err)
	}
	if _, err := ParseFile(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// Anchors, aliases and merge keys are YAML's: the field check follows them.
func TestParseMergeKeys(t *testing.T) {
	dests, err := Parse("d.yaml", []byte(`destinations:
  - authority: web.test:80
    endpoints:
      - &e {addr: 10.0.0.1:80, weight: 2}
      - <<: *e
        addr: 10.0.0.2:80
  - authority: api.test:80
    endpoints: [*e]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(dests) != 2 || !reflect.DeepEqual(dests[0].Endpoints[1], Endpoint{Addr: "10.0.0.2:80", Weight: 2}) || dests[1].Endpoints[0].Addr != "10.0.0.1:80" {
		t.Errorf("%+v", dests)
	}
	_, err = Parse("d.yaml", []byte(`destinations:
  - authority: web.test:80
    endpoints:
      - &e {addr: 10.0.0.1:80}
      - <<: *e
        wieght: 3
`))
	if err == nil || !strings.Contains(err.Error(), "d.yaml:6: destinations[0].endpoints[1].wieght: unknown field") {
		t.Errorf("an unknown field beside a merge key: %v", err)
	}
}

func TestParseFileErrorsNameFileAndLine(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string // substrings after the file name
	}{
		{"unknown field", `destinations:
  - authority: web.test:80
    endpoints:
      - addr: 10.0.0.1:8080
        weigth: 3
`, []string{":5: ", "destinations[0].endpoints[0].weigth: unknown field", "allowed here: addr, weight"}},
		{"unknown top-level field", "destination:\n  - authority: web\n", []string{":1: ", "destination: unknown field; allowed here: destinations"}},
		{"bad YAML", "destinations:\n  - authority: web.test:80\n    endpoints: [\n", []string{"line"}},
		{"tab indentation", "destinations:\n  - authority: web\n\tendpoints: []\n", []string{"line "}},
		{"wrong type", "destinations:\n  - authority: web\n    endpoints:\n      - addr: 10.0.0.1:80\n        weight: lots\n", []string{"line 5"}},
		{"bad endpoint", `destinations:
  - authority: web.test:80
    endpoints:
      - addr: 10.0.0.1:8080
      - addr: nope
`, []string{":5: ", "endpoints[1].addr", `"nope"`}},
		{"bad protocol", `destinations:
  - authority: web.test:80
    endpoints:
      - addr: 10.0.0.1:8080
        protocol: http3
`, []string{":5: ", "endpoints[0].protocol"}},
		{"duplicate authority", `destinations:
  - authority: web.test:80
  - authority: WEB.test
`, []string{":3: ", "destinations[1].authority"}},
		{"bad address", `destinations:
  - authority: web.test:80
    addresses:
      - 10.96.0.10
`, []string{":4: ", "addresses[0]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, c.doc)
			_, err := ParseFile(p)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, p+":") {
				t.Errorf("error %q does not start with the file name", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// A file that says nothing, or says more than one document, is refused: an
// empty one would serve no destinations (every request a 503), and a
// second document was ignored.
func TestParseFileRefusesEmptyAndMultipleDocuments(t *testing.T) {
	good := "destinations:\n  - authority: web.test\n    endpoints: [{addr: \"10.0.0.1:80\"}]\n"
	for _, c := range []struct{ name, doc, want string }{
		{"empty", "", ": no destinations: the file is empty or only comments"},
		{"only comments", "# destinations:\n#   - authority: web\n", ": no destinations: the file is empty or only comments"},
		{"only a separator", "---\n# nothing\n", ": no destinations: the file is empty or only comments"},
		{"null", "~\n", ": no destinations: the file is empty or only comments"},
		{"no list", "destinations:\n", ":1: destinations: required"},
		{"empty mapping", "{}\n", ":1: destinations: required"},
		{"second document", good + "---\ndestinations:\n  - authority: api.test\n    endpoints: [{addr: \"10.0.0.2:80\"}]\n",
			":5: a second YAML document: a destinations file holds one document"},
		{"second document, broken", good + "---\n  - [\n", ": a second YAML document: yaml: line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, c.doc)
			dests, err := ParseFile(p)
			if err == nil {
				t.Fatalf("accepted as %d destinations", len(dests))
			}
			if !strings.HasPrefix(err.Error(), p+c.want) {
				t.Errorf("error %q\nwant it to start with %q", err, p+c.want)
			}
		})
	}
}

// WatchFile keeps the last good set when the file becomes empty or gains a
// second document, and says why in the log.
func TestWatchFileKeepsTheLastGoodOnEmptyOrMultiDocument(t *testing.T) {
	good := "destinations:\n  - authority: web.test\n    endpoints: [{addr: \"10.0.0.1:80\"}]\n"
	p := writeFile(t, good)
	dests, err := ParseFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStatic(dests)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Resolve(context.Background(), "web.test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	logs := make(chan string, 100)
	go func() { defer close(done); s.WatchFile(ctx, p, nil, 10*time.Millisecond, slog.New(errHandler(logs))) }()

	mtime := time.Now()
	for _, c := range []struct{ doc, want string }{
		{"# emptied\n", "no destinations: the file is empty or only comments"},
		{good + "---\ndestinations: []\n", ":5: a second YAML document"},
	} {
		// The watcher notes the file's mtime when it starts, which may be
		// after a first write: write with later mtimes until it reacts.
		var got string
		for i := 0; i < 100 && got == ""; i++ {
			mtime = mtime.Add(time.Second)
			writeAt(t, p, c.doc, mtime)
			select {
			case got = <-logs:
			case <-time.After(100 * time.Millisecond):
			}
		}
		if !strings.HasPrefix(got, "destinations rejected") || !strings.Contains(got, c.want) {
			t.Fatalf("log %q, want a rejection with %q", got, c.want)
		}
		noUpdate(t, w)
		if _, err := s.Resolve(context.Background(), "web.test"); err != nil {
			t.Fatalf("web.test no longer served after a rejected file: %v", err)
		}
	}
	cancel()
	<-done
}

// errHandler sends each log message with its err attribute to ch (dropping
// it when ch is full).
type errHandler chan string

func (h errHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h errHandler) Handle(_ context.Context, r slog.Record) error {
	m := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			m += ": " + a.Value.String()
		}
		return true
	})
	select {
	case h <- m:
	default:
	}
	return nil
}
func (h errHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h errHandler) WithGroup(string) slog.Handler      { return h }

// WatchFile applies a changed file and keeps the last good set when the
// file goes bad.
func TestWatchFile(t *testing.T) {
	p := writeFile(t, "destinations:\n  - authority: web.test\n    endpoints: [{addr: \"10.0.0.1:80\"}]\n")
	dests, err := ParseFile(p)
	if err != nil {
		t.Fatal(err)
	}
	extra := []Destination{{Authority: "flag.test", Endpoints: eps("10.0.9.9:80")}}
	s, err := NewStatic(append(dests, extra...))
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Resolve(context.Background(), "web.test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	logs := make(chan string, 100)
	log := slog.New(chanHandler(logs))
	go func() { defer close(done); s.WatchFile(ctx, p, extra, 10*time.Millisecond, log) }()

	// A bad file is rejected and the previous set keeps serving. (The
	// watcher notes the file's mtime when it starts, which may be after a
	// first write: touch the file until it reacts.)
	bad := "destinations:\n  - authority: web.test\n    endpoints: [{addr: \"nope\"}]\n"
	rejected := false
	for i := 1; i <= 100 && !rejected; i++ {
		writeAt(t, p, bad, time.Now().Add(time.Duration(i)*time.Second))
		select {
		case m := <-logs:
			rejected = strings.HasPrefix(m, "destinations rejected")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !rejected {
		t.Fatal("the bad file was never rejected")
	}
	noUpdate(t, w)
	if _, err := s.Resolve(context.Background(), "flag.test"); err != nil {
		t.Errorf("a rejected file dropped the flag destination: %v", err)
	}
	// ...and a good one applied (later mtime, so the watcher sees a change).
	writeAt(t, p, "destinations:\n  - authority: web.test\n    endpoints: [{addr: \"10.0.0.2:80\"}]\n", time.Now().Add(200*time.Second))
	waitLog(t, logs, "destinations reloaded")
	if got := addrsOf(next(t, w)); !reflect.DeepEqual(got, []string{"10.0.0.2:80"}) {
		t.Errorf("after the reload, web.test is %v", got)
	}
	if _, err := s.Resolve(context.Background(), "flag.test"); err != nil {
		t.Errorf("the flag destination was lost in the reload: %v", err)
	}
	cancel()
	<-done
}

func writeAt(t *testing.T, p, doc string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// chanHandler sends each log message to ch (dropping it when ch is full).
type chanHandler chan string

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h <- r.Message:
	default:
	}
	return nil
}
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h chanHandler) WithGroup(string) slog.Handler      { return h }

func waitLog(t *testing.T, logs <-chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-logs:
			if strings.HasPrefix(m, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q log", want)
		}
	}
}

// A destinations file over MaxFileSize is refused, naming the file, its
// size and the limit, before it is parsed (a 50 MB file took a proxy from
// 19 MB to 253 MB).
func TestParseFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "destinations.yaml")
	var b strings.Builder
	b.WriteString("destinations:\n")
	for i := 0; b.Len() <= MaxFileSize; i++ {
		fmt.Fprintf(&b, "  - authority: svc-%d.test:80\n    endpoints: [{addr: \"10.%d.%d.%d:8080\"}]\n", i, i>>16&255, i>>8&255, i&255)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if err == nil {
		t.Fatalf("a %d-byte destinations file was accepted; the limit is %d", b.Len(), MaxFileSize)
	}
	for _, want := range []string{path, strconv.Itoa(b.Len()) + " bytes", strconv.Itoa(MaxFileSize)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// Too many destinations or endpoints in one set are refused as a whole.
func TestStaticSetCounts(t *testing.T) {
	many := make([]Destination, MaxDestinations+1)
	for i := range many {
		many[i] = Destination{Authority: fmt.Sprintf("svc-%d.test:80", i), Endpoints: eps("10.0.0.1:80")}
	}
	if _, err := NewStatic(many); err == nil || !strings.Contains(err.Error(), strconv.Itoa(MaxDestinations)) {
		t.Errorf("%d destinations: %v, want an error naming the limit %d", len(many), err, MaxDestinations)
	}
	big := Destination{Authority: "big.test:80"}
	for i := 0; i <= MaxEndpoints; i++ {
		big.Endpoints = append(big.Endpoints, Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255)})
	}
	if _, err := NewStatic([]Destination{big}); err == nil || !strings.Contains(err.Error(), strconv.Itoa(MaxEndpoints)) {
		t.Errorf("%d endpoints: %v, want an error naming the limit %d", len(big.Endpoints), err, MaxEndpoints)
	}
}
