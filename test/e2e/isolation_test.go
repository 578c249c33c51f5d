//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

const dialPod = `apiVersion: v1
kind: Pod
metadata:
  name: dial
spec:
  restartPolicy: Never
  containers:
  - name: dial
    image: %[1]s
    imagePullPolicy: IfNotPresent
    args: [dial, -timeout, 3s, %[2]s]
`

// TestPodTrafficStaysInCluster: the node's guard lets a pod reach the node
// (198.19.0.1, in 198.18.0.0/15) but drops what it sends to any other
// address. The address tried is one of this machine's own (its apiserver
// listens on every address), so nothing would leave the machine even if the
// guard failed.
func TestPodTrafficStaysInCluster(t *testing.T) {
	other := hostAddressOutsideCluster()
	if other == "" {
		t.Skip("this machine has no IPv4 address outside 198.18.0.0/15 to try")
	}
	inside := "198.19.0.1:6443"
	outside := net.JoinHostPort(other, "6443")
	// The same port answers on both addresses from the host.
	for _, addr := range []string{inside, outside} {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			t.Fatalf("from the host, %s: %v", addr, err)
		}
		c.Close()
	}

	n := newNamespace(t)
	n.apply(fmt.Sprintf(dialPod, echoImage, `"`+inside+`", "`+outside+`"`))
	n.waitPodDone("dial", 2*time.Minute)
	out := n.must("logs", "pod/dial")
	var res map[string]string
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("dial output %q: %v", out, err)
	}
	t.Logf("from a pod: %v", res)
	if res[inside] != "ok" {
		t.Errorf("a pod could not reach the node at %s: %s", inside, res[inside])
	}
	if res[outside] == "ok" {
		t.Errorf("a pod reached %s, outside 198.18.0.0/15: the guard let it through", outside)
	} else if !strings.Contains(res[outside], "timeout") {
		t.Errorf("a pod's connection to %s failed with %q, want a timeout (dropped by the guard)", outside, res[outside])
	}
}

// hostAddressOutsideCluster returns one of this machine's global IPv4
// addresses outside 198.18.0.0/15, or "".
func hostAddressOutsideCluster() string {
	_, cluster, _ := net.ParseCIDR("198.18.0.0/15")
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || !ipn.IP.IsGlobalUnicast() || cluster.Contains(ipn.IP) {
			continue
		}
		return ipn.IP.String()
	}
	return ""
}
