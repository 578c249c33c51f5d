package compile_test

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

func TestResolve(t *testing.T) {
	f := newFake().
		addService(svc("emojivoto", "web-svc", "10.96.0.10", port("http", 80, intstr.FromInt32(8080)), port("grpc", 9090, intstr.FromString("grpc")))).
		addService(svc("emojivoto", "voting-svc", "10.96.0.11", port("grpc", 8080, intstr.FromInt32(8080)))).
		addService(svc("other", "voting-svc", "10.96.0.12", port("grpc", 8080, intstr.FromInt32(8080)))).
		addService(svc("other", "lonely", "fd00::1", port("", 80, intstr.FromInt32(80))))
	ext := svc("emojivoto", "ext", "")
	ext.Spec.Type = corev1.ServiceTypeExternalName
	f.addService(ext)
	f.workloads[store.Key{Namespace: "local", Name: "ghost"}] = []store.Workload{{Name: "g-1", Namespace: "local", Service: "ghost", Address: "127.0.0.1:4143"}}

	web := store.Key{Namespace: "emojivoto", Name: "web-svc"}
	local := compile.Options{Local: true, DefaultNamespace: "emojivoto"}
	localNoDefault := compile.Options{Local: true}
	custom := compile.Options{ClusterDomain: "example.org"}

	for _, tc := range []struct {
		name      string
		r         store.Reader
		authority string
		o         compile.Options
		wantKey   store.Key
		wantPort  uint32
		wantAuth  string
		wantErr   bool
		noSvcPort bool
	}{
		{name: "fqdn", authority: "web-svc.emojivoto.svc.cluster.local:80", wantKey: web, wantPort: 80, wantAuth: "web-svc.emojivoto.svc.cluster.local:80"},
		{name: "fqdn trailing dot, upper case", authority: "Web-Svc.Emojivoto.svc.cluster.local.:9090", wantKey: web, wantPort: 9090, wantAuth: "web-svc.emojivoto.svc.cluster.local:9090"},
		{name: "fqdn default port", authority: "web-svc.emojivoto.svc.cluster.local", wantKey: web, wantPort: 80},
		{name: "svc.ns.svc", authority: "web-svc.emojivoto.svc:80", wantKey: web, wantPort: 80},
		{name: "svc.ns", authority: "web-svc.emojivoto:9090", wantKey: web, wantPort: 9090},
		{name: "svc.ns default port", authority: "web-svc.emojivoto", wantKey: web, wantPort: 80, wantAuth: "web-svc.emojivoto:80"},
		{name: "cluster IP", authority: "10.96.0.10:80", wantKey: web, wantPort: 80},
		{name: "cluster IP v6", authority: "[fd00::1]:80", wantKey: store.Key{Namespace: "other", Name: "lonely"}, wantPort: 80, wantAuth: "[fd00::1]:80"},
		{name: "cluster IP v6 no port", authority: "fd00::1", wantKey: store.Key{Namespace: "other", Name: "lonely"}, wantPort: 80},
		{name: "unknown cluster IP", authority: "10.96.9.9:80", wantErr: true},
		{name: "unknown port is still the service", authority: "web-svc.emojivoto:81", wantKey: web, wantPort: 81, noSvcPort: true},
		{name: "unknown service", authority: "nope.emojivoto:80", wantErr: true, wantKey: store.Key{Namespace: "emojivoto", Name: "nope"}},
		{name: "other cluster domain", authority: "web-svc.emojivoto.svc.example.org:80", wantErr: true},
		{name: "custom cluster domain", o: custom, authority: "web-svc.emojivoto.svc.example.org:80", wantKey: web, wantPort: 80},
		{name: "pod dns name is not a service", authority: "pod-0.web-svc.emojivoto.svc.cluster.local:80", wantErr: true},
		{name: "external name", authority: "ext.emojivoto:80", wantErr: true, wantKey: store.Key{Namespace: "emojivoto", Name: "ext"}},
		{name: "bad port", authority: "web-svc.emojivoto:0", wantErr: true},
		{name: "bad port 2", authority: "web-svc.emojivoto:99999", wantErr: true},
		{name: "empty", authority: "", wantErr: true},
		{name: "empty label", authority: "web-svc..emojivoto:80", wantErr: true},
		{name: "short name in kube mode", authority: "web-svc:80", wantErr: true},
		{name: "short name, default namespace", o: local, authority: "web-svc:80", wantKey: web, wantPort: 80},
		{name: "short name, default namespace preferred", o: local, r: indexedReader{f}, authority: "voting-svc:8080", wantKey: store.Key{Namespace: "emojivoto", Name: "voting-svc"}, wantPort: 8080},
		{name: "short name, unique", o: localNoDefault, r: indexedReader{f}, authority: "lonely", wantKey: store.Key{Namespace: "other", Name: "lonely"}, wantPort: 80},
		{name: "short name, unique outside default ns", o: local, r: indexedReader{f}, authority: "lonely", wantKey: store.Key{Namespace: "other", Name: "lonely"}, wantPort: 80},
		{name: "short name, ambiguous", o: localNoDefault, r: indexedReader{f}, authority: "voting-svc:8080", wantErr: true},
		{name: "short name, no index, no default", o: localNoDefault, authority: "lonely", wantErr: true},
		{name: "local workload without service", o: local, authority: "ghost.local:8080", wantKey: store.Key{Namespace: "local", Name: "ghost"}, wantPort: 8080, noSvcPort: true},
		{name: "kube mode ignores workload-only", authority: "ghost.local:8080", wantErr: true, wantKey: store.Key{Namespace: "local", Name: "ghost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			if r == nil {
				r = f
			}
			got, err := compile.Resolve(r, tc.authority, tc.o)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Resolve(%q) = %+v, want an error", tc.authority, got)
				}
				if !errors.Is(err, compile.ErrNotFound) {
					t.Fatalf("error %v is not ErrNotFound", err)
				}
				if tc.wantKey != (store.Key{}) && got.Service != tc.wantKey {
					t.Fatalf("service key on error = %v, want %v", got.Service, tc.wantKey)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tc.authority, err)
			}
			if got.Service != tc.wantKey || got.Port != tc.wantPort {
				t.Fatalf("Resolve(%q) = %v port %d, want %v port %d", tc.authority, got.Service, got.Port, tc.wantKey, tc.wantPort)
			}
			if tc.wantAuth != "" && got.Authority != tc.wantAuth {
				t.Fatalf("authority = %q, want %q", got.Authority, tc.wantAuth)
			}
			if (got.ServicePort == nil) != tc.noSvcPort {
				t.Fatalf("service port = %v, want nil: %v", got.ServicePort, tc.noSvcPort)
			}
		})
	}
}

