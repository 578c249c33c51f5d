// Package inject adds Meridian's proxy to a pod, and takes it away again.
//
// Pod and Uninject are pure functions over a pod's metadata and spec: the
// admission webhook (package webhook) runs them on pods being created, and
// `meridian inject --manual` / `meridian uninject` on the pod templates of
// workload manifests. What they add is the contract in docs/kubernetes.md:
// the init container meridian-init (iptables), the native sidecar
// meridian-proxy, the projected token volume and the proxy-version
// annotation.
package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/ports"
	"github.com/meridian-mesh/meridian/proxy/authz"
)

// Names in the injected pod; the names other parts share (annotations,
// containers, ports) are in internal/names.
const (
	TokenVolumeName = "meridian-identity-token"
	TokenMountPath  = "/var/run/meridian/identity/token"
	TokenFile       = TokenMountPath + "/token"
	// TokenExpirationSeconds is the projected token's lifetime; the kubelet
	// refreshes it at 80%.
	TokenExpirationSeconds = 86400
)

// Defaults of Config's zero values, and the images' repositories.
const (
	DefaultProxyUID     = 2102
	DefaultOutboundPort = 4140
	DefaultInboundPort  = 4143
	DefaultAdminPort    = 4191
	// ProxyInitSkipPort is always skipped inbound, with the admin port
	// (Linkerd's tap port: kept out of the redirect for compatibility).
	ProxyInitSkipPort = 4190
	DefaultLogLevel   = "info"
	// ControllerPort is the controller Service's grpc port (destination and
	// identity APIs).
	ControllerPort = 8086

	ProxyImageRepo     = "ghcr.io/meridian-mesh/proxy"
	ProxyInitImageRepo = "ghcr.io/meridian-mesh/proxy-init"
)

