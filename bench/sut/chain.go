package sut

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// Protocol the client speaks end to end.
type Protocol string

const (
	HTTP1 Protocol = "http1" // HTTP/1.1 with keep-alive
	GRPC  Protocol = "grpc"  // unary gRPC over plaintext prior-knowledge HTTP/2
)

// Authority the clients address; the meridian chain routes on it.
const Authority = "backend.bench:8080"

// Chain is a two-hop L7 path: client → Entry → Out → In → server, the same
// shape as an app's outbound sidecar talking to the server's inbound sidecar.
type Chain struct {
	Kind    string // meridian, nginx, haproxy
	Proto   Protocol
	Entry   string // address the client sends to
	Out, In *Proc  // outbound and inbound hop
	Admin   []string
}

// Procs are the two hops.
func (c *Chain) Procs() []*Proc { return []*Proc{c.Out, c.In} }

// Stop both hops; the error reports a hop that had crashed or hung.
func (c *Chain) Stop() error {
	var errs []string
	for _, p := range c.Procs() {
		if p == nil {
			continue
		}
		if err := p.Stop(10 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func ports(n int) ([]int, error) {
	ps := make([]int, n)
	for i := range ps {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// MeridianArgs are the flags for one meridian-proxy with all listeners on
// fresh loopback ports. Extra flags (--destinations, --inbound-forward, --balancer)
// are appended by the caller.
func MeridianArgs() (outbound, inbound, admin string, args []string, err error) {
	ps, err := ports(3)
	if err != nil {
		return "", "", "", nil, err
	}
	outbound, inbound, admin = Addr(ps[0]), Addr(ps[1]), Addr(ps[2])
	// A short drain keeps shutdown between runs quick; nothing is in flight then.
	args = []string{"--outbound-addr", outbound, "--inbound-addr", inbound, "--admin-addr", admin, "--drain-timeout", "5s"}
	return outbound, inbound, admin, args, nil
}

// StartMeridian starts one proxy and waits for its /ready.
func StartMeridian(name, cpus, logDir, bin, admin string, args []string) (*Proc, error) {
	p, err := Start(name, cpus, logDir, bin, args...)
	if err != nil {
		return nil, err
	}
	if err := WaitHTTP200(p, "http://"+admin+"/ready", 15*time.Second); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return p, nil
}

// HintH2 is the protocol hint a cluster's destination API gives the
// client-side proxy for a meshed pod's endpoint (controlplane/compile's
// ProtocolH2): it carries HTTP/1.1 requests to the other proxy over one
// HTTP/2 connection (orig-proto). Without a hint the hop carries what the
// client spoke.
const HintH2 = "h2"

// Meridian starts proxy A (outbound, routing Authority to B's inbound) and
// proxy B (inbound, forwarding to server). hint ("" or HintH2) is B's
// endpoint's protocol hint in A's destinations.
func Meridian(bin string, proto Protocol, server, cpus, logDir, hint string, extra ...string) (*Chain, error) {
	_, bIn, bAdmin, bArgs, err := MeridianArgs()
	if err != nil {
		return nil, err
	}
	bArgs = append(bArgs, "--inbound-forward", server)
	bArgs = append(bArgs, extra...)
	name := chainName("meridian-", proto, hint)
	in, err := StartMeridian(name+"-in", cpus, logDir, bin, bAdmin, bArgs)
	if err != nil {
		return nil, err
	}
	aOut, _, aAdmin, aArgs, err := MeridianArgs()
	dests := filepath.Join(logDir, "destinations-"+name+".yaml")
	if err == nil {
		err = os.WriteFile(dests, []byte(destinations(bIn, "", hint)), 0o600)
	}
	if err != nil {
		in.Stop(time.Second)
		return nil, err
	}
	// A's own inbound is unused; point it at the server so the flag is valid.
	aArgs = append(aArgs, "--inbound-forward", server, "--destinations", dests)
	aArgs = append(aArgs, extra...)
	out, err := StartMeridian(name+"-out", cpus, logDir, bin, aAdmin, aArgs)
	if err != nil {
		in.Stop(time.Second)
		return nil, err
	}
	return &Chain{Kind: "meridian", Proto: proto, Entry: aOut, Out: out, In: in, Admin: []string{aAdmin, bAdmin}}, nil
}

// MeridianMTLS is Meridian's chain with mutual TLS between the hops, as in
// the mesh: each proxy gets its certificate from the identity API at idAddr
// (trust anchors in anchorsFile), proving service account "client" (A) or
// "server" (B) in namespace "bench" with a token file of that name, and A
// dials B expecting B's identity.
func MeridianMTLS(bin string, proto Protocol, server, cpus, logDir, idAddr, anchorsFile, hint string, extra ...string) (*Chain, error) {
	identityArgs := func(sa string) ([]string, error) {
		tok := filepath.Join(logDir, "token-"+sa)
		if err := os.WriteFile(tok, []byte(sa), 0o600); err != nil {
			return nil, err
		}
		return []string{"--identity-addr", idAddr, "--identity-trust-anchors", anchorsFile, "--identity-token-file", tok,
			"--workload-namespace", "bench", "--workload-service-account", sa}, nil
	}
	_, bIn, bAdmin, bArgs, err := MeridianArgs()
	if err != nil {
		return nil, err
	}
	ids, err := identityArgs("server")
	if err != nil {
		return nil, err
	}
	bArgs = append(append(append(bArgs, "--inbound-forward", server), ids...), extra...)
	name := chainName("meridian-mtls-", proto, hint)
	in, err := StartMeridian(name+"-in", cpus, logDir, bin, bAdmin, bArgs)
	if err != nil {
		return nil, err
	}
	aOut, _, aAdmin, aArgs, err := MeridianArgs()
	if err == nil {
		ids, err = identityArgs("client")
	}
	dests := filepath.Join(logDir, "destinations-"+name+".yaml")
	if err == nil {
		err = os.WriteFile(dests, []byte(destinations(bIn, "spiffe://cluster.local/ns/bench/sa/server", hint)), 0o600)
	}
	if err != nil {
		in.Stop(time.Second)
		return nil, err
	}
	aArgs = append(append(append(aArgs, "--inbound-forward", server, "--destinations", dests), ids...), extra...)
	out, err := StartMeridian(name+"-out", cpus, logDir, bin, aAdmin, aArgs)
	if err != nil {
		in.Stop(time.Second)
		return nil, err
	}
	return &Chain{Kind: "meridian-mtls", Proto: proto, Entry: aOut, Out: out, In: in, Admin: []string{aAdmin, bAdmin}}, nil
}

// chainName names a chain's proxies (and its destinations file): prefix,
// the protocol, and the hint's hop.
func chainName(prefix string, proto Protocol, hint string) string {
	if hint != "" {
		return prefix + string(proto) + "-" + hint + "hop"
	}
	return prefix + string(proto)
}

// destinations is a static destinations file routing Authority to addr,
// with the endpoint's identity and protocol hint when given.
func destinations(addr, identity, hint string) string {
	s := fmt.Sprintf("destinations:\n- authority: %s\n  endpoints:\n  - addr: %s\n", Authority, addr)
	if identity != "" {
		s += "    identity: " + identity + "\n"
	}
	if hint != "" {
		s += "    protocol: " + hint + "\n"
	}
	return s
}

// nginx: one process per hop (master_process off, so CPU and RSS are that
// process's alone), keep-alive upstream connections, logging off.
// keepalive_requests is raised because its default (1000) closes a client
// HTTP/2 connection every thousand requests, a reconnect storm at 5000 RPS
// that no tuned deployment would keep.
var nginxConf = template.Must(template.New("nginx").Parse(`daemon off;
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
    upstream next {
        server {{.Upstream}};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen {{.Listen}}{{if .GRPC}} http2{{end}};
        location / {
{{- if .GRPC}}
            grpc_pass grpc://next;
{{- else}}
            proxy_pass http://next;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
{{- end}}
        }
    }
}
`))

// HAProxy: one process and one thread per hop, keep-alive server connections
// shared between requests (http-reuse always), h2 on both sides for gRPC.
var haproxyConf = template.Must(template.New("haproxy").Parse(`global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always
frontend hop
    bind {{.Listen}}{{if .GRPC}} proto h2{{end}}
    default_backend next
backend next
    server s1 {{.Upstream}}{{if .GRPC}} proto h2{{end}}
`))

type hopConf struct {
	Dir, Listen, Upstream string
	GRPC                  bool
}

func startHop(kind, name, cpus, logDir, listen, upstream string, proto Protocol) (*Proc, error) {
	dir := filepath.Join(logDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, kind+".conf")
	f, err := os.Create(cfg)
	if err != nil {
		return nil, err
	}
	tmpl := nginxConf
	if kind == "haproxy" {
		tmpl = haproxyConf
	}
	err = tmpl.Execute(f, hopConf{Dir: dir, Listen: listen, Upstream: upstream, GRPC: proto == GRPC})
	f.Close()
	if err != nil {
		return nil, err
	}
	var p *Proc
	if kind == "nginx" {
		p, err = Start(name, cpus, logDir, "nginx", "-p", dir, "-c", cfg)
	} else {
		p, err = Start(name, cpus, logDir, "haproxy", "-db", "-f", cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := WaitTCP(p, listen, 10*time.Second); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return p, nil
}

// Peer starts the nginx or HAProxy two-hop chain in front of server.
func Peer(kind string, proto Protocol, server, cpus, logDir string) (*Chain, error) {
	if _, err := exec.LookPath(kind); err != nil {
		return nil, fmt.Errorf("%s not installed: %w", kind, err)
	}
	ps, err := ports(2)
	if err != nil {
		return nil, err
	}
	entry, mid := Addr(ps[0]), Addr(ps[1])
	in, err := startHop(kind, kind+"-"+string(proto)+"-in", cpus, logDir, mid, server, proto)
	if err != nil {
		return nil, err
	}
	out, err := startHop(kind, kind+"-"+string(proto)+"-out", cpus, logDir, entry, mid, proto)
	if err != nil {
		in.Stop(time.Second)
		return nil, err
	}
	return &Chain{Kind: kind, Proto: proto, Entry: entry, Out: out, In: in}, nil
}
