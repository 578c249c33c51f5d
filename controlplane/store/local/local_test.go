package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

func TestLoadGoodDirectory(t *testing.T) {
	objs, err := Load("testdata/good")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, o := range objs {
		types = append(types, fmt.Sprintf("%T", o))
	}
	// Files in path order, documents in file order; notes.txt and .hidden/
	// are skipped.
	want := "*v1.Namespace *v1.Service *v1.EndpointSlice *v1.Pod *v1.ServiceAccount *v1alpha1.ServiceProfile *v1alpha1.TrafficSplit *v1alpha2.TrafficSplit"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("loaded %s\nwant %s", got, want)
	}
	s := store.New()
	if err := s.ReplaceAll(objs); err != nil {
		t.Fatal(err)
	}
	web := store.Key{Namespace: "emojivoto", Name: "web-svc"}
	if k, ok := s.ServiceByClusterIP("10.96.0.10"); !ok || k != web {
		t.Fatalf("ServiceByClusterIP = %v, %v", k, ok)
	}
	if es := s.EndpointSlices(web); len(es) != 1 || len(es[0].Endpoints) != 1 {
		t.Fatalf("EndpointSlices(web-svc) = %v", es)
	}
	if _, ok := s.Pod(store.Key{Namespace: "emojivoto", Name: "web-0"}); !ok {
		t.Fatal("pod missing")
	}
	if ns, ok := s.Namespace("emojivoto"); !ok || ns.Annotations["meridian.io/inject"] != "enabled" {
		t.Fatalf("namespace = %v, %v", ns, ok)
	}
	p, ok := s.ServiceProfile(web)
	if !ok {
		t.Fatal("profile missing")
	}
	if r, err := p.Spec.RetryBudget.RetryRatio.Float64(); err != nil || r != 0.2 {
		t.Fatalf("retryRatio = %v, %v", r, err)
	}
	if d, _ := p.Spec.Routes[0].Timeout.Parse(); d != 250*time.Millisecond {
		t.Fatalf("timeout = %v", d)
	}
	if got := p.Spec.Routes[1].Condition.All[1].PathRegex; got != "/api/vote" {
		t.Fatalf("nested pathRegex = %q", got)
	}
	splits := s.TrafficSplits(web)
	if len(splits) != 1 || splits[0].Backends[0] != (store.Backend{Service: "web-stable", Weight: 900}) {
		t.Fatalf("TrafficSplits(web-svc) = %+v", splits)
	}
	// No namespace: the default one, as with kubectl.
	if got := s.TrafficSplits(store.Key{Namespace: "default", Name: "emoji-svc"}); len(got) != 1 || got[0].Backends[1].Weight != 50 {
		t.Fatalf("TrafficSplits(default/emoji-svc) = %+v", got)
	}
}

