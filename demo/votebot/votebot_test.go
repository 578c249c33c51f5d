package votebot_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/demo/votebot"
)

// fakeWeb records what the bot sends to a stand-in for the web front end.
type fakeWeb struct {
	mu       sync.Mutex
	lists    int
	votes    map[string]int
	badHosts []string
	failVote bool
}

func (f *fakeWeb) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Host != "web-svc.emojivoto:80" {
		f.badHosts = append(f.badHosts, r.Host)
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/api/list":
		f.lists++
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`[{"unicode":"😂","shortcode":":joy:"},{"unicode":"🎉","shortcode":":tada:"}]`))
	case r.Method == "POST" && r.URL.Path == "/api/vote":
		f.votes[r.URL.Query().Get("choice")]++
		if f.failVote {
			http.Error(w, `{"error":"ERROR"}`, http.StatusInternalServerError)
		}
	default:
		http.NotFound(w, r)
	}
}

func run(t *testing.T, f *fakeWeb) *votebot.Bot {
	t.Helper()
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	b := &votebot.Bot{Target: ts.URL, Host: "web-svc.emojivoto:80", Rate: 50, Client: ts.Client()}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := b.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return b
}

func TestRun(t *testing.T) {
	f := &fakeWeb{votes: map[string]int{}}
	b := run(t, f)

	sent, failed := b.Stats()
	f.mu.Lock()
	defer f.mu.Unlock()
	// 50/s for 300ms is ~15 votes; ask for far fewer so a slow CI machine
	// still passes.
	if f.lists < 3 {
		t.Errorf("server saw %d list requests, want several", f.lists)
	}
	if f.votes[":joy:"]+f.votes[":tada:"] < 3 || len(f.votes) > 2 {
		t.Errorf("server saw votes %v, want several for :joy: and :tada: only", f.votes)
	}
	if len(f.badHosts) > 0 {
		t.Errorf("requests with wrong Host: %q", f.badHosts)
	}
	if sent < 6 || failed != 0 {
		t.Errorf("Stats() = %d sent, %d failed; want several sent, none failed", sent, failed)
	}
}

func TestRunKeepsGoingOnErrors(t *testing.T) {
	f := &fakeWeb{votes: map[string]int{}, failVote: true}
	b := run(t, f)

	sent, failed := b.Stats()
	if failed < 3 || sent < 2*failed {
		t.Errorf("Stats() = %d sent, %d failed; want every vote failed and lists fine", sent, failed)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, b := range []*votebot.Bot{
		{Target: "http://127.0.0.1:1", Rate: 0},
		{Target: "127.0.0.1:1", Rate: 1},
		{Target: "", Rate: 1},
	} {
		if err := b.Run(context.Background()); err == nil {
			t.Errorf("Run with Target %q Rate %v succeeded", b.Target, b.Rate)
		}
	}
}