// ControllerIdentity is the SPIFFE ID of the chart's controller: its
// service account meridian-controller in namespace.
func ControllerIdentity(trustDomain, namespace string) string {
	if trustDomain == "" {
		trustDomain = compile.DefaultTrustDomain
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + names.ControllerName
}

// ControllerAddr is the address proxies dial:
// <service>.<namespace>.svc.<clusterDomain>:8086.
func ControllerAddr(service, namespace, clusterDomain string) string {
	if service == "" {
		service = names.ControllerName
	}
	if clusterDomain == "" {
		clusterDomain = compile.DefaultClusterDomain
	}
	return fmt.Sprintf("%s.%s.svc.%s:%d", service, namespace, clusterDomain, ControllerPort)
}

// Config is what Pod injects. Zero ports, uid and log level take the
// defaults above; the images, the controller address and the trust anchors
// are required.
type Config struct {
	ProxyImage     string // e.g. ghcr.io/meridian-mesh/proxy:v1.2.3
	ProxyInitImage string // e.g. ghcr.io/meridian-mesh/proxy-init:v1.2.3
	// ProxyVersion is written to the meridian.io/proxy-version annotation.
	ProxyVersion string
	// ControllerAddr is the controller's destination and identity API,
	// host:port (see ControllerAddr).
	ControllerAddr string
	// ControllerIdentity is the SPIFFE ID the controller's API presents
	// (its --api-identity); set, proxies reach it over TLS and verify it.
	ControllerIdentity string
	TrustDomain        string // default cluster.local
	// TrustAnchorsPEM are the identity trust anchors, given to the proxy
	// in $MERIDIAN_PROXY_TRUST_ANCHORS.
	TrustAnchorsPEM string
	// Resources are the proxy's default resources; the proxy-cpu-* and
	// proxy-memory-* annotations override them one by one.
	Resources corev1.ResourceRequirements
	LogLevel  string // default info
	ProxyUID  int64  // default 2102
	// DefaultInboundPolicy is the proxies' default inbound policy unless
	// the pod or its namespace says otherwise (proxy/authz; empty:
	// all-unauthenticated).
	DefaultInboundPolicy string
	// ClusterNetworks are the cluster's pod and node CIDRs, for the
	// cluster-* policies (empty: the proxy's default, the private ranges).
	ClusterNetworks string

	OutboundPort, InboundPort, AdminPort int32 // default 4140, 4143, 4191
}

// DefaultConfig is the configuration of a control plane of version in
// namespace: the images tagged with version, the controller's address in
// cluster.local. The trust anchors are left to the caller.
func DefaultConfig(version, namespace string) Config {
	return Config{
		ProxyImage:     ProxyImageRepo + ":" + version,
		ProxyInitImage: ProxyInitImageRepo + ":" + version,
		ProxyVersion:   version,
		ControllerAddr: ControllerAddr("", namespace, ""),
		TrustDomain:    compile.DefaultTrustDomain,
	}
}

func (c Config) withDefaults() Config {
	if c.TrustDomain == "" {
		c.TrustDomain = compile.DefaultTrustDomain
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.ProxyUID == 0 {
		c.ProxyUID = DefaultProxyUID
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.AdminPort == 0 {
		c.AdminPort = DefaultAdminPort
	}
	return c
}

// Validate reports what is missing or wrong in c.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.ProxyImage == "" {
		errs = append(errs, errors.New("no proxy image"))
	}
	if c.ProxyInitImage == "" {
		errs = append(errs, errors.New("no proxy-init image"))
	}
	if c.ProxyVersion == "" {
		errs = append(errs, errors.New("no proxy version"))
	}
	if c.ControllerAddr == "" {
		errs = append(errs, errors.New("no controller address"))
	}
	if !strings.Contains(c.TrustAnchorsPEM, "-----BEGIN CERTIFICATE-----") {
		errs = append(errs, errors.New("no trust anchors (PEM certificates)"))
	}
	if !validLogLevel(c.LogLevel) {
		errs = append(errs, fmt.Errorf("log level %q: use debug, info, warn or error", c.LogLevel))
	}
	if c.ProxyUID < 0 {
		errs = append(errs, fmt.Errorf("proxy uid %d is negative", c.ProxyUID))
	}
	if c.DefaultInboundPolicy != "" {
		if _, err := authz.ParsePolicy(c.DefaultInboundPolicy); err != nil {
			errs = append(errs, fmt.Errorf("default inbound policy: %w", err))
		}
	}
	for _, n := range strings.Split(c.ClusterNetworks, ",") {
		if n = strings.TrimSpace(n); n != "" {
			if _, err := netip.ParsePrefix(n); err != nil {
				errs = append(errs, fmt.Errorf("cluster networks: %q is not a CIDR (like 10.0.0.0/8)", n))
			}
		}
	}
	for _, p := range []int32{c.OutboundPort, c.InboundPort, c.AdminPort} {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("port %d is not within 1-65535", p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("inject config: %w", err)
	}
	return nil
}

// Why Pod did not inject (Report.Skipped).
const (
	SkipNotEnabled      = "not enabled"            // no meridian.io/inject: enabled on the pod or its namespace
	SkipDisabled        = "disabled by annotation" // meridian.io/inject: disabled
	SkipHostNetwork     = "hostNetwork"            // the proxy would capture the node's traffic
	SkipAlreadyInjected = "already injected"
)

// Report says what Pod did.
type Report struct {
	// Injected is true when Pod added the proxy.
	Injected bool
	// Skipped says why it did not (one of the Skip constants).
	Skipped string
}

func (r Report) String() string {
	if r.Injected {
		return "injected"
	}
	return "skipped: " + r.Skipped
}

// Injected reports whether the pod already has any part of the proxy: an
// init container or container named meridian-init or meridian-proxy.
func Injected(spec *corev1.PodSpec) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if c.Name == names.InitContainerName || c.Name == names.ProxyContainerName {
				return true
			}
		}
	}
	return false
}

// Requested reports whether injection is asked for: the pod's
// meridian.io/inject annotation, else its namespace's, is "enabled". An
// annotation with another value than enabled or disabled is an error.
func Requested(podAnnotations, nsAnnotations map[string]string) (enabled bool, skipped string, err error) {
	v, where, ok := lookup(names.AnnotationInject, podAnnotations, nsAnnotations)
	if !ok {
		return false, SkipNotEnabled, nil
	}
	switch v {
	case names.InjectEnabled:
		return true, "", nil
	case names.InjectDisabled:
		return false, SkipDisabled, nil
	}
	return false, "", badValue(names.AnnotationInject, v, where, "use enabled or disabled")
}