const goodProfile = `apiVersion: meridian.io/v1alpha1
kind: ServiceProfile
metadata:
  name: web-svc.emojivoto.svc.cluster.local
  namespace: emojivoto
spec:
  routes:
  - name: list
    condition:
      method: GET
`

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		want    []string // substrings of the error, after "<file>:"
	}{
		{
			name: "unknown nested field",
			content: "# a comment\n" + goodProfile + `      pathRegx: /api
`,
			want: []string{":12: spec.routes[0].condition.pathRegx: unknown field"},
		},
		{
			name: "unknown top-level field in the second document",
			content: `apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: v1
kind: Service
metadata: {name: b}
sepc: {}
`,
			want: []string{":8: sepc: unknown field"},
		},
		{
			name: "YAML syntax",
			content: goodProfile + `  retryBudget:
    ttl: [10s
`,
			want: []string{":12: invalid YAML"},
		},
		{
			name: "wrong type",
			content: goodProfile + `  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: lots
    ttl: 10s
`,
			want: []string{":13: spec.retryBudget.minRetriesPerSecond: cannot unmarshal string"},
		},
		{
			name: "status out of range",
			content: goodProfile + `    responseClasses:
    - condition:
        status:
          min: 700
      isFailure: true
`,
			want: []string{":14: spec.routes[0].responseClasses[0].condition.status.min: Invalid value: 700"},
		},
		{
			name:    "bad timeout",
			content: goodProfile + "    timeout: soon\n",
			want:    []string{`:11: spec.routes[0].timeout: Invalid value: "soon"`},
		},
		{
			name: "unknown kind",
			content: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
`,
			want: []string{`:2: kind: unknown kind "Deployment" of apiVersion "apps/v1"`, "EndpointSlice (discovery.k8s.io/v1)", "ServiceProfile (meridian.io/v1alpha1)",
				"TrafficSplit (split.smi-spec.io/v1alpha1, split.smi-spec.io/v1alpha2, split.smi-spec.io/v1alpha3, split.smi-spec.io/v1alpha4)"},
		},
		{
			name:    "missing kind",
			content: "metadata: {name: x}\n",
			want:    []string{":1: apiVersion and kind are required"},
		},
		{
			name: "duplicate object",
			content: `apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
`,
			want: []string{":5: duplicate Service default/a (first at "},
		},
		{
			name: "slice without its service",
			content: `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s
addressType: IPv4
`,
			want: []string{`:3: metadata.labels[kubernetes.io/service-name]: Required value`},
		},
		{
			name: "split without backends",
			content: `apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s}
spec:
  service: a
`,
			want: []string{":4: spec.backends: Required value"},
		},
		{
			name:    "duplicate key",
			content: "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n",
			want:    []string{`:5: invalid YAML: key "name" already set in map`},
		},
		{
			name:    "wrong type in a list",
			content: "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 80\n  - port: http\n",
			want:    []string{`:8: spec.ports.port: cannot unmarshal string`},
		},
		{
			name: "ratio not a number",
			content: goodProfile + `  retryBudget:
    retryRatio: lots
    minRetriesPerSecond: 1
    ttl: 10s
`,
			want: []string{`:12: spec.retryBudget.retryRatio: ratio "lots" is not a number`},
		},
		{
			name: "bad quantity weight",
			content: `apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: s}
spec:
  service: a
  backends:
  - service: b
    weight: lots
