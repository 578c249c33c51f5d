// Package backend holds the benchmarks' test servers: an HTTP/1.1 server and
// a gRPC server (grpc.health.v1.Health/Check as the unary RPC, so no generated
// code is needed), each with a fixed service time and a request counter.
package backend

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Server is one running backend.
type Server struct {
	Addr  string        // host:port it listens on
	Delay time.Duration // service time added to every request
	count atomic.Int64
	close func()
}

// Count is the number of requests served so far.
func (s *Server) Count() int64 { return s.count.Load() }

// Reset zeroes the counter, e.g. after a warm-up.
func (s *Server) Reset() { s.count.Store(0) }

// Close stops the server.
func (s *Server) Close() { s.close() }

func (s *Server) serve() {
	s.count.Add(1)
	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
}

// StartHTTP serves HTTP/1.1 on addr ("127.0.0.1:0" for any free port): every
// request gets 200 "ok\n" after Delay.
func StartHTTP(addr string, delay time.Duration) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: ln.Addr().String(), Delay: delay}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.serve()
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("ok\n"))
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = hs.Serve(ln) }()
	s.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
			_ = hs.Close()
		}
	}
	return s, nil
}

// health answers Check with SERVING after Delay.
type health struct {
	healthpb.UnimplementedHealthServer
	s *Server
}

func (h health) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.s.serve()
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// StartGRPC serves gRPC in plain text (prior-knowledge HTTP/2) on addr.
func StartGRPC(addr string, delay time.Duration) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: ln.Addr().String(), Delay: delay}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health{s: s})
	go func() { _ = gs.Serve(ln) }()
	s.close = func() {
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			gs.Stop()
		}
	}
	return s, nil
}