// Pod injects the proxy into the pod described by meta and spec, in place,
// when its annotations or its namespace's ask for it. It returns whether it
// changed anything and a report that says why not. A pod that asks for
// injection with a bad config.meridian.io/* annotation value is left
// unchanged and gives an error naming the annotation, the value and what
// is allowed.
//
// Pod is idempotent: a pod that already has the proxy is skipped.
func Pod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, nsAnnotations map[string]string, cfg Config) (bool, Report, error) {
	enabled, skipped, err := Requested(meta.Annotations, nsAnnotations)
	if err != nil {
		return false, Report{}, err
	}
	if !enabled {
		return false, Report{Skipped: skipped}, nil
	}
	if Injected(spec) {
		return false, Report{Skipped: SkipAlreadyInjected}, nil
	}
	if spec.HostNetwork {
		return false, Report{Skipped: SkipHostNetwork}, nil
	}
	if err := cfg.Validate(); err != nil {
		return false, Report{}, err
	}
	cfg = cfg.withDefaults()
	s, err := settingsFor(meta.Annotations, nsAnnotations, spec, cfg)
	if err != nil {
		return false, Report{}, err
	}

	init := []corev1.Container{initContainer(cfg, s), proxyContainer(cfg, s)}
	spec.InitContainers = append(init, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes, TokenVolume())
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[names.AnnotationProxyVersion] = cfg.ProxyVersion
	return true, Report{Injected: true}, nil
}

// Uninject removes what Pod added (and a meridian-proxy among the regular
// containers, the way older injectors added it), in place. It leaves the
// meridian.io/inject annotation alone. It returns whether it changed
// anything.
func Uninject(meta *metav1.ObjectMeta, spec *corev1.PodSpec) bool {
	changed := false
	ours := func(c corev1.Container) bool {
		if c.Name == names.InitContainerName || c.Name == names.ProxyContainerName {
			changed = true
			return true
		}
		return false
	}
	spec.InitContainers = slices.DeleteFunc(spec.InitContainers, ours)
	spec.Containers = slices.DeleteFunc(spec.Containers, ours)
	spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool {
		if v.Name == TokenVolumeName {
			changed = true
			return true
		}
		return false
	})
	if len(spec.InitContainers) == 0 {
		spec.InitContainers = nil
	}
	if len(spec.Volumes) == 0 {
		spec.Volumes = nil
	}
	if _, ok := meta.Annotations[names.AnnotationProxyVersion]; ok {
		delete(meta.Annotations, names.AnnotationProxyVersion)
		changed = true
		if len(meta.Annotations) == 0 {
			meta.Annotations = nil
		}
	}
	return changed
}

// settings are a pod's effective config.meridian.io/* values.
type settings struct {
	skipInbound  []string // "25", "4000-4010"
	skipOutbound []string
	opaque       []uint16 // expanded: the proxy takes single ports
	resources    corev1.ResourceRequirements
	logLevel     string
	maxInFlight  string   // empty: the proxy's default
	policy       string   // empty: the proxy's default
	probes       []string // the application's HTTP probes: PORT/PATH
}