func TestWatchKey(t *testing.T) {
	f := newFake().addService(svc("a", "web", "10.0.0.1", port("http", 80, intstr.FromInt32(80))))
	for _, tc := range []struct {
		authority string
		o         compile.Options
		want      store.Key
		ok        bool
	}{
		{authority: "web.a:80", want: store.Key{Namespace: "a", Name: "web"}, ok: true},
		{authority: "later.a.svc.cluster.local:80", want: store.Key{Namespace: "a", Name: "later"}, ok: true},
		{authority: "10.0.0.1:80", want: store.Key{Namespace: "a", Name: "web"}, ok: true},
		{authority: "10.0.0.2:80"},
		{authority: "later:80", o: compile.Options{Local: true, DefaultNamespace: "a"}, want: store.Key{Namespace: "a", Name: "later"}, ok: true},
		{authority: "later:80", o: compile.Options{Local: true}},
		{authority: "example.com:443", want: store.Key{Namespace: "com", Name: "example"}, ok: true},
	} {
		got, ok := compile.WatchKey(f, tc.authority, tc.o)
		if got != tc.want || ok != tc.ok {
			t.Errorf("WatchKey(%q) = %v, %v; want %v, %v", tc.authority, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParsePorts(t *testing.T) {
	p, errs := compile.ParsePorts(" 25, 4000-4010,mysql,bad-range,0,70000-70001,3306")
	if len(errs) != 3 {
		t.Fatalf("errors = %v, want 3", errs)
	}
	for _, tc := range []struct {
		port uint32
		name string
		want bool
	}{
		{25, "", true}, {26, "", false}, {4000, "", true}, {4005, "", true}, {4010, "", true}, {4011, "", false},
		{3306, "", true}, {1234, "mysql", true}, {1234, "http", false},
	} {
		if got := p.Contains(tc.port, tc.name); got != tc.want {
			t.Errorf("Contains(%d, %q) = %v, want %v", tc.port, tc.name, got, tc.want)
		}
	}
	if got := p.String(); got != "25,4000-4010,3306,mysql" {
		t.Errorf("String() = %q", got)
	}
	var zero compile.PortSet
	if !zero.Empty() || zero.Contains(80, "http") {
		t.Error("zero PortSet is not empty")
	}
}

// Found by FuzzParseAuthority: "]" was taken as the short service name "]",
// and "]:80" as the service "]:80"; a name with characters no DNS name has
// is not a service.
func TestParseAuthorityRefusesNonDNSNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string // "" for ErrNotFound
	}{
		{"]", ""},
		{"]:80", ""},
		{"web shop", ""},
		{"web/x:80", ""},
		{"wéb", ""},
		{"web_1.shop", "web_1.shop"},
		{"Web-1", "web-1"},
		{"[::1]:80", "::1"},
	} {
		n, err := compile.ParseAuthority(tc.in, compile.Options{})
		if tc.host == "" {
			if !errors.Is(err, compile.ErrNotFound) {
				t.Errorf("ParseAuthority(%q) = %+v, %v; want ErrNotFound", tc.in, n, err)
			}
			continue
		}
		if err != nil || n.Host != tc.host {
			t.Errorf("ParseAuthority(%q) = %+v, %v; want host %q", tc.in, n, err, tc.host)
		}
	}
}
