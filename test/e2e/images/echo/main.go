// Command echo is the end-to-end suite's test workload. It runs in images
// built by `hack/cluster load-images` (a static binary on an empty base).
//
//	echo serve [-addr :8080]
//	    answers every request with the pod's hostname (its pod name)
//	echo client -url URL [-n 40]
//	    fetches URL n times, each over a new connection, and prints one JSON
//	    object: how many answers came from each hostname, and the errors
//	echo dial [-timeout 3s] HOST:PORT...
//	    opens a TCP connection to each address and prints one JSON object:
//	    "ok" or the error, by address
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
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
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	fs.Parse(args)
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, host)
	})
	log.Printf("echo: %s serving on %s", host, *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
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
