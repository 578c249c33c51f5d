package mirror_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/middleware/mirror"
)

// got is what an upstream received.
type got struct {
	method, path, host, body, header string
}

// upstream is a loopback server recording what it receives.
func upstream(t *testing.T) (*httptest.Server, chan got) {
	ch := make(chan got, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream reading the body: %v", err)
		}
		ch <- got{r.Method, r.URL.RequestURI(), r.Host, string(b), r.Header.Get("X-Test")}
		io.WriteString(w, "primary")
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

// sender is a Send to a loopback mirror backend, as the gateway's sends a
// mirrored request to one endpoint.
func sender(t *testing.T, mirrorURL string) func(*http.Request) {
	u, _ := url.Parse(mirrorURL)
	return func(r *http.Request) {
		r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			t.Errorf("mirror: %v", err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// A mirrored request reaches the mirror backend with the primary's method,
// target, Host, header and body, and the primary reaches its own upstream
// unchanged; bodies too large are not mirrored and the primary gets all of
// its body; the reasons are counted.
func TestMirror(t *testing.T) {
	big := strings.Repeat("x", mirror.MaxBody+1)
	for _, c := range []struct {
		name     string
		method   string
		body     string
		chunked  bool
		mirrored bool
		skipped  string
	}{
		{name: "GET", method: "GET", mirrored: true},
		{name: "POST with a body", method: "POST", body: "hello", mirrored: true},
		{name: "POST chunked", method: "POST", body: "chunked hello", chunked: true, mirrored: true},
		{name: "body at the bound", method: "PUT", body: big[1:], mirrored: true},
		{name: "chunked body at the bound", method: "PUT", body: big[1:], chunked: true, mirrored: true},
		{name: "body above the bound", method: "PUT", body: big, skipped: mirror.SkippedBodyTooLarge},
		{name: "chunked body above the bound", method: "PUT", body: big, chunked: true, skipped: mirror.SkippedBodyTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			primary, primaryGot := upstream(t)
			shadow, shadowGot := upstream(t)
			pu, _ := url.Parse(primary.URL)
			var mu sync.Mutex
			var skipped []string
			h := mirror.New(mirror.Config{Send: sender(t, shadow.URL), Skipped: func(r string) {
				mu.Lock()
				skipped = append(skipped, r)
				mu.Unlock()
			}})(httputil.NewSingleHostReverseProxy(pu))
			front := httptest.NewServer(h)
			defer front.Close()

			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
				if c.chunked {
					body = io.MultiReader(body) // no length known: chunked
				}
			}
			req, _ := http.NewRequest(c.method, front.URL+"/p?q=1", body)
			req.Host = "gw.example"
			req.Header.Set("X-Test", "t")
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "primary" {
				t.Errorf("primary answered %q", b)
			}
			want := got{c.method, "/p?q=1", "gw.example", c.body, "t"}
			if g := <-primaryGot; g != want {
				t.Errorf("primary got %+v", short(g))
			}
			if c.mirrored {
				select {
				case g := <-shadowGot:
					if g != want {
						t.Errorf("mirror got %+v", short(g))
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no mirrored request")
				}
			} else {
				// The skip is decided as the primary's body is read:
				// the primary's upstream has it all by now.
				select {
				case g := <-shadowGot:
					t.Errorf("mirrored %+v", short(g))
				default:
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if (c.skipped == "") != (len(skipped) == 0) || (c.skipped != "" && (len(skipped) != 1 || skipped[0] != c.skipped)) {
				t.Errorf("skipped %q, want %q", skipped, c.skipped)
			}
		})
	}
}

func short(g got) got {
	if len(g.body) > 20 {
		g.body = g.body[:20] + "…"
	}
	return g
}

// Of a bounded number of requests, the fraction sampled is near
// Numerator/Denominator; 0/0 mirrors all, 0/n none. (A body above the
// bound makes each sampled request tell Skipped at once, on the request's
// goroutine: the count needs no waiting for Sends.)
func TestFraction(t *testing.T) {
	const n = 2000
	big := strings.Repeat("x", mirror.MaxBody+1)
	for _, c := range []struct {
		num, den uint32
		min, max int
	}{
		{0, 0, n, n}, {1, 1, n, n}, {100, 100, n, n}, {7, 0, n, n},
		{0, 100, 0, 0}, {50, 100, n * 4 / 10, n * 6 / 10}, {1, 10, n / 20, n * 3 / 20},
	} {
		sampled := 0
		h := mirror.New(mirror.Config{
			Numerator: c.num, Denominator: c.den,
			Send:    func(*http.Request) { t.Error("sent a request above the bound") },
			Skipped: func(string) { sampled++ },
		})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		for range n {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", strings.NewReader(big)))
		}
		if sampled < c.min || sampled > c.max {
			t.Errorf("%d/%d: %d of %d sampled, want %d to %d", c.num, c.den, sampled, n, c.min, c.max)
		}
	}
}

// The primary's response never waits for the mirror, the mirror's context
// is not cancelled with the primary's, and at most MaxInFlight mirrored
// requests are in flight: the ones beyond are skipped, counted as busy.
func TestNeverWaits(t *testing.T) {
	release := make(chan struct{})
	var inSend, maxInSend, sendCtxErr atomic.Int64
	var busy atomic.Int64
	var sends sync.WaitGroup
	primary, primaryGot := upstream(t)
	pu, _ := url.Parse(primary.URL)
	h := mirror.New(mirror.Config{
		Send: func(r *http.Request) {
			defer sends.Done()
			n := inSend.Add(1)
			for {
				m := maxInSend.Load()
				if n <= m || maxInSend.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			if r.Context().Err() != nil {
				sendCtxErr.Add(1)
			}
			inSend.Add(-1)
		},
		Skipped: func(reason string) {
			if reason == mirror.SkippedBusy {
				busy.Add(1)
			}
		},
	})(httputil.NewSingleHostReverseProxy(pu))
	front := httptest.NewServer(h)
	defer front.Close()
	const extra = 5
	sends.Add(mirror.MaxInFlight)
	for i := range mirror.MaxInFlight + extra {
		resp, err := front.Client().Post(front.URL, "text/plain", bytes.NewReader([]byte("b")))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if g := <-primaryGot; g.body != "b" {
			t.Errorf("request %d: primary got body %q", i, g.body)
		}
	}
	// Every primary is answered while the mirrors are all held.
	if got := busy.Load(); got != extra {
		t.Errorf("%d skipped as busy, want %d", got, extra)
	}
	close(release)
	sends.Wait()
	if got := maxInSend.Load(); got > mirror.MaxInFlight {
		t.Errorf("%d mirrors in flight, want at most %d", got, mirror.MaxInFlight)
	}
	if got := sendCtxErr.Load(); got != 0 {
		t.Errorf("%d mirrors saw their context cancelled with the primary's", got)
	}
}

// A mirror's request is its own: what Send changes does not reach the
// primary.
func TestCloneIsOwn(t *testing.T) {
	done := make(chan struct{})
	var seen string
	h := mirror.New(mirror.Config{Send: func(r *http.Request) {
		r.Header.Set("X-Test", "mirror")
		r.URL.Path = "/elsewhere"
		close(done)
	}})(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-done
		seen = r.Header.Get("X-Test") + " " + r.URL.Path
	}))
	req := httptest.NewRequest(http.MethodGet, "/p", nil)
	req.Header.Set("X-Test", "primary")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if seen != "primary /p" {
		t.Errorf("primary saw %q, want %q", seen, "primary /p")
	}
}

// Two mirror filters on one rule (HTTPRouteRequestMultipleMirrors): each
// mirror backend gets the request, body included, and so does the primary.
func TestMultipleMirrors(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		primary, primaryGot := upstream(t)
		m1, m1Got := upstream(t)
		m2, m2Got := upstream(t)
		pu, _ := url.Parse(primary.URL)
		h := mirror.New(mirror.Config{Send: sender(t, m1.URL)})(
			mirror.New(mirror.Config{Send: sender(t, m2.URL)})(httputil.NewSingleHostReverseProxy(pu)))
		front := httptest.NewServer(h)
		var body io.Reader = strings.NewReader("both")
		if chunked {
			body = io.MultiReader(body)
		}
		resp, err := front.Client().Post(front.URL+"/multi", "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		for name, ch := range map[string]chan got{"primary": primaryGot, "mirror 1": m1Got, "mirror 2": m2Got} {
			select {
			case g := <-ch:
				if g.path != "/multi" || g.body != "both" {
					t.Errorf("chunked %v: %s got %+v", chunked, name, g)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("chunked %v: %s got nothing", chunked, name)
			}
		}
		front.Close()
	}
}