`,
			want: []string{"quantities must match"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "objects.yaml")
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := Load(dir)
			if err == nil {
				t.Fatalf("loaded %d objects, want an error", len(objs))
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.File != path {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadReportsErrorsOfEveryFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {bogus: 1}\n")
	write(t, dir, "b.yaml", "apiVersion: v1\nkind: LimitRange\nmetadata: {name: b}\n")
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), "a.yaml:4: spec.bogus") || !strings.Contains(err.Error(), `b.yaml:2: kind: unknown kind "LimitRange"`) {
		t.Fatalf("error = %v", err)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func service(name, ip string) string {
	return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + ", namespace: ns}\nspec: {clusterIP: " + ip + "}\n"
}

func TestWatchReloadsAndKeepsServingOnError(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "svc.yaml", service("a", "10.96.0.1"))
	s := store.New()
	reloads := make(chan error, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, dir, s, nil, Interval(5*time.Millisecond), OnReload(func(_ int, err error) { reloads <- err }))
	}()
	// until waits for a reload whose outcome satisfies ok; writes of more
	// than one file may take more than one reload.
	until := func(what string, ok func(error) bool) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case err := <-reloads:
				if ok(err) {
					return
				}
			case <-timeout:
				t.Fatalf("%s: no such reload", what)
			}
		}
	}
	succeeded := func(err error) bool { return err == nil }
	until("first load", succeeded)
	a := store.Key{Namespace: "ns", Name: "a"}
	b := store.Key{Namespace: "ns", Name: "b"}
	changed, stop := s.Watch(store.ServiceTopic(a))
	defer stop()

	// A change is picked up and wakes the service's watchers.
	put(t, dir, "svc.yaml", service("a", "10.96.0.2"))
	until("change", succeeded)
	<-changed
	if k, ok := s.ServiceByClusterIP("10.96.0.2"); !ok || k != a {
		t.Fatal("reload not served")
	}

	// A broken file rejects the reload; the previous content stays.
	put(t, dir, "more.yaml", service("b", "10.96.0.4"))
	put(t, dir, "svc.yaml", service("a", "10.96.0.3")+"bogus: true\n")
	until("broken file", func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "svc.yaml:5: bogus: unknown field")
	})
	if _, ok := s.ServiceByClusterIP("10.96.0.2"); !ok {
		t.Fatal("previous content no longer served after a bad reload")
	}
	select {
	case <-changed:
		// more.yaml may have been loaded alone before svc.yaml broke.
		if _, ok := s.Service(b); !ok {
			t.Fatal("a watcher of a woke, yet b is not served")
		}
	default:
	}

	// Fixing it serves the new content; removing a file removes its objects.
	put(t, dir, "svc.yaml", service("a", "10.96.0.3"))
	until("fix", succeeded)
	if _, ok := s.Service(b); !ok {
		t.Fatal("b not served after the fix")
	}
	if _, ok := s.ServiceByClusterIP("10.96.0.3"); !ok {
		t.Fatal("fixed file not served")
	}
	if err := os.Remove(filepath.Join(dir, "more.yaml")); err != nil {
		t.Fatal(err)
	}
	until("removal", succeeded)
	if _, ok := s.Service(b); ok {
		t.Fatal("b still served after its file was removed")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch returned %v", err)
	}
}

// watchDir runs Watch on dir until the test ends, and returns a function
// that waits for a load whose status satisfies ok.
func watchDir(t *testing.T, dir string, s *store.Store) func(what string, ok func(Status) bool) Status {
	t.Helper()
	return watchDirWith(t, dir, s, make(chan Status, 100))
}

// watchDirWith is watchDir with more options, reporting to statuses.
func watchDirWith(t *testing.T, dir string, s *store.Store, statuses chan Status, opts ...Option) func(what string, ok func(Status) bool) Status {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, dir, s, nil, append(opts, Interval(5*time.Millisecond), OnStatus(func(st Status) { statuses <- st }))...)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v", err)
		}
	})
	return func(what string, ok func(Status) bool) Status {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case st := <-statuses:
				if ok(st) {
					return st
				}
			case err := <-done:
				t.Fatalf("%s: Watch returned %v", what, err)
			case <-timeout:
				t.Fatalf("%s: no such load", what)
			}
		}
	}
}

// rejected returns the error of the file named name, or "" when it is
// applied or absent.
func rejected(st Status, name string) string {
	for _, f := range st.Files {
		if filepath.Base(f.Path) == name && f.Err != nil {
			return f.Err.Error()
		}
	}
	return ""
}

func TestWatchStartsWithTheValidFilesAndRejectsPerFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", service("a", "10.96.0.1"))
	write(t, dir, "b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: ns}\nspec: {clusterIP: [}\n")
	write(t, dir, "c.yaml", service("c", "10.96.0.3"))
	s := store.New()
	until := watchDir(t, dir, s)
	a, b, c := store.Key{Namespace: "ns", Name: "a"}, store.Key{Namespace: "ns", Name: "b"}, store.Key{Namespace: "ns", Name: "c"}

	// A syntax error in one file does not stop the start: the others serve.
	st := until("first load", func(Status) bool { return true })
	if e := rejected(st, "b.yaml"); !strings.Contains(e, filepath.Join(dir, "b.yaml")+":4: invalid YAML") {
		t.Fatalf("b.yaml's rejection = %q, want its file and line", e)
	}
	if st.Objects != 2 || len(st.Rejected()) != 1 {
		t.Fatalf("status = %+v, want 2 objects and b.yaml rejected", st)
	}
	for _, k := range []store.Key{a, c} {
		if _, ok := s.Service(k); !ok {
			t.Fatalf("%v not served while b.yaml is broken", k)
		}
	}

	// Fixing the bad file applies it.
	put(t, dir, "b.yaml", service("b", "10.96.0.2"))
	until("fix", func(st Status) bool { return len(st.Rejected()) == 0 })
	if _, ok := s.Service(b); !ok {
		t.Fatal("b not served after its file was fixed")
	}

	// Breaking a file later keeps its last good objects, and the other
	// files' changes still apply.
	put(t, dir, "a.yaml", service("a", "10.96.0.9")+"bogus: true\n")
	until("a broken", func(st Status) bool {
		return strings.Contains(rejected(st, "a.yaml"), "a.yaml:5: bogus: unknown field")
	})
	put(t, dir, "c.yaml", service("c", "10.96.0.33"))
	st = until("c changed", func(Status) bool {
		_, ok := s.ServiceByClusterIP("10.96.0.33")
		return ok
	})
	if k, ok := s.ServiceByClusterIP("10.96.0.1"); !ok || k != a {
		t.Fatal("a's last good content no longer served while a.yaml is broken")
	}
	if rejected(st, "a.yaml") == "" {
		t.Fatal("a.yaml no longer reported as rejected")
	}

	// A new file declaring an object another file serves is rejected; the
	// object stays with the file that served it.
	put(t, dir, "d.yaml", service("c", "10.96.0.44"))
	until("duplicate", func(st Status) bool {
		return strings.Contains(rejected(st, "d.yaml"), "d.yaml:1: duplicate Service ns/c (first at "+filepath.Join(dir, "c.yaml")+":1)")
	})
	if _, ok := s.ServiceByClusterIP("10.96.0.33"); !ok {
		t.Fatal("c's object taken over by a duplicate in another file")
	}
	// Once c.yaml drops it, d.yaml's version applies without d.yaml changing.
	put(t, dir, "c.yaml", service("other", "10.96.0.55"))
	until("duplicate resolved", func(st Status) bool { return rejected(st, "d.yaml") == "" })
	if k, ok := s.ServiceByClusterIP("10.96.0.44"); !ok || k != c {
		t.Fatal("d.yaml's c not served once the clash is gone")
	}

	// Removing a broken file removes its last good objects.
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	until("removal", func(st Status) bool { return len(st.Rejected()) == 0 })
	if _, ok := s.Service(a); ok {
		t.Fatal("a still served after its file was removed")
	}
}

func TestWatchRefusesLargeFilesWithoutReadingThem(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", service("a", "10.96.0.1"))
	big := filepath.Join(dir, "dump.yaml")
	// 50 MB, sparse: the file system holds no data for it.
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 50<<20); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	objs, st, err := LoadFiles(dir)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	// TotalAlloc counts every allocation, freed or not: the file must not
	// have been read.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Errorf("loading allocated %d bytes (heap in use %d → %d), want under 4 MiB", grew, before.HeapInuse, after.HeapInuse)
	}
	want := big + ": file is 52428800 bytes; the limit is 4194304 bytes (4 MiB)"
	if e := rejected(st, "dump.yaml"); e != want {
		t.Fatalf("rejection = %q, want %q", e, want)
	}
	if len(objs) != 1 {
		t.Fatalf("served %d objects, want a.yaml's one", len(objs))
	}

	// In the watch, the other files serve and removing the file clears it.
	s := store.New()
	until := watchDir(t, dir, s)
	until("first load", func(st Status) bool { return rejected(st, "dump.yaml") == want })
	if _, ok := s.Service(store.Key{Namespace: "ns", Name: "a"}); !ok {
		t.Fatal("a not served next to a file too large")
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	until("removal", func(st Status) bool { return len(st.Rejected()) == 0 })
}

func TestLoadAcceptsAFileAtTheLimit(t *testing.T) {
	dir := t.TempDir()
	content := service("a", "10.96.0.1")
	content += "#" + strings.Repeat("x", MaxFileSize-len(content)-2) + "\n"
	write(t, dir, "a.yaml", content)
	if objs, err := Load(dir); err != nil || len(objs) != 1 {
		t.Fatalf("Load = %d objects, %v; want a file of exactly MaxFileSize loaded", len(objs), err)
	}
}

var mtime = time.Now()

// put replaces a file at once (write, then rename) with a modification time
// later than any before, so that the change is seen whatever the file
// system's timestamp granularity.
func put(t *testing.T, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+name) // hidden: not loaded
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime = mtime.Add(time.Second)
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func removeFile(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}