func settingsFor(podAnn, nsAnn map[string]string, spec *corev1.PodSpec, cfg Config) (settings, error) {
	s := settings{logLevel: cfg.LogLevel, resources: *cfg.Resources.DeepCopy(), policy: cfg.DefaultInboundPolicy, probes: httpProbes(spec)}
	var errs []error
	if v, where, ok := lookup(names.AnnotationSkipInboundPorts, podAnn, nsAnn); ok {
		rs, err := parsePortRanges(names.AnnotationSkipInboundPorts, v, where, nil)
		errs = append(errs, err)
		s.skipInbound = formatRanges(rs)
	}
	if v, where, ok := lookup(names.AnnotationSkipOutboundPorts, podAnn, nsAnn); ok {
		rs, err := parsePortRanges(names.AnnotationSkipOutboundPorts, v, where, nil)
		errs = append(errs, err)
		s.skipOutbound = formatRanges(rs)
	}
	if v, where, ok := lookup(names.AnnotationOpaquePorts, podAnn, nsAnn); ok {
		rs, err := parsePortRanges(names.AnnotationOpaquePorts, v, where, containerPorts(spec))
		errs = append(errs, err)
		if err == nil {
			s.opaque, err = expandRanges(names.AnnotationOpaquePorts, v, where, rs)
			errs = append(errs, err)
		}
	}
	if v, where, ok := lookup(names.AnnotationDefaultInbound, podAnn, nsAnn); ok {
		if _, err := authz.ParsePolicy(v); err == nil {
			s.policy = v
		} else {
			errs = append(errs, badValue(names.AnnotationDefaultInbound, v, where, "use all-unauthenticated, cluster-unauthenticated, all-authenticated, cluster-authenticated or deny"))
		}
	}
	if v, where, ok := lookup(names.AnnotationProxyMaxInFlight, podAnn, nsAnn); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			s.maxInFlight = strconv.Itoa(n)
		} else {
			errs = append(errs, badValue(names.AnnotationProxyMaxInFlight, v, where, "use a positive number of requests, e.g. 10000"))
		}
	}
	if v, where, ok := lookup(names.AnnotationProxyLogLevel, podAnn, nsAnn); ok {
		if validLogLevel(v) {
			s.logLevel = v
		} else {
			errs = append(errs, badValue(names.AnnotationProxyLogLevel, v, where, "use debug, info, warn or error"))
		}
	}
	for _, q := range []struct {
		ann  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{names.AnnotationProxyCPURequest, &s.resources.Requests, corev1.ResourceCPU},
		{names.AnnotationProxyCPULimit, &s.resources.Limits, corev1.ResourceCPU},
		{names.AnnotationProxyMemoryRequest, &s.resources.Requests, corev1.ResourceMemory},
		{names.AnnotationProxyMemoryLimit, &s.resources.Limits, corev1.ResourceMemory},
	} {
		v, where, ok := lookup(q.ann, podAnn, nsAnn)
		if !ok {
			continue
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil || qty.Sign() < 0 {
			errs = append(errs, badValue(q.ann, v, where, "use a non-negative Kubernetes quantity, e.g. 100m or 0.5 (CPU), 64Mi or 1Gi (memory)"))
			continue
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = qty
	}
	for _, r := range []struct {
		name       corev1.ResourceName
		req, limit string
	}{
		{corev1.ResourceCPU, names.AnnotationProxyCPURequest, names.AnnotationProxyCPULimit},
		{corev1.ResourceMemory, names.AnnotationProxyMemoryRequest, names.AnnotationProxyMemoryLimit},
	} {
		req, okr := s.resources.Requests[r.name]
		lim, okl := s.resources.Limits[r.name]
		if okr && okl && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("the proxy's %s request %s exceeds its limit %s (annotations %s and %s)", r.name, req.String(), lim.String(), r.req, r.limit))
		}
	}
	return s, errors.Join(errs...)
}

// lookup is the pod's annotation, else the namespace's.
func lookup(key string, pod, ns map[string]string) (v, where string, ok bool) {
	if v, ok := pod[key]; ok {
		return strings.TrimSpace(v), "the pod", true
	}
	if v, ok := ns[key]; ok {
		return strings.TrimSpace(v), "the namespace", true
	}
	return "", "", false
}

func badValue(ann, v, where, allowed string) error {
	return fmt.Errorf("annotation %s: %q (on %s): %s", ann, v, where, allowed)
}

