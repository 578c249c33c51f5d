//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

const echoManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: %[1]s
        imagePullPolicy: IfNotPresent
        args: [serve, -addr, ":8080"]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 8080, targetPort: http}
`

// The client reaches the Service by its short name: the pod's resolver
// (search path <namespace>.svc.cluster.local, nameserver the kube-dns
// Service) asks CoreDNS, and kube-proxy's rules pick a replica for each
// connection.
const clientPod = `apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: %[1]s
    imagePullPolicy: IfNotPresent
    args: [client, -url, "http://echo:8080/", -n, "%[2]d"]
`

// TestServiceSpreadsOverReplicas: a two-replica HTTP Deployment from a
// locally built image, reached by Service name from another pod through
// CoreDNS, with kube-proxy spreading the requests over both replicas.
func TestServiceSpreadsOverReplicas(t *testing.T) {
	const requests = 40
	n := newNamespace(t)
	n.apply(fmt.Sprintf(echoManifest, echoImage))
	n.must("rollout", "status", "deployment/echo", "--timeout=120s")
	pods := strings.Fields(n.must("get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(pods) != 2 {
		t.Fatalf("want 2 echo pods, have %v", pods)
	}
	// Both replicas are behind the Service before the client starts.
	n.eventually("two ready endpoints of Service echo", 60*time.Second, func() error {
		out, err := n.run("get", "endpointslices", "-l", "kubernetes.io/service-name=echo",
			"-o", "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.targetRef.name} {end}")
		if err != nil {
			return err
		}
		if got := strings.Fields(out); len(got) != 2 {
			return fmt.Errorf("ready endpoints: %v", got)
		}
		return nil
	})

	n.apply(fmt.Sprintf(clientPod, echoImage, requests))
	n.waitPodDone("client", 2*time.Minute)
	out := n.must("logs", "pod/client")
	var res struct {
		Hosts  map[string]int `json:"hosts"`
		Errors []string       `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	t.Logf("answers per replica: %v", res.Hosts)
	if len(res.Errors) > 0 {
		t.Errorf("%d of %d requests failed: %v", len(res.Errors), requests, res.Errors)
	}
	total := 0
	for host, count := range res.Hosts {
		total += count
		if host != pods[0] && host != pods[1] {
			t.Errorf("answer from %q, which is not one of the replicas %v", host, pods)
		}
	}
	for _, p := range pods {
		if res.Hosts[p] == 0 {
			t.Errorf("replica %s answered none of %d requests: kube-proxy did not spread them (answers: %v)", p, requests, res.Hosts)
		}
	}
	if total != requests-len(res.Errors) {
		t.Errorf("counted %d answers for %d requests", total, requests)
	}
}
