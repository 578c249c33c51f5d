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
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meridian-mesh/meridian/internal/filewatch"
	"github.com/meridian-mesh/meridian/internal/latest"
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
	setMu   sync.Mutex // serialises Set
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

// Limits on static configuration, so that a runaway file (generated, or a
// wrong one) is refused with a clear error rather than taking the proxy's
// memory: parsing YAML costs several times the file's size.
const (
	MaxFileSize     = 4 << 20 // bytes of a destinations file
	MaxDestinations = 10000   // authorities in one set
	MaxEndpoints    = 100000  // endpoints in one set, all authorities together
)

// Set replaces every destination. An invalid set is rejected as a whole and
// the previous one keeps serving; the error names the offending field.
func (s *Static) Set(dests []Destination) error {
	if len(dests) > MaxDestinations {
		return fmt.Errorf("%d destinations, more than the %d allowed", len(dests), MaxDestinations)
	}
	total := 0
	for _, d := range dests {
		total += len(d.Endpoints)
	}
	if total > MaxEndpoints {
		return fmt.Errorf("%d endpoints in all, more than the %d allowed", total, MaxEndpoints)
	}
	byAuth := map[string][]Endpoint{}
	byAddr := map[netip.AddrPort]string{}
	for i, d := range dests {
		auth, err := CanonicalAuthority(d.Authority, 80)
		if err != nil {
			return &FieldError{Dest: i, Field: "authority", Err: err}
		}
		if _, dup := byAuth[auth]; dup {
			return &FieldError{Dest: i, Field: "authority", Err: fmt.Errorf("%q is listed twice", auth)}
		}
		eps := make([]Endpoint, 0, len(d.Endpoints))
		for j, ep := range d.Endpoints {
			if err := checkHostPort(ep.Addr); err != nil {
				return &FieldError{Dest: i, Authority: auth, List: "endpoints", Item: j, Field: "addr", Err: err}
			}
			switch ep.Protocol {
			case HintNone, HintH2, HintOpaque:
			default:
				return &FieldError{Dest: i, Authority: auth, List: "endpoints", Item: j, Field: "protocol",
					Err: fmt.Errorf("%q is not allowed (use h2, opaque or leave it empty)", ep.Protocol)}
			}
			eps = append(eps, ep)
		}
		byAuth[auth] = eps
		for j, a := range d.Addresses {
			ap, err := netip.ParseAddrPort(a)
			if err != nil || ap.Port() == 0 {
				return &FieldError{Dest: i, Authority: auth, List: "addresses", Item: j, Err: fmt.Errorf("%q is not ip:port", a)}
			}
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) // as LookupAddr looks it up
			if other, dup := byAddr[ap]; dup {
				return &FieldError{Dest: i, Authority: auth, List: "addresses", Item: j,
					Err: fmt.Errorf("%s already belongs to %s", ap, other)}
			}
			byAddr[ap] = auth
		}
	}
	// Sets are applied one at a time, notifications included, so that
	// every watch ends on the set the resolver serves.
	s.setMu.Lock()
	defer s.setMu.Unlock()
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

// FieldError is a destination set rejected for one field:
// destinations[Dest].Field, or destinations[Dest].List[Item].Field.
type FieldError struct {
	Dest      int
	Authority string // canonical, once known
	List      string // "endpoints" or "addresses"; empty for the destination's own fields
	Item      int
	Field     string // empty for an item that is a plain value (an address)
	Err       error
}

func (e *FieldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "destinations[%d]", e.Dest)
	if e.Authority != "" {
		fmt.Fprintf(&b, " (%s)", e.Authority)
	}
	if e.List != "" {
		fmt.Fprintf(&b, ".%s[%d]", e.List, e.Item)
	}
	if e.Field != "" {
		b.WriteString("." + e.Field)
	}
	return b.String() + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// line finds the field in a parsed document: its line, else its item's or
// destination's line, else 0.
func (e *FieldError) line(doc *yaml.Node) int {
	n := doc
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	n = yamlItem(yamlValue(n, "destinations"), e.Dest)
	if e.List != "" {
		n = yamlItem(yamlValue(n, e.List), e.Item)
	}
	if v := yamlValue(n, e.Field); v != nil {
		n = v
	}
	if n == nil {
		return 0
	}
	return n.Line
}

func yamlValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode || key == "" {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func yamlItem(n *yaml.Node, i int) *yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
		return nil
	}
	return n.Content[i]
}

// checkHostPort accepts host:port with a host and a port in 1-65535.
func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err == nil && host != "" {
		if n, perr := strconv.Atoi(port); perr == nil && n >= 1 && n <= 65535 {
			return nil
		}
	}
	return fmt.Errorf("%q is not host:port", a)
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
	w := &staticWatch{s: s, auth: auth, ch: latest.New[[]Endpoint]()}
	w.ch.Set(eps)
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
	s    *Static
	auth string
	ch   *latest.Chan[[]Endpoint] // consumers only need the newest set
}

func (w *staticWatch) Updates() <-chan []Endpoint { return w.ch.Updates() }

func (w *staticWatch) push(eps []Endpoint) { w.ch.Set(eps) }

