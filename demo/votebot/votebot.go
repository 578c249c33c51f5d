// Package votebot generates steady background traffic against the demo's
// web front end, so that the mesh's dashboards have something to show
// without anyone clicking.
package votebot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxInFlight bounds concurrent votes. Ticks that find it reached are
// skipped, so a slow or broken mesh sees steady load rather than a growing
// pile of goroutines or a burst once it recovers.
const maxInFlight = 64

// Bot votes for random emojis at a fixed rate. Set the fields, then call
// Run; a Bot must not be copied after first use.
type Bot struct {
	// Target is the base URL requests are sent to, e.g.
	// http://127.0.0.1:4140 (a sidecar's outbound listener).
	Target string
	// Host, if set, is sent as the Host header (the authority a proxy routes
	// by), e.g. web-svc.emojivoto:80; otherwise Target's host is sent.
	Host string
	// Rate is votes per second. Each vote is two requests: GET /api/list,
	// then POST /api/vote for a random emoji from it.
	Rate float64
	// Client sends the requests; nil means a client with a 10s timeout.
	Client *http.Client

	sent, failed atomic.Int64
}

// Stats returns how many HTTP requests have been sent and how many of them
// failed (transport error, non-2xx status or bad body). Requests cut short
// because Run's context ended are not failures. Safe to call while Run runs.
func (b *Bot) Stats() (sent, failed int64) {
	return b.sent.Load(), b.failed.Load()
}

// Run votes until ctx is done, then waits for in-flight votes and returns
// nil. Failed requests are counted, not returned: the point is to keep
// traffic flowing through whatever the mesh is doing. Run only returns an
// error for an unusable configuration.
func (b *Bot) Run(ctx context.Context) error {
	if b.Rate <= 0 {
		return fmt.Errorf("votebot: rate must be positive, got %v", b.Rate)
	}
	u, err := url.Parse(b.Target)
	if err != nil {
		return fmt.Errorf("votebot: target: %w", err)
	}
	if u.Scheme == "" || u.Host == "" {
		return errors.New("votebot: target must be an absolute URL like http://127.0.0.1:4140")
	}
	base := strings.TrimSuffix(b.Target, "/")
	client := b.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}

	// NewTicker panics on a zero interval, which an absurd rate would give.
	ticker := time.NewTicker(max(time.Duration(float64(time.Second)/b.Rate), time.Microsecond))
	defer ticker.Stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxInFlight)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue
		}
		// One goroutine per vote keeps the rate steady when responses are
		// slow, rather than letting latency throttle the load.
		wg.Go(func() {
			defer func() { <-slots }()
			b.vote(ctx, client, base)
		})
	}
}

func (b *Bot) vote(ctx context.Context, client *http.Client, base string) {
	var list []struct {
		Shortcode string `json:"shortcode"`
	}
	if err := b.do(ctx, client, http.MethodGet, base+"/api/list", &list); err != nil || len(list) == 0 {
		return
	}
	choice := list[rand.IntN(len(list))].Shortcode
	_ = b.do(ctx, client, http.MethodPost, base+"/api/vote?choice="+url.QueryEscape(choice), nil)
}

// do sends one request, counts it and decodes a JSON body into out if out
// is non-nil.
func (b *Bot) do(ctx context.Context, client *http.Client, method, target string, out any) (err error) {
	defer func() {
		if err != nil && ctx.Err() == nil {
			b.failed.Add(1)
		}
	}()
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return err
	}
	if b.Host != "" {
		req.Host = b.Host
	}
	b.sent.Add(1)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Drain so the connection can be reused, whatever happens below.
	defer io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, target, resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}
