package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/meridian-mesh/meridian/demo/dial"
	"github.com/meridian-mesh/meridian/demo/emoji"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
	"github.com/meridian-mesh/meridian/demo/voting"
	"github.com/meridian-mesh/meridian/demo/web"
)

// serve starts a gRPC server on a loopback port with register's services
// and returns a connection to it.
func serve(t *testing.T, register func(grpc.ServiceRegistrar)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return conn(t, lis.Addr().String())
}

func conn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := dial.GRPC(context.Background(), addr, "test.local")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// app runs the whole app: emoji and voting on their own gRPC servers, web
// in front of them.
func app(t *testing.T) *httptest.Server {
	t.Helper()
	ec := serve(t, func(r grpc.ServiceRegistrar) { emoji.Register(r) })
	vc := serve(t, func(r grpc.ServiceRegistrar) { voting.Register(r) })
	ts := httptest.NewServer(web.New(pb.NewEmojiServiceClient(ec), pb.NewVotingServiceClient(vc)))
	t.Cleanup(ts.Close)
	return ts
}

// call does a request and decodes a JSON body into out, if out isn't nil.
func call(t *testing.T, method, u string, out any) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, u, ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decoding: %v", method, u, err)
		}
	}
	return resp
}

func vote(ts *httptest.Server, choice string) string {
	return ts.URL + "/api/vote?choice=" + url.QueryEscape(choice)
}

func TestEndToEnd(t *testing.T) {
	ts := app(t)

	var list []web.Emoji
	if resp := call(t, "GET", ts.URL+"/api/list", &list); resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %s", resp.Status)
	}
	if len(list) < 40 || !slices.Contains(list, web.Emoji{Unicode: "😂", Shortcode: ":joy:"}) {
		t.Fatalf("list has %d emojis, want ~50 including :joy:", len(list))
	}

	for _, choice := range []string{":joy:", ":tada:", ":joy:"} {
		var got web.Emoji
		if resp := call(t, "POST", vote(ts, choice), &got); resp.StatusCode != http.StatusOK {
			t.Fatalf("vote %s: %s", choice, resp.Status)
		}
		if got.Shortcode != choice || got.Unicode == "" {
			t.Fatalf("vote %s returned %+v", choice, got)
		}
	}

	var board []web.Result
	if resp := call(t, "GET", ts.URL+"/api/leaderboard", &board); resp.StatusCode != http.StatusOK {
		t.Fatalf("leaderboard: %s", resp.Status)
	}
	want := []web.Result{{Unicode: "😂", Shortcode: ":joy:", Votes: 2}, {Unicode: "🎉", Shortcode: ":tada:", Votes: 1}}
	if len(board) != len(want) || board[0] != want[0] || board[1] != want[1] {
		t.Fatalf("leaderboard = %+v, want %+v", board, want)
	}
}

func TestVoteErrors(t *testing.T) {
	ts := app(t)
	for _, tc := range []struct {
		name, method, url string
		code              int
		errContains       string
	}{
		{"unknown emoji", "POST", vote(ts, ":no_such_emoji:"), http.StatusNotFound, ":no_such_emoji:"},
		{"failing emoji", "POST", vote(ts, voting.FailingShortcode), http.StatusInternalServerError, "ERROR"},
		{"missing choice", "POST", ts.URL + "/api/vote", http.StatusBadRequest, "choice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body struct{ Error string }
			resp := call(t, tc.method, tc.url, &body)
			if resp.StatusCode != tc.code || !strings.Contains(body.Error, tc.errContains) {
				t.Fatalf("got %d %q, want %d and an error containing %q", resp.StatusCode, body.Error, tc.code, tc.errContains)
			}
		})
	}

	// Failed votes must not show up on the leaderboard.
	var board []web.Result
	call(t, "GET", ts.URL+"/api/leaderboard", &board)
	if len(board) != 0 {
		t.Fatalf("leaderboard after failed votes = %+v, want empty", board)
	}

	if resp := call(t, "GET", vote(ts, ":joy:"), nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/vote: %s, want 405", resp.Status)
	}
}

func TestBackendDown(t *testing.T) {
	// A port nothing listens on: every RPC fails with Unavailable.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	down := conn(t, addr)
	ts := httptest.NewServer(web.New(pb.NewEmojiServiceClient(down), pb.NewVotingServiceClient(down)))
	defer ts.Close()

	for _, u := range []string{ts.URL + "/api/list", ts.URL + "/api/leaderboard"} {
		var body struct{ Error string }
		if resp := call(t, "GET", u, &body); resp.StatusCode != http.StatusInternalServerError || body.Error == "" {
			t.Errorf("GET %s: %d %q, want 500 with an error", u, resp.StatusCode, body.Error)
		}
	}
}

func TestPageAndHealth(t *testing.T) {
	ts := app(t)

	resp, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`id="emojis"`, `id="leaderboard"`, "api/list", "api/vote"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// Self-contained: the demo must work with no network beyond loopback.
	for _, ext := range []string{"http://", "https://", "//cdn"} {
		if strings.Contains(string(page), ext) {
			t.Errorf("page references external %s", ext)
		}
	}

	if resp := call(t, "GET", ts.URL+"/healthz", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %s", resp.Status)
	}
	if resp := call(t, "GET", ts.URL+"/nope", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /nope: %s, want 404", resp.Status)
	}
}