func (w *staticWatch) Close() {
	w.s.mu.Lock()
	delete(w.s.watches[w.auth], w)
	w.s.mu.Unlock()
	w.ch.Close()
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
		switch {
		case strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]"):
			host = a[1 : len(a)-1] // a bracketed IPv6 address without a port
		case strings.Count(a, ":") > 1:
			return "", fmt.Errorf("authority %q: an IPv6 address needs brackets", a)
		}
	}
	// Lower-cased, without the root's dot, before the checks: "." has no host.
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" {
		return "", fmt.Errorf("authority %q has no host", a)
	}
	if strings.ContainsAny(host, "[]") {
		return "", fmt.Errorf("authority %q: brackets go only around a whole IPv6 address", a)
	}
	if strings.HasSuffix(host, ".") {
		return "", fmt.Errorf("authority %q: empty DNS label", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("authority %q: port must be 1-65535", a)
	}
	return net.JoinHostPort(host, port), nil
}

// ParseFile reads a destinations file: one YAML document with a
// destinations list (`destinations: []` for none). An empty file, one of
// only comments, one without the list and one with a second document are
// refused. Errors name the file, the line and the field.
func ParseFile(path string) ([]Destination, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Read at most one byte past the limit: the file may grow meanwhile.
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > MaxFileSize {
		size := "more than " + strconv.Itoa(MaxFileSize)
		if fi, err := f.Stat(); err == nil {
			size = strconv.FormatInt(fi.Size(), 10)
		}
		return nil, fmt.Errorf("%s: %s bytes, more than the %d (%d MiB) a destinations file may have", path, size, MaxFileSize, MaxFileSize>>20)
	}
	return Parse(path, b)
}

// Parse reads the content b of a destinations file (see ParseFile); errors
// begin with name.
func Parse(name string, b []byte) ([]Destination, error) {
	// The file's shape first: one document, with a destinations list. An
	// empty file would otherwise read as no destinations (every request a
	// 503), and a second document would be ignored.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := dec.Decode(&root); errors.Is(err, io.EOF) || err == nil && emptyDoc(&root) {
		return nil, fmt.Errorf("%s: no destinations: the file is empty or only comments; want a document with a destinations list", name)
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err) // yaml's errors name the line
	}
	var second yaml.Node
	if err := dec.Decode(&second); err == nil && !emptyDoc(&second) {
		return nil, fmt.Errorf("%s:%d: a second YAML document: a destinations file holds one document (list every destination under the first one's destinations)", name, second.Content[0].Line)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: a second YAML document: %w", name, err)
	}
	// One parse: the struct is decoded from the tree the shape was read
	// from. A second decoder with KnownFields parsed the file again while
	// this tree was live: a 10,000-destination file (1.2 MB) made a 24 MB
	// tree, and the two at once doubled the start's memory high-water mark.
	if err := knownFields(root.Content[0], reflect.TypeFor[file](), ""); err != nil {
		return nil, fmt.Errorf("%s:%w", name, err)
	}
	var doc file
	if err := root.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err) // yaml's errors name the line
	}
	top := root.Content[0]
	if list := yamlValue(top, "destinations"); top.Kind == yaml.MappingNode && (list == nil || list.Tag == "!!null") {
		return nil, fmt.Errorf("%s:%d: destinations: required: the list of destinations (destinations: [] for none)", name, top.Line)
	}
	if _, err := NewStatic(doc.Destinations); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			if line := fe.line(&root); line > 0 {
				return nil, fmt.Errorf("%s:%d: %w", name, line, err)
			}
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return doc.Destinations, nil
}

// knownFields refuses a key that t (a struct of yaml-tagged fields, or a
// slice of them) has no field for, naming its line, its place and the
// keys allowed there: yaml.v3's Node.Decode has no KnownFields. Maps are
// not walked: the file's only map (labels) takes any key.
func knownFields(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Pointer:
		return knownFields(n, t.Elem(), path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil // Decode names the wrong kind
		}
		for i, c := range n.Content {
			if err := knownFields(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		fields := map[string]reflect.Type{}
		var names []string
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" { // merged mappings: the same fields
				if err := knownFields(v, t, path); err != nil {
					return err
				}
				if v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						if err := knownFields(m, t, path); err != nil {
							return err
						}
					}
				}
				continue
			}
			ft, ok := fields[k.Value]
			at := k.Value
			if path != "" {
				at = path + "." + k.Value
			}
			if !ok {
				return fmt.Errorf("%d: %s: unknown field; allowed here: %s", k.Line, at, strings.Join(names, ", "))
			}
			if err := knownFields(v, ft, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// emptyDoc reports whether a document has no content (only comments, a
// bare "---", or a null).
func emptyDoc(n *yaml.Node) bool {
	return n.Kind == 0 || len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null"
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
	last, _ := filewatch.Stat(path)
	look := func() (filewatch.Stamp, bool) { return filewatch.Stat(path) }
	filewatch.Poll(ctx, every, last, look, func(st filewatch.Stamp) filewatch.Stamp {
		dests, err := ParseFile(path)
		if err == nil {
			err = s.Set(append(dests, extra...))
		}
		if err != nil {
			log.Error("destinations rejected; the previous ones keep serving", "err", err)
			return st
		}
		log.Info("destinations reloaded", "file", path, "count", len(dests)+len(extra))
		return st
	})
}
