package discover

import (
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse: the destinations file is written by hand (or by a tool) and
// reloaded while the proxy runs, so no content may crash it. What Parse
// accepts is a valid set (NewStatic takes it) that survives a round trip
// through YAML; what it refuses has an error beginning with the file's
// name.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"destinations: []\n",
		"destinations:\n- authority: web:80\n  endpoints:\n  - addr: 127.0.0.1:8080\n    weight: 2\n    protocol: http2\n    labels: {zone: a}\n    identity: spiffe://cluster.local/ns/a/sa/web\n",
		"destinations:\n- authority: Web\n  addresses: [10.0.0.1:80]\n  endpoints: [{addr: \"[::1]:80\"}]\n",
		"",
		"# only a comment\n",
		"destinations: []\n---\ndestinations: []\n",
		"destinations:\n- authority: web:80\n  endpoints:\n  - addr: nope\n",
		"destinations:\n- authority: web:80\n  endpoint: []\n",
		"destinations: {}\n",
		"- a\n- b\n",
		"destinations:\n- &a {authority: web:80, endpoints: []}\n- *a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dests, err := Parse("dst.yaml", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "dst.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if _, err := NewStatic(dests); err != nil {
			t.Fatalf("accepted a set NewStatic refuses: %v", err)
		}
		out, err := yaml.Marshal(file{Destinations: append([]Destination{}, dests...)})
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("the accepted set, written back, is refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normal(again), normal(dests)) {
			t.Fatalf("round trip changed the set:\n%#v\n%#v", dests, again)
		}
	})
}

// normal makes nil and empty slices and maps equal for comparison.
func normal(ds []Destination) []Destination {
	out := []Destination{}
	for _, d := range ds {
		n := Destination{Authority: d.Authority, Addresses: append([]string{}, d.Addresses...), Endpoints: []Endpoint{}}
		for _, e := range d.Endpoints {
			if len(e.Labels) == 0 {
				e.Labels = nil
			}
			n.Endpoints = append(n.Endpoints, e)
		}
		out = append(out, n)
	}
	return out
}

// FuzzCanonicalAuthority: an authority comes from a request's Host or
// :authority header, or the dst-override header: untrusted. The canonical
// form is host:port with a lower-case host and a port within 1-65535, and
// canonicalising it again changes nothing; a refusal names the authority.
func FuzzCanonicalAuthority(f *testing.F) {
	for _, s := range []string{"web", "Web:80", "web.shop.svc.cluster.local.:8080", "[::1]", "[::1]:80", "::1", "10.0.0.1:0",
		"web:65536", ":80", "", "[]:80", "web:-1", "web:+80", "[fe80::1%eth0]:80", "web:080"} {
		f.Add(s, 80)
	}
	f.Fuzz(func(t *testing.T, a string, def int) {
		got, err := CanonicalAuthority(a, def)
		if err != nil {
			if a != "" && !strings.Contains(err.Error(), strconv.Quote(a)) {
				t.Fatalf("CanonicalAuthority(%q) error does not name it: %v", a, err)
			}
			return
		}
		host, port, err := net.SplitHostPort(got)
		if err != nil {
			t.Fatalf("CanonicalAuthority(%q) = %q, not host:port: %v", a, got, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("CanonicalAuthority(%q) = %q: port out of range", a, got)
		}
		if host == "" || host != strings.ToLower(host) {
			t.Fatalf("CanonicalAuthority(%q) = %q: host empty or not lower case", a, got)
		}
		if again, err := CanonicalAuthority(got, def); err != nil || again != got {
			t.Fatalf("CanonicalAuthority(%q) = %q, %v; want it unchanged", got, again, err)
		}
	})
}
