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

	"github.com/meridian-mesh/meridian/controlplane/inject"
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
			Hint:        fmt.Sprintf("kubectl describe pod -n NAMESPACE POD; kubectl logs -n NAMESPACE POD -c %s (meshed pods: kubectl get pods %s -o custom-columns=NAME:.metadata.name,PROXY:.metadata.annotations.meridian\\.io/proxy-version)", ProxyContainerName, scope),
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				pods, err := meshedPods(ctx, s)
				if err != nil {
					return err
				}
				if len(pods) == 0 {
					if s.ProxyOnly {
						return Warnf("no meshed pod (annotated %s) %s", ProxyVersionAnnotation, s.where())
					}
					return nil
				}
				var probs []string
				for i := range pods {
					p := &pods[i]
					cs := proxyStatus(p)
					switch {
					case cs == nil:
						probs = append(probs, fmt.Sprintf("pod %s/%s: no status for container %s yet (phase %s)", p.Namespace, p.Name, ProxyContainerName, orDash(string(p.Status.Phase))))
					case !cs.Ready:
						probs = append(probs, fmt.Sprintf("pod %s/%s: %s", p.Namespace, p.Name, containerStatus(cs)))
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
				cp := d.Labels[ControlPlaneVersionKey]
				if cp == "" {
					return fmt.Errorf("cannot tell the control plane's version: deployment %s/%s has no %s label", d.Namespace, d.Name, ControlPlaneVersionKey)
				}
				var probs []string
				for _, p := range pods {
					if v := p.Annotations[ProxyVersionAnnotation]; v != cp {
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
	sec, err := s.Kube.CoreV1().Secrets(s.Namespace).Get(ctx, IssuerSecretName, metav1.GetOptions{})
	if err != nil {
		return Skip(fmt.Sprintf("cannot read the issuer Secret %s/%s: %v", s.Namespace, IssuerSecretName, err))
	}
	chain, err := parseCertsPEM(sec.Data[corev1.TLSCertKey])
	if err != nil {
		return Skip(fmt.Sprintf("issuer Secret %s/%s: tls.crt: %v", s.Namespace, IssuerSecretName, err))
	}
	var probs []string
	for _, p := range pods {
		pem := proxyEnv(&p, inject.EnvTrustAnchors)
		anchors, err := parseCertsPEM([]byte(pem))
		switch {
		case pem == "":
			probs = append(probs, fmt.Sprintf("pod %s/%s: its proxy has no trust anchors ($%s)", p.Namespace, p.Name, inject.EnvTrustAnchors))
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
			if c.Name != ProxyContainerName {
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
			if _, ok := p.Annotations[ProxyVersionAnnotation]; !ok || p.DeletionTimestamp != nil {
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

// proxyStatus finds the proxy's status: among the init containers (it is a
// native sidecar), or the containers (an older injection).
func proxyStatus(p *corev1.Pod) *corev1.ContainerStatus {
	for _, l := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range l {
			if l[i].Name == ProxyContainerName {
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
