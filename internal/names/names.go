// Package names is the one place for the names that more than one part of
// Meridian must spell the same way: the annotations and labels on
// Kubernetes objects, the names in an injected pod, the control plane's
// objects, environment variables, and the HTTP headers proxies exchange.
// (Linkerd's pkg/k8s/labels.go has the same shape.) Constants, and the
// ServiceAccount user name's format; the standard library only: the proxy,
// the control plane and the CLI all depend on it.
// docs/kubernetes.md is the user's view of the same list.
package names

import "strings"

// Annotations a user (or the injector) puts on Namespaces, workloads and Pods.
const (
	// AnnotationInject is InjectEnabled or InjectDisabled, on a Namespace,
	// a workload's pod template or a Pod; the pod's value wins.
	AnnotationInject = "meridian.io/inject"
	// AnnotationProxyVersion is set by the injector on the pods it injects;
	// its presence is what "meshed" means to the compilers and check.
	AnnotationProxyVersion = "meridian.io/proxy-version"

	AnnotationSkipInboundPorts  = "config.meridian.io/skip-inbound-ports"
	AnnotationSkipOutboundPorts = "config.meridian.io/skip-outbound-ports"
	// AnnotationOpaquePorts lists ports (numbers, ranges "4000-4010", or
	// port names) whose traffic is never protocol-detected. On a Service it
	// names service ports; on a Pod, container ports; on a Namespace it is
	// the default for both.
	AnnotationOpaquePorts        = "config.meridian.io/opaque-ports"
	AnnotationProxyCPURequest    = "config.meridian.io/proxy-cpu-request"
	AnnotationProxyCPULimit      = "config.meridian.io/proxy-cpu-limit"
	AnnotationProxyMemoryRequest = "config.meridian.io/proxy-memory-request"
	AnnotationProxyMemoryLimit   = "config.meridian.io/proxy-memory-limit"
	AnnotationProxyLogLevel      = "config.meridian.io/proxy-log-level"
	AnnotationProxyMaxInFlight   = "config.meridian.io/proxy-max-in-flight"
	AnnotationDefaultInbound     = "config.meridian.io/default-inbound-policy"

	// AnnotationCredentialSHA256 and AnnotationServices declare a local-mode
	// workload on a Pod of the store directory: the SHA-256 of the
	// credential its proxy registers with, and the services it may serve.
	AnnotationCredentialSHA256 = "local.meridian.io/credential-sha256"
	AnnotationServices         = "local.meridian.io/services"

	// InjectEnabled and InjectDisabled are AnnotationInject's values.
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"
)

// Labels.
const (
	// LabelControlPlaneVersion is on the controller's Deployment and pods.
	LabelControlPlaneVersion = "meridian.io/control-plane-version"
	LabelName                = "app.kubernetes.io/name"
	LabelPartOf              = "app.kubernetes.io/part-of"
	// PartOf is LabelPartOf's value on the objects Meridian creates.
	PartOf = "meridian"
)

// Names in an injected pod.
const (
	ProxyContainerName = "meridian-proxy"
	// GatewayContainerName is the gateway proxy's container in a Gateway's
	// pods (controlplane/gateway/provision): a proxy too, with the same
	// admin port.
	GatewayContainerName = "meridian-gateway"
	InitContainerName    = "meridian-init"
	// InboundPortName names the proxy's inbound port (port names have at
	// most 15 characters: "meridian-inbound" is refused).
	InboundPortName = "meridian-proxy"
	AdminPortName   = "meridian-admin"
	// EnvTrustAnchors holds the trust anchors' PEM in the proxy's
	// environment when they are not in a file.
	EnvTrustAnchors = "MERIDIAN_PROXY_TRUST_ANCHORS"
	// TokenAudience is the audience of the projected ServiceAccount token a
	// proxy presents to the identity service; any other is refused.
	TokenAudience = "identity.meridian.io"
)

// The control plane's objects (docs/kubernetes.md), which the chart, the
// controller, the injector and `meridian check` must agree on.
const (
	ControllerName    = "meridian-controller" // Deployment, ServiceAccount, Service
	IssuerSecretName  = "meridian-identity-issuer"
	WebhookSecretName = "meridian-proxy-injector-tls"
	WebhookConfigName = "meridian-proxy-injector"
	WebhookName       = "inject.meridian.io"
	// GatewayController is the controllerName of Meridian's GatewayClasses:
	// the controller serves their Gateways, `meridian check` checks them.
	GatewayController = "meridian.io/gateway-controller"
)

// HTTP headers between proxies, and from a proxy to its application.
const (
	// HeaderDstOverride names the authority to route to instead of Host.
	HeaderDstOverride = "Meridian-Dst-Override"
	// HeaderOrigProto carries an HTTP/1 request's protocol across a meshed
	// HTTP/2 hop.
	HeaderOrigProto = "Meridian-Orig-Proto"
	// HeaderHop marks a request that already went out through a proxy.
	HeaderHop = "Meridian-Hop"
	// HeaderProxyError says why a proxy, not the application, answered.
	HeaderProxyError = "Meridian-Proxy-Error"
	// HeaderExpect carries a client's "Expect: 100-continue" across the
	// HTTP/2 hop between two proxies, which Go's HTTP/2 server consumes.
	HeaderExpect = "Meridian-Expect"
	// HeaderClientID carries, to the application, the SPIFFE ID of the
	// meshed client that sent the request over mTLS.
	HeaderClientID = "Meridian-Client-Id"
)

// serviceAccountPrefix starts the user name of every ServiceAccount token.
const serviceAccountPrefix = "system:serviceaccount:"

// ServiceAccountUser is the user name Kubernetes gives the tokens of
// ServiceAccount namespace/name: TokenReview's username, and the sub claim
// of a projected token.
func ServiceAccountUser(namespace, name string) string {
	return serviceAccountPrefix + namespace + ":" + name
}

// ParseServiceAccountUser is ServiceAccountUser's inverse. ok is false for
// any other user (a node, a person) and for an empty or ':'-holding
// namespace or name, which Kubernetes never issues.
func ParseServiceAccountUser(user string) (namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(user, serviceAccountPrefix)
	if !found {
		return "", "", false
	}
	namespace, name, found = strings.Cut(rest, ":")
	if !found || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}
