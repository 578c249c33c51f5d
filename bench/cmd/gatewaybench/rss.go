package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/bench/sut"
)

// measureRSS starts the gateway in file mode with -rss-routes routes (an
// HTTPRoute each: its own hostname, prefix /, its own Service, whose
// endpoints are the three backends), sends one request to each of
// -rss-sample of them, and reads the process's RSS: the issue's "RSS with
// 10,000 routes stays under 100 MB", held by the high-water mark too (the
// start's parse of the files included).
func measureRSS(ctx context.Context, bin, cpus, logDir string, backends []string) error {
	n := *rssRoutes
	dir := filepath.Join(logDir, "rss")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	port, err := sut.FreePort()
	if err != nil {
		return err
	}
	adminPort, err := sut.FreePort()
	if err != nil {
		return err
	}
	hosts := make([]*gatewaypb.Host, n)
	var dests strings.Builder
	dests.WriteString("destinations:\n")
	for i := range hosts {
		svc := fmt.Sprintf("svc-%d.bench:80", i)
		hosts[i] = &gatewaypb.Host{Hostname: fmt.Sprintf("app-%d.example.com", i), Rules: []*gatewaypb.Rule{{
			Route:    &gatewaypb.RouteRef{Kind: "HTTPRoute", Namespace: "bench", Name: fmt.Sprintf("route-%d", i), Rule: "0"},
			Match:    &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/"}},
			Backends: []*gatewaypb.Backend{{Authority: svc, Weight: 1}},
		}}}
		fmt.Fprintf(&dests, "- authority: %s\n  endpoints:\n", svc)
		for _, b := range backends {
			fmt.Fprintf(&dests, "  - addr: %s\n", b)
		}
	}
	snap := &gatewaypb.Snapshot{Version: "rss", Gateway: "bench/gw", Ports: []*gatewaypb.Port{{
		Port: uint32(port), Protocol: gatewaypb.Port_HTTP,
		Listeners: []*gatewaypb.Listener{{Name: "http", Mode: gatewaypb.Listener_HTTP, Hosts: hosts}},
	}}}
	b, err := protojson.Marshal(snap)
	if err != nil {
		return err
	}
	snapFile, destFile := filepath.Join(dir, "snapshot.json"), filepath.Join(dir, "destinations.yaml")
	if err := os.WriteFile(snapFile, b, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(destFile, []byte(dests.String()), 0o600); err != nil {
		return err
	}
	admin := sut.Addr(adminPort)
	t0 := time.Now()
	p, err := sut.StartMeridian("meridian-rss", cpus, dir, bin, admin, []string{"gateway",
		"--gateway-config", snapFile, "--destinations", destFile, "--bind-host", "127.0.0.1", "--admin-addr", admin, "--drain-timeout", "5s",
		// Debug: its log says when it returned its heap to the OS.
		"--log-level", "debug"})
	if err != nil {
		return err
	}
	defer p.Stop(10 * time.Second)
	ready := time.Since(t0)
	idle, _ := p.Status()

	c := &http.Client{Timeout: 5 * time.Second}
	sample := max(1, min(*rssSample, n))
	failed := 0
	for k := range sample {
		i := k * n / sample
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/x", sut.Addr(port)), nil)
		req.Host = fmt.Sprintf("app-%d.example.com", i)
		resp, err := c.Do(req)
		if err != nil {
			failed++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed++
		}
	}
	after, err := p.Status()
	if err != nil {
		return err
	}
	// What it holds once settled (the gateway returns a grown heap to the
	// OS after 5 s of quiet, --release-memory-after).
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(*rssSettle):
	}
	st, err := p.Status()
	if err != nil {
		return err
	}
	logged, _ := os.ReadFile(p.Log)
	releases := strings.Count(string(logged), "heap returned to the OS")
	fmt.Printf("\n## Edge gateway: %d routes (file mode)\n\n", n)
	fmt.Printf("snapshot %.1f MB protojson; ready %v after start; RSS %s MB at ready, %s MB right after %d requests on as many routes (%d failed), %s MB %v later; peak %s MB\n",
		float64(len(b))/(1<<20), ready.Round(time.Millisecond), sut.MB(idle.RSS), sut.MB(after.RSS), sample, failed, sut.MB(st.RSS), *rssSettle, sut.MB(st.PeakRSS))
	fmt.Printf("RESULT gateway-rss routes=%d ready_ms=%d rss_at_ready_mb=%s rss_after_requests_mb=%s rss_mb=%s peak_rss_mb=%s sampled=%d failed=%d heap_releases=%d target_met=%t\n",
		n, ready.Milliseconds(), sut.MB(idle.RSS), sut.MB(after.RSS), sut.MB(st.RSS), sut.MB(st.PeakRSS), sample, failed, releases, failed == 0 && st.RSS < 100<<20 && st.PeakRSS < 100<<20)
	if failed > 0 {
		log.Printf("%d of %d sampled routes did not answer 200\n%s", failed, sample, p.LogTail(20))
	}
	return nil
}
