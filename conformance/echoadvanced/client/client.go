package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// headers is the repeatable -H "Name:value" flag.
type headers [][2]string

func (h *headers) String() string { return fmt.Sprint(*h) }
func (h *headers) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("-H %q: want Name:value", s)
	}
	*h = append(*h, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	return nil
}

// runClient sends --count requests (1 by default) to target, an http://
// or grpc:// URL, and writes each answer as Istio's echo client does:
// "[i] Field=value" lines (StatusCode, then each response header), the
// body's lines as "[i body] line", and a blank line after each, which the
// suite's parser splits a batch on. Redirects are reported, not followed.
// It fails (1) on the first request that gets no answer, or a gRPC status
// other than OK.
func runClient(target string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	method := fs.String("method", http.MethodGet, "HTTP method")
	var hdrs headers
	fs.Var(&hdrs, "H", "request header Name:value (repeatable)")
	count := fs.Int("count", 1, "requests to send, one after another")
	timeout := fs.Duration("timeout", 5*time.Second, "each request's timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *count < 1 {
		fmt.Fprintln(stderr, "client: --count must be at least 1")
		return 2
	}
	u, err := url.Parse(target)
	if err != nil {
		fmt.Fprintln(stderr, "client:", err)
		return 2
	}
	var send func(ctx context.Context, i int, out *bytes.Buffer) error
	switch u.Scheme {
	case "http", "https":
		send = httpSender(u, *method, hdrs)
	case "grpc":
		conn, err := grpc.NewClient("passthrough:///"+u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintln(stderr, "client:", err)
			return 1
		}
		defer conn.Close()
		send = grpcSender(conn, hdrs)
	default:
		fmt.Fprintf(stderr, "client: scheme %q: want http, https or grpc\n", u.Scheme)
		return 2
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	for i := range *count {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		err := send(ctx, i, &out)
		cancel()
		if err != nil {
			w.Flush()
			fmt.Fprintf(stderr, "client: request %d to %s: %v\n", i, target, err)
			return 1
		}
		out.WriteString("\n")
		w.Write(out.Bytes())
	}
	return 0
}

func httpSender(u *url.URL, method string, hdrs headers) func(context.Context, int, *bytes.Buffer) error {
	c := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, i int, out *bytes.Buffer) error {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
		if err != nil {
			return err
		}
		for _, h := range hdrs {
			if strings.EqualFold(h[0], "Host") {
				req.Host = h[1]
				continue
			}
			req.Header.Add(h[0], h[1])
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "[%d] Url=%s\n", i, u)
		fmt.Fprintf(out, "[%d] StatusCode=%d\n", i, resp.StatusCode)
		writeResponseHeaders(out, i, resp.Header)
		writeBody(out, i, body)
		return nil
	}
}

func grpcSender(conn *grpc.ClientConn, hdrs headers) func(context.Context, int, *bytes.Buffer) error {
	return func(ctx context.Context, i int, out *bytes.Buffer) error {
		for _, h := range hdrs {
			ctx = grpcmd.AppendToOutgoingContext(ctx, strings.ToLower(h[0]), h[1])
		}
		var header grpcmd.MD
		resp := new(wrapperspb.StringValue)
		err := conn.Invoke(ctx, echoMethod, wrapperspb.String(""), resp, grpc.Header(&header))
		if err != nil {
			// A status other than OK fails as no answer does: the
			// suite's gRPC test wants OK, and retries until it comes.
			return err
		}
		fmt.Fprintf(out, "[%d] StatusCode=%d\n", i, http.StatusOK)
		h := http.Header{}
		for k, vs := range header {
			for _, v := range vs {
				h.Add(k, v)
			}
		}
		writeResponseHeaders(out, i, h)
		writeBody(out, i, []byte(resp.GetValue()))
		return nil
	}
}

func writeResponseHeaders(out *bytes.Buffer, i int, h http.Header) {
	for k, v := range sortedHeaders(h) {
		fmt.Fprintf(out, "[%d] ResponseHeader=%s:%s\n", i, k, v)
	}
}

// writeBody writes the body's non-empty lines: an empty one would end the
// response for the suite's batch parser.
func writeBody(out *bytes.Buffer, i int, body []byte) {
	prefix := "[" + strconv.Itoa(i) + " body] "
	for line := range strings.SplitSeq(string(body), "\n") {
		if line = strings.TrimRight(line, "\r"); line != "" {
			out.WriteString(prefix + line + "\n")
		}
	}
}
