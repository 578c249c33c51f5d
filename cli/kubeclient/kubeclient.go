// Package kubeclient is how the meridian CLI reaches a Kubernetes cluster:
// kubectl's connection flags (--kubeconfig, --context, -n), the pods a user
// names (a pod, a workload, a label selector), and GET requests to a meshed
// pod's proxy admin server through the API server's pod proxy, which needs
// no port-forward and no network path to the pod.
package kubeclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meridian-mesh/meridian/internal/names"
)

// AdminPort is the proxy's admin port when its container does not name one
// (names.AdminPortName).
const AdminPort = 4191

// requestTimeout bounds each request to the API server.
const requestTimeout = 30 * time.Second

// Flags are kubectl's connection flags.
type Flags struct {
	Kubeconfig string // empty: $KUBECONFIG, ~/.kube/config, then the in-cluster config
	Context    string // empty: the current context
	Namespace  string // empty: the context's namespace, else "default"
}

// Register adds --kubeconfig, --context and -n/--namespace to cmd.
func (f *Flags) Register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster config)")
	fs.StringVar(&f.Context, "context", "", "kubeconfig context (default: the current context)")
	fs.StringVarP(&f.Namespace, "namespace", "n", "", "namespace (default: the kubeconfig context's namespace, else default)")
}

// Client is a connection to a cluster and the namespace names resolve in.
type Client struct {
	Kube      kubernetes.Interface
	Namespace string
}

// Connect loads the configuration the flags select and builds a client.
func (f Flags) Connect() (*Client, error) {
	cfg, ns, err := Load(f.Kubeconfig, f.Context, f.Namespace)
	if err != nil {
		return nil, err
	}
	return NewClient(cfg, ns)
}

// Load reads the REST configuration and namespace that kubeconfig
// (empty: $KUBECONFIG, ~/.kube/config, then in-cluster), context (empty:
// the current one) and namespace (empty: the context's, else "default")
// select, as kubectl does.
func Load(kubeconfig, context, namespace string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	overrides.Context.Namespace = namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, "", errors.New("no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster: pass --kubeconfig")
		}
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: namespace: %w", err)
	}
	return cfg, ns, nil
}

// NewClient builds a client from a REST configuration.
func NewClient(cfg *rest.Config, namespace string) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 {
		cfg.Timeout = requestTimeout
	}
	cfg.UserAgent = "meridian"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	return &Client{Kube: cs, Namespace: namespace}, nil
}

// Kinds of object a Ref names.
const (
	KindPod         = "pod"
	KindDeployment  = "deployment"
	KindStatefulSet = "statefulset"
	KindDaemonSet   = "daemonset"
)

// kinds maps what kubectl accepts (short names, plurals) to a Kind.
var kinds = map[string]string{
	"po": KindPod, "pod": KindPod, "pods": KindPod,
	"deploy": KindDeployment, "deployment": KindDeployment, "deployments": KindDeployment,
	"sts": KindStatefulSet, "statefulset": KindStatefulSet, "statefulsets": KindStatefulSet,
	"ds": KindDaemonSet, "daemonset": KindDaemonSet, "daemonsets": KindDaemonSet,
}

// Ref names a pod or a workload.
type Ref struct {
	Kind string // KindPod, KindDeployment, KindStatefulSet or KindDaemonSet
	Name string
}

func (r Ref) String() string { return r.Kind + "/" + r.Name }

// ParseRef reads kubectl's forms: NAME (a pod), pod/NAME, deploy/NAME,
// sts/NAME, ds/NAME (and their long and plural names).
func ParseRef(s string) (Ref, error) {
	kind, name, typed := strings.Cut(s, "/")
	if !typed {
		if s == "" {
			return Ref{}, errors.New("empty name")
		}
		kind, name = KindPod, s
	}
	k, ok := ParseKind(kind)
	if !ok {
		return Ref{}, fmt.Errorf("%q: unknown kind %q (want a pod name, or pod/, deploy/, sts/ or ds/ and a name)", s, kind)
	}
	if name == "" || strings.Contains(name, "/") {
		return Ref{}, fmt.Errorf("%q: want a name after %s/", s, kind)
	}
	return Ref{Kind: k, Name: name}, nil
}

// ParseKind reads a kind as kubectl spells it (po, pods, deploy, sts,
// daemonsets, ...).
func ParseKind(s string) (string, bool) {
	k, ok := kinds[strings.ToLower(s)]
	return k, ok
}

