// Package provision renders what a Gateway of Meridian's GatewayClass runs
// on: a ServiceAccount (the gateway's mesh identity), a Deployment of
// meridian-proxy in gateway mode, and a Service whose ports are the
// Gateway's listener ports. It is pure: the writer that applies the objects
// (owned by the Gateway, so that deleting the Gateway deletes them) lives
// beside the status writer.
package provision

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/authz"
)

// AnnotationServiceType on a Gateway chooses its Service's type
// (ClusterIP, NodePort or LoadBalancer), over any parameters.
const AnnotationServiceType = "gateway.meridian.io/service-type"

// Keys of a parameters ConfigMap (a GatewayClass's spec.parametersRef, or a
// Gateway's spec.infrastructure.parametersRef, which wins key by key).
const (
	ParamServiceType           = "serviceType"
	ParamExternalTrafficPolicy = "externalTrafficPolicy"
	ParamReplicas              = "replicas"
	ParamMaxConnections        = "maxConnections"
	ParamDefaultInboundPolicy  = "defaultInboundPolicy"
	ParamEventLoop             = "eventLoop"
)

// Params are a gateway's provisioning settings.
type Params struct {
	ServiceType           corev1.ServiceType                  // default LoadBalancer
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy // Cluster or Local; NodePort and LoadBalancer only
	Replicas              int32                               // default 1
	// MaxConnections bounds the connections each listener port holds
	// open (the proxy's --max-connections): 0 the proxy's default, -1
	// no bound.
	MaxConnections int
	// DefaultInboundPolicy governs the admin port (/metrics, /gateway):
	// "" the cluster's default (inject.Config's).
	DefaultInboundPolicy string
	// EventLoop is the proxy's --event-loop: "" its default (on),
	// "true" or "false".
	EventLoop string
}

// Merge returns p with the values set in data (a parameters ConfigMap's
// data) applied, or an error naming the key and what is allowed; where
// says whose parameters they are, for the error.
func (p Params) Merge(data map[string]string, where string) (Params, error) {
	for _, k := range slices.Sorted(maps.Keys(data)) {
		v := data[k]
		switch k {
		case ParamServiceType:
			t, err := serviceType(v)
			if err != nil {
				return p, fmt.Errorf("%s: data.%s: %w", where, k, err)
			}
			p.ServiceType = t
		case ParamExternalTrafficPolicy:
			switch corev1.ServiceExternalTrafficPolicy(v) {
			case corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal:
				p.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(v)
			default:
				return p, fmt.Errorf("%s: data.%s: %q is not Cluster or Local", where, k, v)
			}
		case ParamReplicas:
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 1 || n > 100 {
				return p, fmt.Errorf("%s: data.%s: %q is not a number of replicas from 1 to 100", where, k, v)
			}
			p.Replicas = int32(n)
		case ParamMaxConnections:
			n, err := strconv.Atoi(v)
			if err != nil || n == 0 || n < -1 || n > maxConnectionsCap {
				return p, fmt.Errorf("%s: data.%s: %q is not a number of connections from 1 to %d, or -1 for no bound", where, k, v, maxConnectionsCap)
			}
			p.MaxConnections = n
		case ParamDefaultInboundPolicy:
			if _, err := authz.ParsePolicy(v); err != nil {
				return p, fmt.Errorf("%s: data.%s: %q is not %s", where, k, v, policies)
			}
			p.DefaultInboundPolicy = v
		case ParamEventLoop:
			if v != "true" && v != "false" {
				return p, fmt.Errorf("%s: data.%s: %q is not true or false", where, k, v)
			}
			p.EventLoop = v
		default:
			return p, fmt.Errorf("%s: data.%s: unknown key; the keys are %s, %s, %s, %s, %s and %s", where, k,
				ParamServiceType, ParamExternalTrafficPolicy, ParamReplicas, ParamMaxConnections, ParamDefaultInboundPolicy, ParamEventLoop)
		}
	}
	return p, nil
}

// maxConnectionsCap is the most maxConnections may say: a bound past the
// file descriptors any node gives a process is no bound.
const maxConnectionsCap = 10_000_000

// policies names the default inbound policies allowed, for errors.
const policies = "all-unauthenticated, cluster-unauthenticated, all-authenticated, cluster-authenticated or deny"

// NamespacePolicy is the default inbound policy the Gateway's namespace
// annotates (names.AnnotationDefaultInbound, as for injected pods), "" for
// none; an error names the annotation.
func NamespacePolicy(ns *corev1.Namespace) (string, error) {
	if ns == nil {
		return "", nil
	}
	v, ok := ns.Annotations[names.AnnotationDefaultInbound]
	if !ok {
		return "", nil
	}
	if _, err := authz.ParsePolicy(v); err != nil {
		return "", fmt.Errorf("Namespace %s: metadata.annotations[%s]: %q is not %s", ns.Name, names.AnnotationDefaultInbound, v, policies)
	}
	return v, nil
}

