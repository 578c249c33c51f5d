// Command meridian-controller is Meridian's control plane, the binary of the
// controller image: the same command as `meridian controller`
// (controlplane/controller/command), without the CLI's Helm, demo and
// dashboard.
package main

import (
	"fmt"
	"os"

	"github.com/meridian-mesh/meridian/controlplane/controller/command"
)

// version is set at build time with -ldflags "-X main.version=..."; it is
// the default of --control-plane-version (the chart passes the flag).
var version = ""

func main() {
	v := version
	if v == "" {
		v = "dev"
	}
	cmd := command.New("meridian-controller", v)
	cmd.Version = v
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meridian-controller:", err)
		os.Exit(1)
	}
}
