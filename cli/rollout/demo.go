package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// DemoPath is where `meridian demo` serves its Rollouts' Objects (on its
// dashboard address): local mode has no API server to read them from.
const DemoPath = "/api/rollouts"

// Objects are a local-mode source's Rollouts and what they own, as
// Kubernetes objects: the ReplicaSets (one per pod-template hash, owned by
// the Rollout, with its revision), their pods (owned by them) and the
// AnalysisRuns. NewInfo reads them as it reads an API server's.
type Objects struct {
	Rollouts     []v1alpha1.Rollout     `json:"rollouts"`
	ReplicaSets  []appsv1.ReplicaSet    `json:"replicaSets"`
	Pods         []corev1.Pod           `json:"pods"`
	AnalysisRuns []v1alpha1.AnalysisRun `json:"analysisRuns"`
}

// Info is Rollout name's tree (in namespace ns; empty: the one Rollout of
// that name, whatever its namespace).
func (o *Objects) Info(ns, name string) (*Info, *v1alpha1.Rollout, error) {
	var found []*v1alpha1.Rollout
	for i := range o.Rollouts {
		ro := &o.Rollouts[i]
		if ro.Name == name && (ns == "" || ro.Namespace == ns) {
			found = append(found, ro)
		}
	}
	switch {
	case len(found) == 0 && ns == "":
		return nil, nil, fmt.Errorf("rollout %s not found", name)
	case len(found) == 0:
		return nil, nil, fmt.Errorf("rollout %s/%s not found", ns, name)
	case len(found) > 1:
		return nil, nil, fmt.Errorf("rollout %s is in several namespaces (%s, %s...): name one with -n", name, found[0].Namespace, found[1].Namespace)
	}
	ro := found[0]
	return NewInfo(ro, o.ReplicaSets, o.Pods, o.AnalysisRuns), ro, nil
}

// DemoClient reads the Rollouts `meridian demo` serves (DemoPath at
// Address, its dashboard address).
type DemoClient struct {
	Address   string // host:port
	Namespace string // empty: any
	// Poll is how often Watch reads again (default 1s).
	Poll time.Duration
	HTTP *http.Client
}

// Objects reads what the demo serves.
func (c *DemoClient) Objects(ctx context.Context) (*Objects, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	u := "http://" + strings.TrimPrefix(c.Address, "http://") + DemoPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the demo's rollouts (is `meridian demo` running, with its dashboard on %s?): %w", c.Address, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	var o Objects
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return &o, nil
}

// Info reads Rollout name's tree.
func (c *DemoClient) Info(ctx context.Context, name string) (*Info, *v1alpha1.Rollout, error) {
	o, err := c.Objects(ctx)
	if err != nil {
		return nil, nil, err
	}
	return o.Info(c.Namespace, name)
}

// Watch calls fn with Rollout name's tree every Poll (the demo serves no
// watch; the caller draws only what changed), until fn is done or ctx ends.
func (c *DemoClient) Watch(ctx context.Context, name string, _ time.Duration, fn func(*Info, *v1alpha1.Rollout) (bool, error)) error {
	poll := c.Poll
	if poll <= 0 {
		poll = time.Second
	}
	for {
		in, ro, err := c.Info(ctx, name)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if done, err := fn(in, ro); done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// The actions `meridian demo` takes on its Rollouts, as the CLI's patches of
// the status subresource in a cluster: POST DemoPath/NAMESPACE/NAME/ACTION.
const (
	DemoPromote     = "promote"
	DemoPromoteFull = "promote-full"
	DemoAbort       = "abort"
	DemoRetry       = "retry"
)

// Act asks the demo to take action (DemoPromote, ...) on Rollout name (in
// c.Namespace; empty: the only one of that name), and returns the Rollout
// it acted on.
func (c *DemoClient) Act(ctx context.Context, name, action string) (*v1alpha1.Rollout, error) {
	o, err := c.Objects(ctx)
	if err != nil {
		return nil, err
	}
	_, ro, err := o.Info(c.Namespace, name)
	if err != nil {
		return nil, err
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	u := "http://" + strings.TrimPrefix(c.Address, "http://") + DemoPath + "/" + url.PathEscape(ro.Namespace) + "/" + url.PathEscape(ro.Name) + "/" + url.PathEscape(action)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the demo to %s rollout %s: %w", action, name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("POST %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	return ro, nil
}