func serviceType(v string) (corev1.ServiceType, error) {
	switch t := corev1.ServiceType(v); t {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		return t, nil
	}
	return "", fmt.Errorf("%q is not ClusterIP, NodePort or LoadBalancer", v)
}

// Objects are what one Gateway runs on.
type Objects struct {
	ServiceAccount *corev1.ServiceAccount
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
	// Addresses are the Gateway's spec.addresses as the Service is given
	// them (pinned on it: its cluster IPs, or its loadBalancerIP).
	Addresses Addresses
}

// Name is the name of the objects of Gateway gw (a DNS label: Gateway names
// may be longer, and then end in a hash of the whole name).
func Name(gw string) string {
	const suffix = "-meridian"
	if n := gw + suffix; len(n) <= 63 {
		return n
	}
	h := sha256.Sum256([]byte(gw))
	return strings.TrimRight(gw[:63-len(suffix)-9], "-.") + "-" + hex.EncodeToString(h[:])[:8] + suffix
}

// selector is the label every object of gw carries and its pods are
// selected by: the Gateway's name, or for a name longer than a label value
// may be, Name(gw).
func selector(gw string) map[string]string {
	if len(gw) > 63 {
		gw = Name(gw)
	}
	return map[string]string{gatewayv1.GatewayNameLabelKey: gw}
}

// Port is a port a ListenerSet attached to the Gateway adds (its
// listener's protocol names the Service port).
type Port struct {
	Port     gatewayv1.PortNumber
	Protocol gatewayv1.ProtocolType
}

