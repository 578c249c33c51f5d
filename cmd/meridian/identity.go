package main

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func newIdentityCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "identity PROXY_ADMIN_ADDR",
		Short: "Print a proxy's SPIFFE ID, certificate expiry and certificate chain",
		Long: `Prints the identity a running proxy presents to its peers: its SPIFFE ID, the
validity of its current certificate, and the chain (leaf, then issuer) in PEM,
read from the proxy's admin server (GET /identity).

PROXY_ADMIN_ADDR is the proxy's admin address (host:port), e.g. the METRICS
address 'meridian demo' prints. Naming a pod or workload (resolved through the
Kubernetes API) is not supported yet.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + args[0] + "/identity")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s: %s", args[0], resp.Status, body)
			}
			_, err = cmd.OutOrStdout().Write(body)
			return err
		},
	}
}
