package discover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Destination is one authority in static configuration.
type Destination struct {
	Authority string     `yaml:"authority"`           // host:port the clients use
	Addresses []string   `yaml:"addresses,omitempty"` // virtual addresses (a ClusterIP:port) that also mean this authority
	Endpoints []Endpoint `yaml:"endpoints"`
}

type file struct {
	Destinations []Destination `yaml:"destinations"`
}

// Static is a Resolver over a fixed set of destinations that can be replaced
// as a whole (a file reload). Watches see every replacement.
type Static struct {
	mu      sync.Mutex
	byAuth  map[string][]Endpoint
	byAddr  map[netip.AddrPort]string
	watches map[string]map[*staticWatch]struct{}
}

// NewStatic validates dests and returns a resolver serving them.
func NewStatic(dests []Destination) (*Static, error) {
	s := &Static{watches: map[string]map[*staticWatch]struct{}{}}
	if err := s.Set(dests); err != nil {
		return nil, err
	}
	return s, nil
}

// Set replaces every destination. An invalid set is rejected as a whole and
// the previous one keeps serving.
func (s *Static) Set(dests []Destination) error {
	byAuth := map[string][]Endpoint{}
	byAddr := map[netip.AddrPort]string{}
	for i, d := range dests {
		auth, err := CanonicalAuthority(d.Authority, 80)
		if err != nil {
			return fmt.Errorf("destinations[%d].authority: %w", i, err)
		}
		if _, dup := byAuth[auth]; dup {
			return fmt.Errorf("destinations[%d].authority: %q is listed twice", i, auth)
		}
		eps := make([]Endpoint, 0, len(d.Endpoints))
		for j, ep := range d.Endpoints {
			if _, _, err := net.SplitHostPort(ep.Addr); err != nil {
				return fmt.Errorf("destinations[%d] (%s).endpoints[%d].addr: %q is not host:port", i, auth, j, ep.Addr)
			}
			switch ep.Protocol {
			case HintNone, HintH2, HintOpaque:
			default:
				return fmt.Errorf("destinations[%d] (%s).endpoints[%d].protocol: %q is not allowed (use h2, opaque or leave it empty)", i, auth, j, ep.Protocol)
			}
			eps = append(eps, ep)
		}
		byAuth[auth] = eps
		for j, a := range d.Addresses {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				return fmt.Errorf("destinations[%d] (%s).addresses[%d]: %q is not ip:port", i, auth, j, a)
			}
			byAddr[ap] = auth
		}
	}
	s.mu.Lock()
	s.byAuth, s.byAddr = byAuth, byAddr
	var notify []func()
	for auth, ws := range s.watches {
		eps := byAuth[auth] // a removed authority reads as no endpoints
		for w := range ws {
			notify = append(notify, func() { w.push(eps) })
		}
	}
	s.mu.Unlock()
	for _, f := range notify {
		f()
	}
	return nil
}

// Resolve implements Resolver.
func (s *Static) Resolve(ctx context.Context, authority string) (Watch, error) {
	auth, err := CanonicalAuthority(authority, 80)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	eps, ok := s.byAuth[auth]
	if !ok {
		return nil, ErrNotFound
	}
	w := &staticWatch{s: s, auth: auth, ch: make(chan []Endpoint, 1)}
	w.ch <- eps
	if s.watches[auth] == nil {
		s.watches[auth] = map[*staticWatch]struct{}{}
	}
	s.watches[auth][w] = struct{}{}
	return w, nil
}

// LookupAddr implements Resolver.
func (s *Static) LookupAddr(addr netip.AddrPort) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byAddr[netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())]
	return a, ok
}

type staticWatch struct {
	s      *Static
	auth   string
	mu     sync.Mutex
	ch     chan []Endpoint
	closed bool
}

func (w *staticWatch) Updates() <-chan []Endpoint { return w.ch }

// push replaces any undelivered set with the newest: consumers only need the latest.
func (w *staticWatch) push(eps []Endpoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	select {
	case <-w.ch:
	default:
	}
	w.ch <- eps
}

func (w *staticWatch) Close() {
	w.s.mu.Lock()
	delete(w.s.watches[w.auth], w)
	w.s.mu.Unlock()
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.mu.Unlock()
}

// CanonicalAuthority lower-cases host:port and adds defPort when the port is
// missing, so "Web:80", "web" and "web:80" are one destination.
func CanonicalAuthority(a string, defPort int) (string, error) {
	if a == "" {
		return "", errors.New("authority is empty")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		host, port = a, strconv.Itoa(defPort)
		if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
			return "", fmt.Errorf("authority %q: an IPv6 address needs brackets", a)
		}
	}
	if host == "" {
		return "", fmt.Errorf("authority %q has no host", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("authority %q: port must be 1-65535", a)
	}
	return net.JoinHostPort(strings.ToLower(strings.TrimSuffix(host, ".")), port), nil
}

// ParseFile reads a destinations YAML document. Errors name the file, the
// line and the field.
func ParseFile(path string) ([]Destination, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := NewStatic(f.Destinations); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f.Destinations, nil
}

// ParseFlag parses the flag form AUTHORITY=ADDR[,ADDR...].
func ParseFlag(v string) (Destination, error) {
	auth, addrs, ok := strings.Cut(v, "=")
	if !ok || auth == "" || addrs == "" {
		return Destination{}, fmt.Errorf("--dst %q: want AUTHORITY=ADDR[,ADDR...]", v)
	}
	d := Destination{Authority: auth}
	for _, a := range strings.Split(addrs, ",") {
		d.Endpoints = append(d.Endpoints, Endpoint{Addr: strings.TrimSpace(a)})
	}
	if _, err := NewStatic([]Destination{d}); err != nil {
		return Destination{}, fmt.Errorf("--dst %q: %w", v, err)
	}
	return d, nil
}

// WatchFile re-reads path whenever it changes until ctx ends. extra (flag
// destinations) are appended to the file's. A bad file is logged and
// rejected; the last good configuration keeps serving.
func (s *Static) WatchFile(ctx context.Context, path string, extra []Destination, every time.Duration, log *slog.Logger) {
	var last time.Time
	if fi, err := os.Stat(path); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || fi.ModTime().Equal(last) {
			continue
		}
		last = fi.ModTime()
		dests, err := ParseFile(path)
		if err == nil {
			err = s.Set(append(dests, extra...))
		}
		if err != nil {
			log.Error("destinations rejected; the previous ones keep serving", "err", err)
			continue
		}
		log.Info("destinations reloaded", "file", path, "count", len(dests)+len(extra))
	}
}
