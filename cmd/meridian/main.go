// Command meridian is Meridian's CLI: the demo today; install, check,
// inject, viz and the controller as they land.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	controllercmd "github.com/meridian-mesh/meridian/controlplane/controller/command"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meridian:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "meridian",
		Short:         "Meridian: edge gateway, service mesh and progressive delivery in one",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDemoCmd(), newVersionCmd(), controllercmd.New("controller", cliVersion()), newIdentityCmd())
	root.AddCommand(newInstallCmd(), newUninstallCmd())
	root.AddCommand(newCheckCmd())
	root.AddCommand(newInjectCmd(), newUninjectCmd())
	root.AddCommand(newVizCmd())
	root.AddCommand(newRolloutCmd())
	return root
}
