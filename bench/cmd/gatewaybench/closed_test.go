package main

import "testing"

// Reports as wrk 4.1.0 and h2load 1.52.0 (Debian 12) print them.
const (
	wrkOK = `Running 1s test @ http://127.0.0.1:19100/api/x
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   279.91us  400.23us   5.47ms   94.63%
    Req/Sec    31.02k     1.14k   32.84k    63.64%
  Latency Distribution
     50%  185.00us
     75%  261.00us
     90%  313.00us
     99%    2.31ms
  33873 requests in 1.10s, 4.85MB read
Requests/sec:  30794.56
Transfer/sec:      4.41MB
`
	wrkErrors = `Running 1s test @ http://127.0.0.1:19100/nope
  1 threads and 8 connections
  Latency Distribution
     99%    1.00ms
  74969 requests in 1.10s, 22.02MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 969
Requests/sec:  68171.30
`
	h2loadOK = `TLS Protocol: TLSv1.3
Application protocol: h2
finished in 1.00s, 15695.00 req/s, 1.17MB/s
requests: 15695 total, 15699 started, 15695 done, 15690 succeeded, 5 failed, 0 errored, 0 timeout
status codes: 15690 2xx, 0 3xx, 0 4xx, 2 5xx
`
)

func TestParseGenerators(t *testing.T) {
	var x closedRun
	if err := parseWrk(wrkOK, &x); err != nil || x.errors != 0 || x.p99 != "2.31ms" || int(x.rps) != 30793 {
		t.Errorf("wrk: %+v, %v; want 30793 RPS, p99 2.31ms, no errors", x, err)
	}
	x = closedRun{}
	// Non-2xx answers are not counted as served; every error is counted.
	if err := parseWrk(wrkErrors, &x); err != nil || x.errors != 972 || int(x.rps) != 67272 {
		t.Errorf("wrk with errors: %+v, %v; want 67272 RPS, 972 errors", x, err)
	}
	if err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused", &x); err == nil {
		t.Error("wrk: a report without a rate was taken")
	}
	x = closedRun{}
	if err := parseH2load(h2loadOK, &x); err != nil || x.errors != 7 || x.rps != 15690 {
		t.Errorf("h2load: %+v, %v; want 15690 RPS, 7 errors", x, err)
	}
	if err := parseH2load("Application protocol: http/1.1\n"+h2loadOK[len("TLS Protocol: TLSv1.3\nApplication protocol: h2\n"):], &x); err == nil {
		t.Error("h2load: an answer over HTTP/1.1 was taken")
	}
}
