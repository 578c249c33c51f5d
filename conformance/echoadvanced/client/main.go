// Command client is the image the Gateway API conformance suite's MESH
// profile runs as registry.k8s.io/gateway-api/echo-advanced: an echo server
// (its Deployment's arguments) and the client the suite runs in its pods
// with `kubectl exec ... client URL`. The upstream image is Istio's echo
// server and client, built from Istio's repository, which this machine
// cannot fetch; this is the part of their behaviour the suite reads (see
// README.md). The binary is named client because the suite execs that name.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	// `client URL [flags]` from the suite's exec; anything else is the
	// server's flags (the image's entrypoint with the Deployment's args).
	if len(os.Args) > 1 && strings.Contains(os.Args[1], "://") {
		os.Exit(runClient(os.Args[1], os.Args[2:], os.Stdout, os.Stderr))
	}
	if err := runServer(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}
