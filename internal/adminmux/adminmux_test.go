package adminmux

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestMux(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") })
	notReady := errors.New("not ready: the store has not synced")
	for _, tc := range []struct {
		name, method, path string
		ready              error
		code               int
		body               string
	}{
		{"metrics", "GET", "/metrics", nil, 200, "m 1\n"},
		{"live", "GET", "/live", nil, 200, "live\n"},
		{"live when not ready", "GET", "/live", notReady, 200, "live\n"},
		{"ready", "GET", "/ready", nil, 200, "ready\n"},
		{"not ready says why", "GET", "/ready", notReady, 503, "not ready: the store has not synced\n"},
		{"GET only", "POST", "/ready", nil, 405, ""},
		{"unknown path", "GET", "/nope", nil, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := New(metrics, func() error { return tc.ready })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || (tc.body != "" && string(b) != tc.body) {
				t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.body)
			}
		})
	}
}