// Render returns the objects of gw with params p, its proxies configured
// as cfg says (images, the controller's address and identity, the trust
// anchors); the Service exposes gw's listeners' ports and extra (the
// ports of its ListenerSets' listeners). The objects are owned by gw. An
// error names the field.
func Render(gw *gatewayv1.Gateway, p Params, cfg inject.Config, extra ...Port) (Objects, error) {
	if v, ok := gw.Annotations[AnnotationServiceType]; ok {
		t, err := serviceType(v)
		if err != nil {
			return Objects{}, fmt.Errorf("Gateway %s/%s: metadata.annotations[%s]: %w", gw.Namespace, gw.Name, AnnotationServiceType, err)
		}
		p.ServiceType = t
	}
	if p.ServiceType == "" {
		p.ServiceType = corev1.ServiceTypeLoadBalancer
	}
	if p.Replicas == 0 {
		p.Replicas = 1
	}
	if cfg.AdminPort == 0 {
		cfg.AdminPort = inject.DefaultAdminPort
	}
	if cfg.ProxyUID == 0 {
		cfg.ProxyUID = inject.DefaultProxyUID
	}
	name := Name(gw.Name)
	labels := map[string]string{}
	annotations := map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			labels[string(k)] = string(v)
		}
		for k, v := range inf.Annotations {
			annotations[string(k)] = string(v)
		}
	}
	maps.Copy(labels, selector(gw.Name))
	labels["app.kubernetes.io/name"] = "meridian-gateway"
	labels["app.kubernetes.io/managed-by"] = "meridian"
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: name, Namespace: gw.Namespace,
			Labels: maps.Clone(labels), Annotations: maps.Clone(annotations),
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: gatewayv1.GroupVersion.String(), Kind: "Gateway", Name: gw.Name, UID: gw.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		}
	}

	var svcPorts []corev1.ServicePort
	// Listeners share a port by hostname; a UDP port and a TCP one may
	// share a number (DNS: 53 over both).
	type key struct {
		port gatewayv1.PortNumber
		udp  bool
	}
	seen := map[key]bool{}
	for i, l := range gw.Spec.Listeners {
		if l.Port < 1 || l.Port > 65535 {
			return Objects{}, fmt.Errorf("Gateway %s/%s: spec.listeners[%d].port: %d is not a port (1-65535)", gw.Namespace, gw.Name, i, l.Port)
		}
		k := key{l.Port, l.Protocol == gatewayv1.UDPProtocolType}
		if seen[k] {
			continue
		}
		seen[k] = true
		svcPorts = append(svcPorts, corev1.ServicePort{
			Name:       fmt.Sprintf("%s-%d", strings.ToLower(string(l.Protocol)), l.Port),
			Port:       int32(l.Port),
			TargetPort: intstr.FromInt32(int32(l.Port)),
			Protocol:   serviceProtocol(l.Protocol),
		})
	}
	for _, l := range extra {
		k := key{l.Port, l.Protocol == gatewayv1.UDPProtocolType}
		if l.Port < 1 || seen[k] {
			continue // the Gateway's own listener names a shared port
		}
		seen[k] = true
		svcPorts = append(svcPorts, corev1.ServicePort{
			Name:       fmt.Sprintf("%s-%d", strings.ToLower(string(l.Protocol)), l.Port),
			Port:       int32(l.Port),
			TargetPort: intstr.FromInt32(int32(l.Port)),
			Protocol:   serviceProtocol(l.Protocol),
		})
	}
	slices.SortFunc(svcPorts, func(a, b corev1.ServicePort) int {
		if a.Port != b.Port {
			return int(a.Port - b.Port)
		}
		return strings.Compare(string(a.Protocol), string(b.Protocol))
	})

	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(),
		Spec: corev1.ServiceSpec{
			Type:     p.ServiceType,
			Selector: selector(gw.Name),
			Ports:    svcPorts,
		},
	}
	if p.ServiceType != corev1.ServiceTypeClusterIP {
		svc.Spec.ExternalTrafficPolicy = p.ExternalTrafficPolicy
	}
	addrs, err := addresses(gw, p.ServiceType)
	if err != nil {
		return Objects{}, err
	}
	addrs.pin(svc)

	args := []string{
		"gateway",
		"--gateway-name=" + gw.Namespace + "/" + gw.Name,
		fmt.Sprintf("--admin-addr=0.0.0.0:%d,[::]:%d", cfg.AdminPort, cfg.AdminPort),
		"--destination-addr=" + cfg.ControllerAddr,
		"--identity-trust-domain=" + cfg.TrustDomain,
		"--identity-token-file=" + inject.TokenFile,
	}
	if cfg.ControllerIdentity != "" {
		args = append(args, "--destination-identity="+cfg.ControllerIdentity)
	}
	if cfg.LogLevel != "" {
		args = append(args, "--log-level="+cfg.LogLevel)
	}
	// The admin port follows the default inbound policy: the parameters',
	// else the cluster's, as an injected sidecar's does.
	if policy := cmp.Or(p.DefaultInboundPolicy, cfg.DefaultInboundPolicy); policy != "" {
		args = append(args, "--default-inbound-policy="+policy)
	}
	if p.MaxConnections != 0 {
		args = append(args, "--max-connections="+strconv.Itoa(p.MaxConnections))
	}
	if p.EventLoop != "" {
		args = append(args, "--event-loop="+p.EventLoop)
	}
	if cfg.ClusterNetworks != "" {
		args = append(args, "--cluster-networks="+cfg.ClusterNetworks)
	}
	// Only the admin port is declared: the listener ports follow the
	// snapshot (the Service targets them by number), so a listener added or
	// removed changes no pod template and rolls no gateway pod: a config
	// change drops no connection.
	ports := []corev1.ContainerPort{{Name: names.AdminPortName, ContainerPort: cfg.AdminPort, Protocol: corev1.ProtocolTCP}}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(cfg.AdminPort)}},
			PeriodSeconds:    period,
			FailureThreshold: failures,
			TimeoutSeconds:   1,
		}
	}
	podMeta := meta()
	podMeta.Name, podMeta.Namespace, podMeta.OwnerReferences = "", "", nil
	// The gateway is its own mesh proxy: no sidecar beside it, even in a
	// namespace that asks for injection.
	podMeta.Annotations[names.AnnotationInject] = names.InjectDisabled
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(p.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: selector(gw.Name)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				// A new proxy is ready before an old one stops.
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: podMeta,
				Spec: corev1.PodSpec{
					ServiceAccountName:           name,
					AutomountServiceAccountToken: ptr.To(false),
					// In-flight requests and streams drain after SIGTERM.
					TerminationGracePeriodSeconds: ptr.To[int64](60),
					SecurityContext: &corev1.PodSecurityContext{
						// Listener ports below 1024 without a capability.
						Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}},
					},
					Containers: []corev1.Container{{
						Name:                     names.GatewayContainerName,
						Image:                    cfg.ProxyImage,
						Args:                     args,
						Env:                      []corev1.EnvVar{{Name: names.EnvTrustAnchors, Value: cfg.TrustAnchorsPEM}},
						Ports:                    ports,
						Resources:                cfg.Resources,
						VolumeMounts:             []corev1.VolumeMount{{Name: inject.TokenVolumeName, MountPath: inject.TokenMountPath, ReadOnly: true}},
						StartupProbe:             probe("/live", 1, 120),
						LivenessProbe:            probe("/live", 10, 3),
						ReadinessProbe:           probe("/ready", 2, 3),
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext:          inject.ProxySecurityContext(cfg.ProxyUID),
					}},
					Volumes: []corev1.Volume{inject.TokenVolume()},
				},
			},
		},
	}
	sa := &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   meta(),
		AutomountServiceAccountToken: ptr.To(false),
	}
	return Objects{ServiceAccount: sa, Deployment: dep, Service: svc, Addresses: addrs}, nil
}

// serviceProtocol is the Service port's protocol for a listener's: UDP for
// a UDP listener, TCP for the others. A port number is one protocol (the
// compiler refuses a TCP and a UDP listener on the same number), so the
// first listener of a number decides.
func serviceProtocol(p gatewayv1.ProtocolType) corev1.Protocol {
	if p == gatewayv1.UDPProtocolType {
		return corev1.ProtocolUDP
	}
	return corev1.ProtocolTCP
}
