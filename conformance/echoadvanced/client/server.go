package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"io"
	"iter"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ports is a repeatable port flag (--port=8080 --port=8443).
type ports []int

func (p *ports) String() string { return fmt.Sprint(*p) }
func (p *ports) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("%q: a port is 1-65535", s)
	}
	*p = append(*p, n)
	return nil
}

// runServer serves what the flags name until one of the servers fails:
// HTTP on each --port (with TLS when also in --tls), the echo gRPC service
// on each --grpc, and a TCP echo on each --tcp, as Istio's echo server
// does with the same flags.
func runServer(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	var httpPorts, tlsPorts, grpcPorts, tcpPorts ports
	fs.Var(&httpPorts, "port", "HTTP port (repeatable; default 8080)")
	fs.Var(&tlsPorts, "tls", "a --port served with TLS (repeatable)")
	fs.Var(&grpcPorts, "grpc", "gRPC port (repeatable; default 7070)")
	fs.Var(&tcpPorts, "tcp", "TCP echo port (repeatable; default 9090)")
	crt := fs.String("crt", "", "TLS certificate file; a self-signed one when it does not exist")
	key := fs.String("key", "", "TLS key file")
	version := fs.String("version", os.Getenv("SERVICE_VERSION"), "ServiceVersion in responses")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Istio's defaults, each list's own: the suite's consumer namespace
	// runs the image with no arguments.
	if len(httpPorts) == 0 {
		httpPorts = ports{8080}
	}
	if len(grpcPorts) == 0 {
		grpcPorts = ports{7070}
	}
	if len(tcpPorts) == 0 {
		tcpPorts = ports{9090}
	}
	hostname, _ := os.Hostname()
	e := &responder{version: *version, hostname: hostname}
	errc := make(chan error, len(httpPorts)+len(grpcPorts)+len(tcpPorts))
	var cert *tls.Certificate
	for _, p := range httpPorts {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return err
		}
		if slices.Contains(tlsPorts, p) {
			if cert == nil {
				c, err := loadOrMakeCert(*crt, *key)
				if err != nil {
					return err
				}
				cert = &c
			}
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}})
		}
		s := &http.Server{Handler: e.httpHandler(p), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- s.Serve(ln) }()
	}
	for _, p := range grpcPorts {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return err
		}
		s := grpc.NewServer()
		s.RegisterService(&echoServiceDesc, e.grpcServer(p))
		go func() { errc <- s.Serve(ln) }()
	}
	for _, p := range tcpPorts {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return err
		}
		go func() { errc <- serveTCPEcho(ln) }()
	}
	return <-errc
}

// responder writes what a request looked like, in the "Field=value" lines of
// Istio's echo server that the suite's parser reads
// (sigs.k8s.io/gateway-api/conformance/utils/echo).
type responder struct {
	version  string
	hostname string
}

func (e *responder) httpHandler(port int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		var b bytes.Buffer
		field(&b, "StatusCode", strconv.Itoa(http.StatusOK))
		alpn := ""
		if r.TLS != nil {
			alpn = r.TLS.NegotiatedProtocol
		}
		e.common(&b, port, r.Host, r.RequestURI, r.Method, r.Proto, r.RemoteAddr, alpn, r.Header)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(b.Bytes())
	})
}

// common writes the fields both protocols share, request headers sorted.
func (e *responder) common(b *bytes.Buffer, port int, host, url, method, proto, remote, alpn string, h http.Header) {
	field(b, "ServiceVersion", e.version)
	field(b, "ServicePort", strconv.Itoa(port))
	field(b, "Host", host)
	field(b, "URL", url)
	field(b, "Method", method)
	field(b, "Proto", proto)
	ip, _, err := net.SplitHostPort(remote)
	if err != nil {
		ip = remote
	}
	field(b, "IP", ip)
	field(b, "Alpn", alpn)
	for k, v := range sortedHeaders(h) {
		field(b, "RequestHeader", k+":"+v)
	}
	field(b, "Hostname", e.hostname)
}

// sortedHeaders yields h's values by name, in name order (the output's
// order is the same from run to run).
func sortedHeaders(h http.Header) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, k := range slices.Sorted(maps.Keys(h)) {
			for _, v := range h[k] {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// field writes one line; a value's own line breaks would start lines the
// parser reads as fields of their own.
func field(b *bytes.Buffer, name, value string) {
	value = strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
	fmt.Fprintf(b, "%s=%s\n", name, value)
}

// The gRPC service is Istio's proto.EchoTestService/Echo, whose request and
// response messages are each one string, field 1: on the wire exactly a
// google.protobuf.StringValue, so this needs no generated code.
const echoMethod = "/proto.EchoTestService/Echo"

type echoService interface {
	reply(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: "proto.EchoTestService",
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(echoService).reply(ctx, in)
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "echo.proto",
}

type grpcEcho struct {
	*responder
	port int
}

func (e *responder) grpcServer(port int) echoService { return grpcEcho{e, port} }

func (g grpcEcho) reply(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h := http.Header{}
	host := ""
	for k, vs := range md {
		if k == ":authority" {
			host = strings.Join(vs, ",")
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	var b bytes.Buffer
	field(&b, "StatusCode", strconv.Itoa(http.StatusOK))
	if in.GetValue() != "" {
		field(&b, "Echo", in.GetValue())
	}
	g.common(&b, g.port, host, echoMethod, "POST", "GRPC", remote, "", h)
	return wrapperspb.String(b.String()), nil
}

// serveTCPEcho sends back whatever each connection sends.
func serveTCPEcho(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// loadOrMakeCert loads the TLS port's certificate, or makes a self-signed
// one when the files are not there (the upstream image carries its own).
func loadOrMakeCert(crt, key string) (tls.Certificate, error) {
	if crt != "" && key != "" {
		if _, err := os.Stat(crt); err == nil {
			return tls.LoadX509KeyPair(crt, key)
		}
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "echo"},
		DNSNames:     []string{"echo", "*.svc.cluster.local"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}