func validLogLevel(v string) bool {
	switch v {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

// parsePortRanges reads "25,3306,4000-4010" (internal/ports' grammar). With
// names non-nil, items that are not ports are container port names, looked
// up there.
func parsePortRanges(ann, v, where string, names map[string]uint16) ([]ports.Range, error) {
	allowed := "use comma-separated ports (1-65535) and ranges such as 4000-4010"
	if names != nil {
		allowed = "use comma-separated ports (1-65535), ranges such as 4000-4010, and names of the pod's container ports"
	}
	var rs []ports.Range
	for _, item := range ports.Items(v) {
		r, err := ports.ParseRange(item)
		switch {
		case err == nil:
			rs = append(rs, r)
			continue
		case strings.Contains(item, "-"):
			return nil, badValue(ann, v, where, fmt.Sprintf("%q is not a range <low>-<high> within 1-65535; %s", item, allowed))
		}
		if p, ok := names[item]; ok {
			rs = append(rs, ports.Range{First: p, Last: p})
			continue
		}
		if names != nil && item[0] >= 'a' && item[0] <= 'z' {
			return nil, badValue(ann, v, where, fmt.Sprintf("%q names no container port of the pod; %s", item, allowed))
		}
		return nil, badValue(ann, v, where, fmt.Sprintf("%q is not a port; %s", item, allowed))
	}
	return rs, nil
}

func formatRanges(rs []ports.Range) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return out
}

// maxOpaquePorts bounds the expansion of opaque port ranges: the proxy's
// --opaque-ports takes single ports.
const maxOpaquePorts = 1024

func expandRanges(ann, v, where string, rs []ports.Range) ([]uint16, error) {
	var out []uint16
	for _, r := range rs {
		for p := int(r.First); p <= int(r.Last); p++ {
			if !slices.Contains(out, uint16(p)) {
				out = append(out, uint16(p))
			}
			if len(out) > maxOpaquePorts {
				return nil, badValue(ann, v, where, fmt.Sprintf("more than %d ports; list fewer", maxOpaquePorts))
			}
		}
	}
	return out, nil
}

// containerPorts maps the names of the pod's container ports to numbers.
// grpcHealthPath is the method a kubelet gRPC probe calls.
const grpcHealthPath = "/grpc.health.v1.Health/Check"

// httpProbes are the application containers' HTTP and gRPC probes, as
// PORT/PATH (named ports resolved; the query string is not part of the
// path the proxy compares).
func httpProbes(spec *corev1.PodSpec) []string {
	named := containerPorts(spec)
	var out []string
	add := func(port int, path string) {
		if p := strconv.Itoa(port) + path; !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, c := range spec.Containers {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr != nil && pr.GRPC != nil && pr.GRPC.Port > 0 && pr.GRPC.Port <= 65535 {
				add(int(pr.GRPC.Port), grpcHealthPath)
			}
			if pr == nil || pr.HTTPGet == nil {
				continue
			}
			port := pr.HTTPGet.Port.IntValue()
			if pr.HTTPGet.Port.Type == intstr.String {
				port = int(named[pr.HTTPGet.Port.StrVal])
			}
			path, _, _ := strings.Cut(pr.HTTPGet.Path, "?")
			if port <= 0 || port > 65535 || strings.Contains(path, ",") {
				continue
			}
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			add(port, path)
		}
	}
	return out
}

func containerPorts(spec *corev1.PodSpec) map[string]uint16 {
	m := map[string]uint16{}
	for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.Name != "" && p.ContainerPort > 0 && p.ContainerPort <= 65535 {
					if _, dup := m[p.Name]; !dup {
						m[p.Name] = uint16(p.ContainerPort)
					}
				}
			}
		}
	}
	return m
}

