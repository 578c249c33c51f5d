//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const gatewayManifest = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  annotations:
    gateway.meridian.io/service-type: ClusterIP
spec:
  gatewayClassName: meridian-e2e
  listeners:
  - name: http
    port: 80
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
spec:
  parentRefs:
  - name: edge
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - {name: X-Gateway, value: meridian}
    backendRefs:
    - name: echo
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bad-regex
spec:
  parentRefs:
  - name: edge
  rules:
  - matches:
    - path: {type: RegularExpression, value: "/(unclosed"}
    backendRefs:
    - name: echo
      port: 8080
`

// TestGatewayOnKubernetes: a Gateway of Meridian's class in front of a
// meshed Deployment. The controller provisions the gateway's proxy, which
// gets its own mesh identity, reads its snapshot from the gateway API and
// forwards to the meshed backend over mTLS; the Gateway and its routes get
// the statuses the spec asks for (an HTTPRoute with a bad regular
// expression is refused in its own status while the other keeps serving).
// Then HTTPS under load through a certificate change and a rolling restart
// of the backend, with no failed request (gatewayUnderChange).
func TestGatewayOnKubernetes(t *testing.T) {
	gone(t, "meridian", 3*time.Minute)
	crds := mustMeridian(t, "", "install", "--crds")
	kubectl(t, crds, "apply", "--server-side", "-f", "-")
	cp := mustMeridian(t, "", "install")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := runKubectl("", "--namespace", "meridian", "logs", "-l", "app.kubernetes.io/name=meridian-controller", "--tail=100", "--prefix")
			t.Logf("controller logs:\n%s", logs)
		}
		runKubectl("", "delete", "gatewayclass", "meridian-e2e", "--ignore-not-found")
		un := mustMeridian(t, "", "uninstall")
		runKubectl(un, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		gone(t, "meridian", 3*time.Minute)
	})
	kubectl(t, cp, "apply", "-f", "-")
	if out, errOut, err := meridian(t, "", "check", "--wait", "4m"); err != nil {
		t.Fatalf("meridian check --wait 4m: %v\n%s\n%s", err, out, errOut)
	}
	kubectl(t, "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: meridian-e2e\nspec:\n  controllerName: meridian.io/gateway-controller\n", "apply", "-f", "-")

	n := newNamespace(t)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := n.run("get", "gateway,httproute,deploy,svc,pods", "-o", "yaml")
			t.Logf("gateway objects:\n%s", out)
			logs, _ := n.run("logs", "deploy/edge-meridian", "--tail=100")
			t.Logf("gateway proxy logs:\n%s", logs)
		}
	})
	kubectl(t, "", "annotate", "namespace", n.name, "meridian.io/inject=enabled")
	n.apply(fmt.Sprintf(echoManifest, echoImage))
	n.must("rollout", "status", "deployment/echo", "--timeout=180s")
	n.apply(gatewayManifest)

	n.must("wait", "--for=condition=Accepted", "gatewayclass/meridian-e2e", "--timeout=60s")
	n.must("wait", "--for=condition=Programmed", "gateway/edge", "--timeout=180s")
	addr := strings.TrimSpace(n.must("get", "gateway", "edge", "-o", "jsonpath={.status.addresses[0].value}"))
	svcIP := strings.TrimSpace(n.must("get", "service", "edge-meridian", "-o", "jsonpath={.spec.clusterIP}"))
	if addr == "" || addr != svcIP {
		t.Fatalf("Gateway address %q, want its Service's cluster IP %q", addr, svcIP)
	}
	n.eventually("the HTTPRoute echo accepted", time.Minute, func() error {
		out, err := n.run("get", "httproute", "echo", "-o", `jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("Accepted %q %v", out, err)
		}
		return nil
	})
	n.eventually("the HTTPRoute bad-regex refused", time.Minute, func() error {
		out, err := n.run("get", "httproute", "bad-regex", "-o", `jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}`)
		if err != nil || out != "False" {
			return fmt.Errorf("Accepted %q %v", out, err)
		}
		return nil
	})

	// Through the gateway from this machine (the node: cluster IPs are
	// routed here), to a meshed echo replica.
	c := &http.Client{Timeout: 5 * time.Second}
	n.eventually("an answer from echo through the gateway", 2*time.Minute, func() error {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "echo-") || resp.Header.Get("X-Gateway") != "meridian" {
			return fmt.Errorf("%s %q X-Gateway %q", resp.Status, body, resp.Header.Get("X-Gateway"))
		}
		return nil
	})
	for i := range 20 {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request %d through the gateway: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d through the gateway: %s", i, resp.Status)
		}
	}

	// The gateway is a mesh member: mTLS to echo, with echo's identity.
	gwPod := strings.TrimSpace(n.must("get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=edge", "-o", "jsonpath={.items[0].metadata.name}"))
	metrics, err := runKubectl("", "get", "--raw", "/api/v1/namespaces/"+n.name+"/pods/"+gwPod+":4191/proxy/metrics")
	if err != nil {
		t.Fatal(err)
	}
	echoID := "spiffe://cluster.local/ns/" + n.name + "/sa/default"
	if v := sumSeries(metrics, "response_total", map[string]string{"tls": "true", "server_id": echoID}); v < 20 {
		t.Errorf("the gateway's response_total with tls=\"true\" and server_id=%q is %v, want at least 20\n%s", echoID, v, metrics)
	}

	gatewayUnderChange(t, n, addr)
}
