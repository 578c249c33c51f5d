package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/internal/names"
)

// maxListed bounds the pods a data plane failure names.
const maxListed = 10

func dataPlaneChecks(o Options) []Check {
	var checks []Check
	if o.DataPlaneNamespace != "" {
		checks = append(checks, Check{
			Group:       GroupDataPlane,
			Description: "data plane namespace exists",
			Hint:        "kubectl get namespaces; pass the namespace of the meshed workloads with -n",
			Run: func(ctx context.Context, s *State) error {
				if err := s.needClient(); err != nil {
					return err
				}
				_, err := s.Kube.CoreV1().Namespaces().Get(ctx, s.DataPlaneNamespace, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("namespace %s does not exist", s.DataPlaneNamespace)
				}
				return err
			},
		})
	}
	scope := "-A"
	if o.DataPlaneNamespace != "" {
		scope = "-n " + o.DataPlaneNamespace
	}
	return append(checks,
		Check{
			Group:       GroupDataPlane,
			Description: "data plane proxies are ready",
			Hint:        fmt.Sprintf("kubectl describe pod -n NAMESPACE POD; kubectl logs -n NAMESPACE POD -c %s (meshed pods: kubectl get pods %s -o custom-columns=NAME:.metadata.name,PROXY:.metadata.annotations.meridian\\.io/proxy-version)", names.ProxyContainerName, scope),
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				pods, err := meshedPods(ctx, s)
				if err != nil {
					return err
				}
				if len(pods) == 0 {
					if s.ProxyOnly {
						return Warnf("no meshed pod (annotated %s) %s", names.AnnotationProxyVersion, s.where())
					}
					return nil
				}
				var probs []string
				for i := range pods {
					p := &pods[i]
					cs := proxyStatus(p)
					switch {
					case cs == nil:
						probs = append(probs, fmt.Sprintf("pod %s/%s: no status for container %s yet (phase %s)", p.Namespace, p.Name, names.ProxyContainerName, orDash(string(p.Status.Phase))))
					case !cs.Ready:
						probs = append(probs, fmt.Sprintf("pod %s/%s: %s", p.Namespace, p.Name, containerStatus(cs)))
					}
				}
				return joinProblems(truncate(probs, "pods"))
			},
		},
		Check{
			// A ready proxy is not a ready workload: right after a rollout the
			// application containers may still be pulling or starting, and a
			// check that passes then tells the user to send traffic too soon.
			Group:       GroupDataPlane,
			Description: "data plane pods are ready",
			Hint:        "kubectl describe pod -n NAMESPACE POD; kubectl logs -n NAMESPACE POD -c CONTAINER (the pod's Ready condition: every container ready, native sidecars included)",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				pods, err := meshedPods(ctx, s)
				if err != nil {
					return err
				}
				if len(pods) == 0 {
					return Skip("no meshed pod")
				}
				var probs []string
				for i := range pods {
					if cs := proxyStatus(&pods[i]); cs == nil || !cs.Ready {
						continue // named by "data plane proxies are ready"
					}
					if p := podNotReady(&pods[i]); p != "" {
						probs = append(probs, p)
					}
				}
				return joinProblems(truncate(probs, "pods"))
			},
		},
		Check{
			Group:       GroupDataPlane,
			Description: "data plane proxies are at the control plane's version",
			Hint:        "restart the workloads (kubectl rollout restart deploy -n NAMESPACE NAME): the injector gives new pods the control plane's proxy",
			Warning:     true,
			Run: func(ctx context.Context, s *State) error {
				pods, err := meshedPods(ctx, s)
				if err != nil {
					return err
				}
				if len(pods) == 0 {
					return Skip("no meshed pod")
				}
				d, err := controllerDeployment(ctx, s)
				if err != nil {
					return fmt.Errorf("cannot tell the control plane's version: %w", err)
				}
				cp := d.Labels[names.LabelControlPlaneVersion]
				if cp == "" {
					return fmt.Errorf("cannot tell the control plane's version: deployment %s/%s has no %s label", d.Namespace, d.Name, names.LabelControlPlaneVersion)
				}
				var probs []string
				for _, p := range pods {
					if v := p.Annotations[names.AnnotationProxyVersion]; v != cp {
						probs = append(probs, fmt.Sprintf("pod %s/%s runs proxy %s, the control plane is %s", p.Namespace, p.Name, v, cp))
					}
				}
				return joinProblems(truncate(probs, "pods"))
			},
		},
		Check{
			Group:       GroupDataPlane,
			Description: "data plane proxies trust the identity issuer",
			Hint:        "restart the workloads (kubectl rollout restart deploy -n NAMESPACE NAME): the injector gives new pods the control plane's trust anchors; until then their mutual TLS with proxies certified by the current issuer fails",
			Run:         proxiesTrustIssuer,
		},
	)
}