// Pods returns the pods ref names in c.Namespace, sorted by name: the pod
// itself, or a workload's pods, found with the workload's selector.
func (c *Client) Pods(ctx context.Context, ref Ref) ([]corev1.Pod, error) {
	ns := c.Namespace
	notFound := func(err error) error {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s %s/%s not found", ref.Kind, ns, ref.Name)
		}
		return fmt.Errorf("%s %s/%s: %w", ref.Kind, ns, ref.Name, err)
	}
	var sel *metav1.LabelSelector
	switch ref.Kind {
	case KindPod:
		p, err := c.Kube.CoreV1().Pods(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(err)
		}
		return []corev1.Pod{*p}, nil
	case KindDeployment:
		d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(err)
		}
		sel = d.Spec.Selector
	case KindStatefulSet:
		s, err := c.Kube.AppsV1().StatefulSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(err)
		}
		sel = s.Spec.Selector
	case KindDaemonSet:
		d, err := c.Kube.AppsV1().DaemonSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(err)
		}
		sel = d.Spec.Selector
	default:
		return nil, fmt.Errorf("%s: unknown kind", ref)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: selector: %w", ref.Kind, ns, ref.Name, err)
	}
	if s.Empty() {
		// An empty selector matches every pod: never what a workload means.
		return nil, fmt.Errorf("%s %s/%s has an empty selector", ref.Kind, ns, ref.Name)
	}
	pods, err := c.list(ctx, s)
	if err != nil {
		return nil, err
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("%s %s/%s has no pods (selector %s)", ref.Kind, ns, ref.Name, s)
	}
	return pods, nil
}

// PodsBySelector returns the pods of c.Namespace that selector (kubectl's
// -l syntax) matches, sorted by name.
func (c *Client) PodsBySelector(ctx context.Context, selector string) ([]corev1.Pod, error) {
	s, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("selector %q: %w", selector, err)
	}
	pods, err := c.list(ctx, s)
	if err != nil {
		return nil, err
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no pods in namespace %s match %s", c.Namespace, s)
	}
	return pods, nil
}

func (c *Client) list(ctx context.Context, s labels.Selector) ([]corev1.Pod, error) {
	l, err := c.Kube.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
	if err != nil {
		return nil, fmt.Errorf("list pods in %s (%s): %w", c.Namespace, s, err)
	}
	pods := l.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// ProxyAdminPort is the port of pod's proxy admin server: its injected
// proxy's, or a Gateway's pod's gateway proxy's. It fails, saying so, when
// the pod is not meshed.
func ProxyAdminPort(pod *corev1.Pod) (int32, error) {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name != names.ProxyContainerName && c.Name != names.GatewayContainerName {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == names.AdminPortName {
				return p.ContainerPort, nil
			}
		}
		return AdminPort, nil
	}
	return 0, fmt.Errorf("pod %s/%s is not meshed: no %s container; inject it with meridian inject", pod.Namespace, pod.Name, names.ProxyContainerName)
}

// ProxyGet GETs path (e.g. "identity") from pod's proxy admin server
// through the API server's pod proxy
// (/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH).
func (c *Client) ProxyGet(ctx context.Context, pod *corev1.Pod, path string) ([]byte, error) {
	port, err := ProxyAdminPort(pod)
	if err != nil {
		return nil, err
	}
	if pod.Status.Phase != corev1.PodRunning {
		phase := string(pod.Status.Phase)
		if phase == "" {
			phase = "not scheduled yet"
		}
		return nil, fmt.Errorf("pod %s/%s is not running (%s)", pod.Namespace, pod.Name, phase)
	}
	body, err := c.Kube.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(int(port)), path, nil).DoRaw(ctx)
	if err != nil {
		// DoRaw does not decode error bodies: client-go would only say
		// "the server is currently unable to handle the request" (503) or
		// "rejected our request for an unknown reason" (400).
		var se *apierrors.StatusError
		var st metav1.Status
		switch {
		case len(body) == 0 || !errors.As(err, &se) || bytes.HasPrefix(body, []byte("k8s\x00")):
		case json.Unmarshal(body, &st) == nil && st.Kind == "Status":
			// The API server's own answer (no access, no route to the pod).
			err = apierrors.FromObject(&st)
		default:
			// The proxy's answer, which the API server passed on.
			code := int(se.ErrStatus.Code)
			return nil, fmt.Errorf("pod %s/%s: the proxy answered GET :%d/%s with %d %s: %s", pod.Namespace, pod.Name, port, path,
				code, http.StatusText(code), bytes.TrimSpace(body))
		}
		return nil, fmt.Errorf("pod %s/%s: GET :%d/%s through the API server: %w", pod.Namespace, pod.Name, port, path, err)
	}
	return body, nil
}
