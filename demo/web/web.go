// Package web is the demo's front end: an HTML page and a small JSON API
// that turn browser (or votebot) requests into calls on EmojiService and
// VotingService.
package web

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
)

//go:embed index.html
var indexHTML []byte

// Emoji is an emoji as the JSON API shows it.
type Emoji struct {
	Unicode   string `json:"unicode"`
	Shortcode string `json:"shortcode"`
}

// Result is one leaderboard row.
type Result struct {
	Unicode   string `json:"unicode"`
	Shortcode string `json:"shortcode"`
	Votes     int64  `json:"votes"`
}

type handler struct {
	emoji  pb.EmojiServiceClient
	voting pb.VotingServiceClient
}

// New returns the front end's handler. Routes:
//
//	GET  /                       the voting page
//	GET  /api/list               []Emoji
//	POST /api/vote?choice=:joy:  Emoji voted for; 404 if unknown, 500 if the vote fails
//	GET  /api/leaderboard        []Result, most votes first
//	GET  /healthz                200
//
// Errors are JSON objects {"error": "..."}. Each request's context is passed
// to the RPCs, so a client that goes away cancels them.
func New(emoji pb.EmojiServiceClient, voting pb.VotingServiceClient) http.Handler {
	h := &handler{emoji: emoji, voting: voting}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("GET /api/list", h.list)
	mux.HandleFunc("POST /api/vote", h.vote)
	mux.HandleFunc("GET /api/leaderboard", h.leaderboard)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

func (h *handler) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(indexHTML)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	resp, err := h.emoji.ListAll(r.Context(), &pb.ListAllRequest{})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing emojis failed: %s", status.Convert(err).Message())
		return
	}
	list := make([]Emoji, 0, len(resp.GetList()))
	for _, e := range resp.GetList() {
		list = append(list, Emoji{Unicode: e.GetUnicode(), Shortcode: e.GetShortcode()})
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *handler) vote(w http.ResponseWriter, r *http.Request) {
	choice := r.URL.Query().Get("choice")
	if choice == "" {
		writeError(w, http.StatusBadRequest, "missing choice")
		return
	}
	// Validate first: VotingService counts any shortcode it is given.
	found, err := h.emoji.FindByShortcode(r.Context(), &pb.FindByShortcodeRequest{Shortcode: choice})
	if status.Code(err) == codes.NotFound {
		writeError(w, http.StatusNotFound, "unknown emoji %s", choice)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "looking up %s failed: %s", choice, status.Convert(err).Message())
		return
	}
	if _, err := h.voting.Vote(r.Context(), &pb.VoteRequest{Shortcode: choice}); err != nil {
		writeError(w, http.StatusInternalServerError, "vote for %s failed: %s", choice, status.Convert(err).Message())
		return
	}
	e := found.GetEmoji()
	writeJSON(w, http.StatusOK, Emoji{Unicode: e.GetUnicode(), Shortcode: e.GetShortcode()})
}

func (h *handler) leaderboard(w http.ResponseWriter, r *http.Request) {
	results, err := h.voting.Results(r.Context(), &pb.ResultsRequest{})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "getting results failed: %s", status.Convert(err).Message())
		return
	}
	// One ListAll instead of a FindByShortcode per row.
	all, err := h.emoji.ListAll(r.Context(), &pb.ListAllRequest{})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "listing emojis failed: %s", status.Convert(err).Message())
		return
	}
	unicode := make(map[string]string, len(all.GetList()))
	for _, e := range all.GetList() {
		unicode[e.GetShortcode()] = e.GetUnicode()
	}
	rows := make([]Result, 0, len(results.GetResults()))
	for _, res := range results.GetResults() {
		// A shortcode the catalogue doesn't know keeps its row with an
		// empty unicode rather than hiding votes.
		rows = append(rows, Result{Unicode: unicode[res.GetShortcode()], Shortcode: res.GetShortcode(), Votes: res.GetVotes()})
	}
	writeJSON(w, http.StatusOK, rows)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// An encoding error here means the client went away; nothing to do.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}
