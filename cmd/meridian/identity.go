package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
)

func newIdentityCmd() *cobra.Command {
	var (
		kf       kubeclient.Flags
		selector string
	)
	cmd := &cobra.Command{
		Use:   "identity (ADMIN_ADDR | POD | TYPE/NAME | -l SELECTOR)",
		Short: "Print a proxy's SPIFFE ID, certificate expiry and certificate chain",
		Long: `Prints the identity a running proxy presents to its peers: its SPIFFE ID, the
validity of its current certificate, and the chain (leaf, then issuer) in PEM,
read from the proxy's admin server (GET /identity).

The proxy is named by one of:

  ADMIN_ADDR        the proxy's admin address (host:port), e.g. the METRICS
                    address 'meridian demo' prints
  POD, pod/NAME     a meshed pod
  deploy/NAME, sts/NAME, ds/NAME
                    every pod of a Deployment, StatefulSet or DaemonSet (the
                    pods its selector matches)
  -l SELECTOR       every pod the label selector matches

Pods are looked up in -n NAMESPACE (default: the kubeconfig context's, else
default), and their proxy's admin port (4191) is reached through the API
server's pod proxy: no port-forward and no network path to the pod is needed,
only the right to get pods/proxy. Each pod's identity follows a line
'POD namespace/name'.`,
		Example: `  meridian identity 127.0.0.1:4191
  meridian identity web-7d9c6b-x2x4q -n emojivoto
  meridian identity deploy/web -n emojivoto
  meridian identity -l app=web -n emojivoto`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			switch {
			case len(args) == 0 && selector == "":
				return errors.New("name a proxy: ADMIN_ADDR, POD, TYPE/NAME or -l SELECTOR")
			case len(args) == 1 && selector != "":
				return errors.New("give either a name or --selector, not both")
			case len(args) == 1 && isAdminAddr(args[0]):
				body, err := adminGet(ctx, args[0], "identity")
				if err != nil {
					return err
				}
				_, err = out.Write(body)
				return err
			}
			c, err := kf.Connect()
			if err != nil {
				return err
			}
			pods, err := identityPods(ctx, c, args, selector)
			if err != nil {
				return err
			}
			return writeIdentities(ctx, out, pods, func(ctx context.Context, p *corev1.Pod) ([]byte, error) {
				return c.ProxyGet(ctx, p, "identity")
			})
		},
	}
	kf.Register(cmd)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector (e.g. app=web): every matching pod")
	return cmd
}

// isAdminAddr tells an admin address (host:port) from a Kubernetes name,
// which never holds a colon.
func isAdminAddr(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// adminGet GETs /path (e.g. "identity", "metrics") from a proxy admin
// server at addr.
func adminGet(ctx context.Context, addr, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", addr, resp.Status, body)
	}
	return body, nil
}

// identityPods resolves the command's name (a pod or a workload) or
// selector to pods.
func identityPods(ctx context.Context, c *kubeclient.Client, args []string, selector string) ([]corev1.Pod, error) {
	if selector != "" {
		return c.PodsBySelector(ctx, selector)
	}
	ref, err := kubeclient.ParseRef(args[0])
	if err != nil {
		return nil, err
	}
	return c.Pods(ctx, ref)
}

// writeIdentities prints each pod's identity under a 'POD ns/name' line.
// A pod that fails (not meshed, not running, no certificate yet) does not
// stop the others; the error names every one that failed.
func writeIdentities(ctx context.Context, w io.Writer, pods []corev1.Pod, get func(context.Context, *corev1.Pod) ([]byte, error)) error {
	var errs []error
	for i := range pods {
		p := &pods[i]
		body, err := get(ctx, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(body) > 0 && body[len(body)-1] != '\n' {
			body = append(body, '\n')
		}
		if _, err := fmt.Fprintf(w, "POD %s/%s\n%s", p.Namespace, p.Name, body); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
