package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/bench/sut"
)

// serverName is the name the clients send (Host, SNI) and the run's
// self-signed certificate is for.
const serverName = "gw.bench"

// certs is the run's self-signed certificate, in the files each peer wants.
type certs struct {
	Cert, Key, Combined string // PEM files; Combined is both (HAProxy's crt)
	certPEM, keyPEM     []byte
}

// newCerts makes an ECDSA P-256 certificate for serverName, valid for a
// day: what a gateway usually serves (and the cheapest handshake for all).
func newCerts(dir string) (*certs, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: serverName},
		DNSNames:     []string{serverName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &certs{
		Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), Combined: filepath.Join(dir, "combined.pem"),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
	for path, b := range map[string][]byte{c.Cert: c.certPEM, c.Key: c.keyPEM, c.Combined: append(append([]byte{}, c.certPEM...), c.keyPEM...)} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// peerConf is what every peer is configured with: a plaintext port and a
// TLS port (ALPN h2 and http/1.1), both routing the prefix /api/ to the
// three backends.
type peerConf struct {
	Dir        string
	Plain, TLS string // 127.0.0.1:port
	Backends   []string
	Cert       *certs
}

// running is one started peer.
type running struct {
	kind       string
	proc       *sut.Proc
	plain, tls string
}

// startPeer starts kind (meridian, baseline, nginx, haproxy, caddy, traefik, evloop) pinned to
// cpus with its configuration in logDir/kind.
func startPeer(kind, bin, cpus, logDir string, backends []string, c *certs) (*running, error) {
	dir := filepath.Join(logDir, kind)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ps := make([]int, 3)
	for i := range ps {
		p, err := sut.FreePort()
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	pc := peerConf{Dir: dir, Plain: sut.Addr(ps[0]), TLS: sut.Addr(ps[1]), Backends: backends, Cert: c}
	write := func(name string, t *template.Template) (string, error) {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		return path, t.Execute(f, pc)
	}
	var (
		p   *sut.Proc
		err error
	)
	switch kind {
	case "meridian", "baseline", "loop", "goroutines":
		var snap string
		if snap, err = meridianSnapshot(dir, ps[0], ps[1], c); err != nil {
			return nil, err
		}
		admin := sut.Addr(ps[2])
		args := []string{"gateway",
			"--gateway-config", snap, "--bind-host", "127.0.0.1", "--admin-addr", admin, "--drain-timeout", "5s",
			"--dst", "api.bench:8080=" + strings.Join(backends, ",")}
		switch kind {
		case "loop":
			args = append(args, "--event-loop") // -proxy with its HTTP/1.1 on the event loops
		case "goroutines":
			args = append(args, "--event-loop=false") // -proxy with every connection on goroutines
		}
		p, err = sut.StartMeridian(kind, cpus, logDir, bin, admin, args)
	case "nginx":
		var cfg string
		if cfg, err = write("nginx.conf", nginxGW); err == nil {
			p, err = sut.Start(kind, cpus, logDir, bin, "-p", dir, "-c", cfg)
		}
	case "haproxy":
		var cfg string
		if cfg, err = write("haproxy.cfg", haproxyGW); err == nil {
			p, err = sut.Start(kind, cpus, logDir, bin, "-db", "-f", cfg)
		}
	case "caddy":
		var cfg string
		if cfg, err = write("caddy.json", caddyGW); err == nil {
			// Caddy's storage (and anything it would autosave) stays in dir.
			os.Setenv("XDG_DATA_HOME", dir)
			os.Setenv("XDG_CONFIG_HOME", dir)
			p, err = sut.Start(kind, cpus, logDir, bin, "run", "--config", cfg)
		}
	case "traefik":
		var cfg string
		if _, err = write("dynamic.yaml", traefikDynamic); err == nil {
			if cfg, err = write("traefik.yaml", traefikStatic); err == nil {
				p, err = sut.Start(kind, cpus, logDir, bin, "--configFile="+cfg)
			}
		}
	case "evloop":
		// Plaintext HTTP/1.1 only: its TLS port is left unserved.
		p, err = sut.Start(kind, cpus, logDir, bin, "-listen", pc.Plain, "-backends", strings.Join(backends, ","))
	default:
		return nil, fmt.Errorf("unknown peer %q (meridian, baseline, nginx, haproxy, caddy, traefik, evloop)", kind)
	}
	if err != nil {
		if p != nil {
			p.Stop(time.Second)
		}
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return &running{kind: kind, proc: p, plain: pc.Plain, tls: pc.TLS}, nil
}

// meridianSnapshot writes the gateway's snapshot: what the control plane
// would compile from a Gateway with an HTTP and an HTTPS listener and one
// HTTPRoute sending /api to Service api.bench:8080 (its three endpoints
// are --dst's).
func meridianSnapshot(dir string, plain, tls int, c *certs) (string, error) {
	rule := func() *gatewaypb.Rule {
		return &gatewaypb.Rule{
			Route:    &gatewaypb.RouteRef{Kind: "HTTPRoute", Namespace: "bench", Name: "api", Rule: "0"},
			Match:    &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/api"}},
			Backends: []*gatewaypb.Backend{{Authority: "api.bench:8080", Weight: 1}},
		}
	}
	s := &gatewaypb.Snapshot{
		Version: "bench", Gateway: "bench/gw",
		Ports: []*gatewaypb.Port{
			{Port: uint32(plain), Protocol: gatewaypb.Port_HTTP, Listeners: []*gatewaypb.Listener{{
				Name: "http", Mode: gatewaypb.Listener_HTTP, Hosts: []*gatewaypb.Host{{Rules: []*gatewaypb.Rule{rule()}}}}}},
			{Port: uint32(tls), Protocol: gatewaypb.Port_TLS, Listeners: []*gatewaypb.Listener{{
				Name: "https", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"bench/gw"},
				Hosts: []*gatewaypb.Host{{Rules: []*gatewaypb.Rule{rule()}}}}}},
		},
		Certificates: []*gatewaypb.Certificate{{Name: "bench/gw", CertChain: c.certPEM, PrivateKey: c.keyPEM}},
	}
	b, err := protojson.Marshal(s)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "snapshot.json")
	return path, os.WriteFile(path, b, 0o600)
}

// nginx: one process (master_process off) with one worker's event loop,
// keep-alive upstream connections, round robin (its default), logging off.
// keepalive_requests is raised as in the mesh benchmark: its default closes
// a client connection every 1000 requests.
var nginxGW = template.Must(template.New("nginx").Parse(`daemon off;
master_process off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream api {
{{- range .Backends}}
        server {{.}};
{{- end}}
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen {{.Plain}};
        listen {{.TLS}} ssl http2;
        ssl_certificate {{.Cert.Cert}};
        ssl_certificate_key {{.Cert.Key}};
        # 1.22's default stops at TLS 1.2; every other peer offers 1.3.
        ssl_protocols TLSv1.2 TLSv1.3;
        location /api/ {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
        }
        location / { return 404; }
    }
}
`))

// HAProxy: one process, one thread, round robin, server connections shared
// between requests (http-reuse always).
var haproxyGW = template.Must(template.New("haproxy").Parse(`global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always
frontend plain
    bind {{.Plain}}
    use_backend api if { path_beg /api/ }
frontend tls
    bind {{.TLS}} ssl crt {{.Cert.Combined}} alpn h2,http/1.1
    use_backend api if { path_beg /api/ }
backend api
    balance roundrobin
{{- range $i, $b := .Backends}}
    server b{{$i}} {{$b}}
{{- end}}
`))

// Caddy: two servers (plaintext HTTP/1.1; TLS with h2 and http/1.1, no
// HTTP/3), reverse_proxy with its default policy (random), the run's
// certificate, no admin endpoint, no automatic HTTPS, errors-only log.
var caddyGW = template.Must(template.New("caddy").Parse(`{
  "admin": {"disabled": true},
  "storage": {"module": "file_system", "root": "{{.Dir}}/storage"},
  "logging": {"logs": {"default": {"level": "ERROR"}}},
  "apps": {
    "tls": {"certificates": {"load_files": [{"certificate": "{{.Cert.Cert}}", "key": "{{.Cert.Key}}"}]}},
    "http": {"servers": {
      "plain": {
        "listen": ["{{.Plain}}"], "protocols": ["h1"], "automatic_https": {"disable": true},
        "routes": [{"match": [{"path": ["/api/*"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [
{{- range $i, $b := .Backends}}{{if $i}}, {{end}}{"dial": "{{$b}}"}{{end}}]}]}]
      },
      "tls": {
        "listen": ["{{.TLS}}"], "protocols": ["h1", "h2"], "automatic_https": {"disable": true},
        "tls_connection_policies": [{"default_sni": "gw.bench", "fallback_sni": "gw.bench"}],
        "routes": [{"match": [{"path": ["/api/*"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [
{{- range $i, $b := .Backends}}{{if $i}}, {{end}}{"dial": "{{$b}}"}{{end}}]}]}]
      }
    }}
  }
}
`))

// Traefik: two entry points, the file provider (not watched), weighted
// round robin (its default), the run's certificate as the default one, no
// API, no access log, no telemetry.
var traefikStatic = template.Must(template.New("traefik").Parse(`global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  web:
    address: "{{.Plain}}"
  websecure:
    address: "{{.TLS}}"
providers:
  file:
    filename: "{{.Dir}}/dynamic.yaml"
    watch: false
`))

var traefikDynamic = template.Must(template.New("traefik-dynamic").Parse(`http:
  routers:
    api:
      entryPoints: [web]
      rule: "PathPrefix(` + "`/api/`" + `)"
      service: api
    api-tls:
      entryPoints: [websecure]
      rule: "PathPrefix(` + "`/api/`" + `)"
      service: api
      tls: {}
  services:
    api:
      loadBalancer:
        servers:
{{- range .Backends}}
          - url: "http://{{.}}"
{{- end}}
tls:
  certificates:
    - certFile: "{{.Cert.Cert}}"
      keyFile: "{{.Cert.Key}}"
  stores:
    default:
      defaultCertificate:
        certFile: "{{.Cert.Cert}}"
        keyFile: "{{.Cert.Key}}"
`))
