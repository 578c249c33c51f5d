// Command echo is the end-to-end suite's test workload. It runs in images
// built by `hack/cluster load-images` (a static binary on an empty base).
//
//	echo serve [-addr :8080] [-fail-rate 0] [-drain 0]
//	    answers every request with the pod's hostname (its pod name), also
//	    in the header X-Echo-Host; -fail-rate F answers 500 to exactly that
//	    fraction of the requests (evenly spread: 0.5 is every other one;
//	    /healthz, for probes, always answers 200 and is not counted);
//	    on SIGTERM it keeps serving for -drain, then stops once the
//	    requests in flight are answered (what a well-behaved application
//	    does while the endpoints that name it are being removed)
//	echo load -url URL [-addr :9090] [-rate 20] [-timeout 3s] [-keep-alive=true]
//	    sends rate requests a second to URL (each on time, whether or not
//	    the earlier ones have been answered) until it is stopped, and
//	    serves its counts as JSON on GET /stats: the answers by pod
//	    (X-Echo-Host) and status, and every request that no pod answered
//	    (a transport error, a status without X-Echo-Host) by its error;
//	    -keep-alive=false sends each request on a new connection
//	echo client -url URL [-n 40]
//	    fetches URL n times, each over a new connection, and prints one JSON
//	    object: how many answers came from each hostname, and the errors
//	echo dial [-timeout 3s] HOST:PORT...
//	    opens a TCP connection to each address and prints one JSON object:
//	    "ok" or the error, by address
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: echo serve|client [flags]")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "client":
		client(os.Args[2:])
	case "dial":
		dial(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	failRate := fs.Float64("fail-rate", 0, "fraction of requests answered 500")
	drain := fs.Duration("drain", 0, "how long to keep serving after SIGTERM")
	fs.Parse(args)
	if *failRate < 0 || *failRate > 1 {
		log.Fatalf("-fail-rate %v: want a fraction from 0 to 1", *failRate)
	}
	host, _ := os.Hostname()
	var n atomic.Int64
	mux := http.NewServeMux()
	// The readiness probe's path: never failed, not counted, so that a
	// failing version is still ready (and gets its share of traffic).
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo-Host", host)
		// Request i fails when floor(i*rate) moves: exactly the fraction,
		// evenly spread, so a short window sees it too.
		i := n.Add(1)
		if int64(float64(i)*(*failRate)) != int64(float64(i-1)*(*failRate)) {
			http.Error(w, host+": failing on purpose (-fail-rate)", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, host)
	})
	srv := &http.Server{Addr: *addr, Handler: mux}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-stop
		log.Printf("echo: SIGTERM, serving %s more", *drain)
		time.Sleep(*drain)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	log.Printf("echo: %s serving on %s (fail rate %v)", host, *addr, *failRate)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	log.Printf("echo: stopped after %d requests", n.Load())
}

// stats is what load serves: every request it sent, counted once.
type stats struct {
	Sent     int64 `json:"sent"`     // requests sent so far
	Answered int64 `json:"answered"` // with a result below (the others are in flight)
	// Pods are the answers by the pod that gave them (X-Echo-Host), then
	// by status code.
	Pods map[string]map[string]int64 `json:"pods"`
	// Unanswered are the requests no echo pod answered, by error: a
	// transport error or a status without X-Echo-Host (the proxy's own).
	Unanswered map[string]int64 `json:"unanswered"`
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "URL to load")
	addr := fs.String("addr", ":9090", "where /stats is served")
	rate := fs.Int("rate", 20, "requests a second")
	timeout := fs.Duration("timeout", 3*time.Second, "time limit of one request")
	keepAlive := fs.Bool("keep-alive", true, "reuse connections (false: a new connection per request)")
	fs.Parse(args)
	if *url == "" || *rate <= 0 {
		log.Fatal("load: -url and a positive -rate are required")
	}
	var mu sync.Mutex
	st := stats{Pods: map[string]map[string]int64{}, Unanswered: map[string]int64{}}
	record := func(pod, key string) {
		mu.Lock()
		defer mu.Unlock()
		st.Answered++
		if pod == "" {
			st.Unanswered[key]++
			return
		}
		if st.Pods[pod] == nil {
			st.Pods[pod] = map[string]int64{}
		}
		st.Pods[pod][key]++
	}
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	go func() { log.Fatal(http.ListenAndServe(*addr, nil)) }()
	c := &http.Client{Timeout: *timeout}
	if !*keepAlive {
		c.Transport = &http.Transport{DisableKeepAlives: true}
	}
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	log.Printf("echo: loading %s at %d/s", *url, *rate)
	for range tick.C {
		mu.Lock()
		st.Sent++
		mu.Unlock()
		go func() {
			resp, err := c.Get(*url)
			if err != nil {
				record("", err.Error())
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code := strconv.Itoa(resp.StatusCode)
			pod := resp.Header.Get("X-Echo-Host")
			if pod == "" {
				code = "status " + code + " without X-Echo-Host"
			}
			record(pod, code)
		}()
	}
}

// result is what client prints.
type result struct {
	Hosts  map[string]int `json:"hosts"`
	Errors []string       `json:"errors,omitempty"`
}

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	url := fs.String("url", "", "URL to fetch")
	n := fs.Int("n", 40, "number of requests")
	fs.Parse(args)
	// A new connection per request, so that kube-proxy picks a backend for
	// each one.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res := result{Hosts: map[string]int{}}
	for i := 0; i < *n; i++ {
		resp, err := c.Get(*url)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			time.Sleep(200 * time.Millisecond)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			res.Errors = append(res.Errors, fmt.Sprintf("status %d, err %v", resp.StatusCode, err))
			continue
		}
		res.Hosts[strings.TrimSpace(string(body))]++
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if len(res.Errors) == *n {
		os.Exit(1)
	}
}

func dial(args []string) {
	fs := flag.NewFlagSet("dial", flag.ExitOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "connect timeout")
	fs.Parse(args)
	res := map[string]string{}
	for _, addr := range fs.Args() {
		c, err := net.DialTimeout("tcp", addr, *timeout)
		if err != nil {
			res[addr] = err.Error()
			continue
		}
		c.Close()
		res[addr] = "ok"
	}
	json.NewEncoder(os.Stdout).Encode(res)
}