// proxiesTrustIssuer checks that every meshed pod's proxy was given trust
// anchors that verify the current issuer: after the trust anchors change,
// pods injected before keep the old ones until they are restarted.
func proxiesTrustIssuer(ctx context.Context, s *State) error {
	pods, err := meshedPods(ctx, s)
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return Skip("no meshed pod")
	}
	sec, err := s.Kube.CoreV1().Secrets(s.Namespace).Get(ctx, names.IssuerSecretName, metav1.GetOptions{})
	if err != nil {
		return Skip(fmt.Sprintf("cannot read the issuer Secret %s/%s: %v", s.Namespace, names.IssuerSecretName, err))
	}
	chain, err := parseCertsPEM(sec.Data[corev1.TLSCertKey])
	if err != nil {
		return Skip(fmt.Sprintf("issuer Secret %s/%s: tls.crt: %v", s.Namespace, names.IssuerSecretName, err))
	}
	var probs []string
	for _, p := range pods {
		pem := proxyEnv(&p, names.EnvTrustAnchors)
		anchors, err := parseCertsPEM([]byte(pem))
		switch {
		case pem == "":
			probs = append(probs, fmt.Sprintf("pod %s/%s: its proxy has no trust anchors ($%s)", p.Namespace, p.Name, names.EnvTrustAnchors))
		case err != nil:
			probs = append(probs, fmt.Sprintf("pod %s/%s: its proxy's trust anchors do not parse: %v", p.Namespace, p.Name, err))
		default:
			if _, err := verifyChain(chain[0], chain[1:], anchors, s.now(), "", x509.ExtKeyUsageAny); err != nil {
				probs = append(probs, fmt.Sprintf("pod %s/%s: its proxy's trust anchors (%s) do not verify the issuer %s", p.Namespace, p.Name, certNames(anchors), certName(chain[0])))
			}
		}
	}
	return joinProblems(truncate(probs, "pods"))
}

// proxyEnv is the value of the proxy container's environment variable name.
func proxyEnv(p *corev1.Pod, name string) string {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			if c.Name != names.ProxyContainerName {
				continue
			}
			for _, e := range c.Env {
				if e.Name == name {
					return e.Value
				}
			}
		}
	}
	return ""
}

func certNames(cs []*x509.Certificate) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = certName(c)
	}
	return strings.Join(names, ", ")
}

func (s *State) where() string {
	if s.DataPlaneNamespace != "" {
		return "in namespace " + s.DataPlaneNamespace
	}
	return "in any namespace"
}

// meshedPods lists the pods with the proxy-version annotation, in the data
// plane namespace or all, leaving out the ones being deleted or finished.
func meshedPods(ctx context.Context, s *State) ([]corev1.Pod, error) {
	if err := s.needClient(); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := s.Kube.CoreV1().Pods(s.DataPlaneNamespace).List(ctx, opts)
		if err != nil {
			if apierrors.IsForbidden(err) {
				return nil, fmt.Errorf("cannot list pods %s: %w", s.where(), err)
			}
			return nil, err
		}
		for _, p := range list.Items {
			if _, ok := p.Annotations[names.AnnotationProxyVersion]; !ok || p.DeletionTimestamp != nil {
				continue
			}
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			out = append(out, p)
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// podNotReady says why a pod is not Ready ("" when it is): the containers
// that are not ready (the regular ones and the native sidecars, whose
// readiness counts in the pod's), or the Ready condition when the containers
// are all ready but the pod is not (readiness gates).
func podNotReady(p *corev1.Pod) string {
	var cond *corev1.PodCondition
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			cond = &p.Status.Conditions[i]
		}
	}
	if cond != nil && cond.Status == corev1.ConditionTrue {
		return ""
	}
	sidecar := map[string]bool{}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecar[c.Name] = true
		}
	}
	seen := map[string]bool{}
	var notReady []string
	for _, cs := range p.Status.InitContainerStatuses {
		seen[cs.Name] = true
		if sidecar[cs.Name] && !cs.Ready {
			notReady = append(notReady, containerStatus(&cs))
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		seen[cs.Name] = true
		if !cs.Ready {
			notReady = append(notReady, containerStatus(&cs))
		}
	}
	for _, c := range p.Spec.Containers {
		if !seen[c.Name] {
			notReady = append(notReady, c.Name+" has no status yet")
		}
	}
	where := fmt.Sprintf("pod %s/%s", p.Namespace, p.Name)
	switch {
	case len(notReady) > 0:
		return fmt.Sprintf("%s (phase %s): %s", where, orDash(string(p.Status.Phase)), strings.Join(notReady, "; "))
	case cond == nil:
		return fmt.Sprintf("%s (phase %s): no Ready condition yet", where, orDash(string(p.Status.Phase)))
	default:
		return fmt.Sprintf("%s: not Ready (%s)", where, strings.TrimSpace(orDash(cond.Reason)+" "+cond.Message))
	}
}

// proxyStatus finds the proxy's status: among the init containers (it is a
// native sidecar), or the containers (an older injection).
func proxyStatus(p *corev1.Pod) *corev1.ContainerStatus {
	for _, l := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range l {
			if l[i].Name == names.ProxyContainerName {
				return &l[i]
			}
		}
	}
	return nil
}

// truncate keeps the first maxListed lines and says how many it left out.
func truncate(lines []string, what string) []string {
	if len(lines) <= maxListed {
		return lines
	}
	n := len(lines) - maxListed
	return append(lines[:maxListed:maxListed], fmt.Sprintf("… and %d more %s", n, what))
}