func initContainer(cfg Config, s settings) corev1.Container {
	skipIn := []string{strconv.Itoa(ProxyInitSkipPort), strconv.Itoa(int(cfg.AdminPort))}
	for _, p := range s.skipInbound {
		if !slices.Contains(skipIn, p) {
			skipIn = append(skipIn, p)
		}
	}
	args := []string{
		fmt.Sprintf("--inbound-port=%d", cfg.InboundPort),
		fmt.Sprintf("--outbound-port=%d", cfg.OutboundPort),
		fmt.Sprintf("--proxy-uid=%d", cfg.ProxyUID),
		"--skip-inbound-ports=" + strings.Join(skipIn, ","),
	}
	if len(s.skipOutbound) > 0 {
		args = append(args, "--skip-outbound-ports="+strings.Join(s.skipOutbound, ","))
	}
	return corev1.Container{
		Name:  names.InitContainerName,
		Image: cfg.ProxyInitImage,
		Args:  args,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("10Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func proxyContainer(cfg Config, s settings) corev1.Container {
	args := []string{
		// Both families: meridian-init redirects IPv6 too, and the kubelet
		// probes an IPv6 pod IP on IPv6. The proxy skips the IPv6 addresses
		// in a pod without IPv6.
		fmt.Sprintf("--outbound-addr=127.0.0.1:%d,[::1]:%d", cfg.OutboundPort, cfg.OutboundPort),
		fmt.Sprintf("--inbound-addr=0.0.0.0:%d,[::]:%d", cfg.InboundPort, cfg.InboundPort),
		fmt.Sprintf("--admin-addr=0.0.0.0:%d,[::]:%d", cfg.AdminPort, cfg.AdminPort),
		"--destination-addr=" + cfg.ControllerAddr,
		"--identity-trust-domain=" + cfg.TrustDomain,
		"--identity-token-file=" + TokenFile,
	}
	if cfg.ControllerIdentity != "" {
		args = append(args, "--destination-identity="+cfg.ControllerIdentity)
	}
	if len(s.opaque) > 0 {
		ps := make([]string, len(s.opaque))
		for i, p := range s.opaque {
			ps[i] = strconv.Itoa(int(p))
		}
		args = append(args, "--opaque-ports="+strings.Join(ps, ","))
	}
	if s.maxInFlight != "" {
		args = append(args, "--max-in-flight="+s.maxInFlight)
	}
	if s.policy != "" {
		args = append(args, "--default-inbound-policy="+s.policy)
	}
	if cfg.ClusterNetworks != "" {
		args = append(args, "--cluster-networks="+cfg.ClusterNetworks)
	}
	if len(s.probes) > 0 {
		// Allowed whatever the policy: the kubelet probes from the node,
		// without mTLS.
		args = append(args, "--probe-paths="+strings.Join(s.probes, ","))
	}
	args = append(args, "--log-level="+s.logLevel)
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(cfg.AdminPort),
			}},
			PeriodSeconds:    period,
			FailureThreshold: failures,
			TimeoutSeconds:   1,
		}
	}
	var res corev1.ResourceRequirements
	if len(s.resources.Requests) > 0 || len(s.resources.Limits) > 0 {
		res = s.resources
	}
	env := []corev1.EnvVar{{Name: names.EnvTrustAnchors, Value: cfg.TrustAnchorsPEM}}
	if _, ok := res.Limits[corev1.ResourceMemory]; ok {
		// The Go runtime's soft limit, so the proxy collects garbage
		// before the kernel kills it.
		env = append(env, corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
			ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: names.ProxyContainerName, Resource: "limits.memory"},
		}})
	}
	return corev1.Container{
		Name:          names.ProxyContainerName,
		Image:         cfg.ProxyImage,
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Args:          args,
		Env:           env,
		Ports: []corev1.ContainerPort{
			{Name: names.InboundPortName, ContainerPort: cfg.InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: names.AdminPortName, ContainerPort: cfg.AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Resources:    res,
		VolumeMounts: []corev1.VolumeMount{{Name: TokenVolumeName, MountPath: TokenMountPath, ReadOnly: true}},
		// The startup probe holds the application back until the proxy
		// listens (up to two minutes); readiness needs a certificate and
		// the control plane.
		StartupProbe:             probe("/live", 1, 120),
		LivenessProbe:            probe("/live", 10, 3),
		ReadinessProbe:           probe("/ready", 2, 3),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext:          ProxySecurityContext(cfg.ProxyUID),
	}
}

// ProxySecurityContext is every proxy container's (the sidecar's and the
// gateway's): user uid, no privilege, a read-only root, no capabilities,
// the runtime's seccomp profile.
func ProxySecurityContext(uid int64) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                ptr.To(uid),
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// TokenVolume is the projected service-account token for the identity
// API (audience names.TokenAudience) that proxies mount at TokenMountPath.
func TokenVolume() corev1.Volume {
	return corev1.Volume{
		Name: TokenVolumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          names.TokenAudience,
				ExpirationSeconds: ptr.To[int64](TokenExpirationSeconds),
				Path:              "token",
			}}},
		}},
	}
}
