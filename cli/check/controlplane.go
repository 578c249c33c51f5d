package check

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meridian-mesh/meridian/internal/names"
)

func controlPlaneChecks(o Options) []Check {
	ns := o.Namespace
	describe := fmt.Sprintf("kubectl -n %s describe pods -l %s=%s; kubectl -n %s logs deploy/%s",
		ns, names.LabelName, names.ControllerName, ns, names.ControllerName)
	return []Check{
		{
			Group:       GroupControlPlane,
			Description: "control plane namespace exists",
			Hint:        installCommand,
			Fatal:       true,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				if err := s.needClient(); err != nil {
					return err
				}
				_, err := s.Kube.CoreV1().Namespaces().Get(ctx, s.Namespace, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("namespace %s does not exist (another namespace? pass --controller-namespace)", s.Namespace)
				}
				return err
			},
		},
		{
			Group:       GroupControlPlane,
			Description: "controller Deployment exists",
			Hint:        installCommand,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				_, err := controllerDeployment(ctx, s)
				return err
			},
		},
		{
			Group:       GroupControlPlane,
			Description: "controller pods are ready",
			Hint:        describe,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				d, err := controllerDeployment(ctx, s)
				if err != nil {
					return Skip(err.Error())
				}
				pods, err := controllerPods(ctx, s, d)
				if err != nil {
					return err
				}
				if len(pods) == 0 {
					return fmt.Errorf("no pod of deployment %s/%s yet", s.Namespace, names.ControllerName)
				}
				var probs []string
				for i := range pods {
					if p := &pods[i]; !podReady(p) {
						probs = append(probs, fmt.Sprintf("pod %s is not ready: %s", p.Name, podStatus(p)))
					}
				}
				return joinProblems(probs)
			},
		},
		{
			Group:       GroupControlPlane,
			Description: "destination API has ready endpoints",
			Hint:        describe,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				if err := s.needClient(); err != nil {
					return err
				}
				return serviceReady(ctx, s, s.Namespace, names.ControllerName, DestinationPortName)
			},
		},
		{
			Group:       GroupControlPlane,
			Description: "control plane pods are at the CLI's version",
			Hint:        fmt.Sprintf("upgrade the control plane (%s) or use the CLI of the control plane's version", installCommand),
			Warning:     true,
			Run: func(ctx context.Context, s *State) error {
				d, err := controllerDeployment(ctx, s)
				if err != nil {
					return Skip(err.Error())
				}
				pods, err := controllerPods(ctx, s, d)
				if err != nil {
					return err
				}
				versions := map[string][]string{} // version → pods
				for _, p := range pods {
					v := p.Labels[names.LabelControlPlaneVersion]
					versions[v] = append(versions[v], p.Name)
				}
				if len(pods) == 0 {
					versions[d.Labels[names.LabelControlPlaneVersion]] = []string{"deployment " + d.Name}
				}
				var probs []string
				for _, v := range sortedKeys(versions) {
					if v == s.CLIVersion {
						continue
					}
					shown := v
					if v == "" {
						shown = "an unknown version (no " + names.LabelControlPlaneVersion + " label)"
					}
					probs = append(probs, fmt.Sprintf("%s: control plane is at %s, this CLI is %s", strings.Join(versions[v], ", "), shown, orUnknown(s.CLIVersion)))
				}
				return joinProblems(probs)
			},
		},
	}
}

func orUnknown(v string) string {
	if v == "" {
		return "a development build with no version"
	}
	return v
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// controllerDeployment gets the controller's Deployment.
func controllerDeployment(ctx context.Context, s *State) (*appsv1.Deployment, error) {
	if err := s.needClient(); err != nil {
		return nil, err
	}
	d, err := s.Kube.AppsV1().Deployments(s.Namespace).Get(ctx, names.ControllerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no deployment %s/%s", s.Namespace, names.ControllerName)
	}
	return d, err
}

// controllerPods lists the Deployment's pods that are not being deleted.
func controllerPods(ctx context.Context, s *State, d *appsv1.Deployment) ([]corev1.Pod, error) {
	sel := labels.SelectorFromSet(labels.Set{names.LabelName: names.ControllerName})
	if d.Spec.Selector != nil {
		ls, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return nil, fmt.Errorf("deployment %s/%s: selector: %w", d.Namespace, d.Name, err)
		}
		sel = ls
	}
	list, err := s.Kube.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// podReady reports whether the pod's Ready condition is true.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podStatus describes a pod's phase and its containers, for a failure.
func podStatus(p *corev1.Pod) string {
	parts := []string{"phase " + orDash(string(p.Status.Phase))}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && (c.Reason != "" || c.Message != "") {
			parts = append(parts, fmt.Sprintf("%s: %s", c.Type, strings.TrimSpace(c.Reason+" "+c.Message)))
		}
	}
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	if len(statuses) == 0 {
		parts = append(parts, "no container status yet")
	}
	for _, cs := range statuses {
		parts = append(parts, "container "+containerStatus(&cs))
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// containerStatus describes a container: name, ready, state, restarts.
func containerStatus(cs *corev1.ContainerStatus) string {
	var state string
	switch st := cs.State; {
	case st.Waiting != nil:
		state = "waiting"
		if st.Waiting.Reason != "" {
			state += " (" + strings.TrimSpace(st.Waiting.Reason+" "+st.Waiting.Message) + ")"
		}
	case st.Terminated != nil:
		state = fmt.Sprintf("terminated (%s, exit code %d)", orDash(st.Terminated.Reason), st.Terminated.ExitCode)
	case st.Running != nil:
		state = "running"
	default:
		state = "state unknown"
	}
	ready := "not ready"
	if cs.Ready {
		ready = "ready"
	}
	s := fmt.Sprintf("%s %s, %s", cs.Name, ready, state)
	if cs.RestartCount > 0 {
		s += fmt.Sprintf(", %d restarts", cs.RestartCount)
		if t := cs.LastTerminationState.Terminated; t != nil {
			s += fmt.Sprintf(" (last: %s, exit code %d)", orDash(t.Reason), t.ExitCode)
		}
	}
	return s
}

// serviceReady checks that a Service exists, has the named port, and that
// its EndpointSlices hold a ready endpoint serving that port.
func serviceReady(ctx context.Context, s *State, ns, name, port string) error {
	svc, err := s.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no service %s/%s", ns, name)
	}
	if err != nil {
		return err
	}
	found := false
	for _, p := range svc.Spec.Ports {
		found = found || p.Name == port
	}
	if !found {
		return fmt.Errorf("service %s/%s has no port named %s", ns, name, port)
	}
	slices, err := s.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}).String(),
	})
	if err != nil {
		return err
	}
	ready, notReady := 0, 0
	for _, sl := range slices.Items {
		serves := false
		for _, p := range sl.Ports {
			serves = serves || (p.Name != nil && *p.Name == port)
		}
		if !serves {
			continue
		}
		for _, ep := range sl.Endpoints {
			// A nil Ready is to be read as ready (discovery/v1).
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready++
			} else {
				notReady++
			}
		}
	}
	if ready == 0 {
		return fmt.Errorf("service %s/%s has no ready endpoint for port %s (%d not ready)", ns, name, port, notReady)
	}
	return nil
}
