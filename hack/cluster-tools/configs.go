package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Addresses. Pods and services live in 198.18.0.0/15 (RFC 2544's benchmark
// range: neither private nor routed), so nothing here can be confused with a
// real network; an iptables guard keeps pod traffic inside that range.
const (
	nodeName     = "meridian-node"
	bridgeName   = "mrdn0"
	nodeIP       = "198.19.0.1" // the bridge's address: the node's InternalIP and the pods' gateway
	podCIDR      = "198.19.0.0/16"
	serviceCIDR  = "198.18.0.0/16"
	clusterCIDR  = "198.18.0.0/15" // pods and services: all that pod traffic may reach
	apiServiceIP = "198.18.0.1"
	dnsServiceIP = "198.18.0.10"
	apiPort      = 6443
	etcdPort     = 2379
	etcdPeerPort = 2380

	pauseImage = "meridian.local/pause:v1"
)

func corednsImage(version string) string { return "meridian.local/coredns:" + version }

// Ports the node listens on; `up` checks they are free.
var nodePorts = []int{apiPort, etcdPort, etcdPeerPort, 10248, 10249, 10250, 10256, 10257, 10259}

func (c *config) containerdSocket() string { return c.path("containerd", "containerd.sock") }

// writeConfigs writes every component's configuration under the work dir.
func (c *config) writeConfigs() error {
	files := map[string]string{
		"containerd/config.toml":         c.containerdConfig(),
		"cni/net.d/10-meridian.conflist": c.cniConfig(),
		"config/kubelet.yaml":            c.kubeletConfig(),
		"config/kube-proxy.yaml":         c.kubeProxyConfig(),
		"config/coredns.yaml":            corednsManifest(corednsImage(c.corednsVersion)),
		"config/resolv.conf":             "# meridian-cluster: pods with dnsPolicy Default get no upstream resolver (nothing leaves this machine)\n",
		"config/scheduler.yaml":          c.schedulerConfig(),
	}
	for rel, content := range files {
		p := c.path(rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for name, cert := range map[string]string{
		"admin": "admin", "controller-manager": "controller-manager", "scheduler": "scheduler",
		"kubelet": "kubelet-client", "kube-proxy": "kube-proxy",
	} {
		p := c.path("kubeconfigs", name+".kubeconfig")
		if name == "admin" {
			p = c.kubeconfig()
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := c.writeKubeconfig(p, cert); err != nil {
			return err
		}
	}
	return nil
}

// containerdConfig: containerd with its own root, state and socket under the
// work dir, so it neither needs nor disturbs a system containerd.
func (c *config) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # These machines lack CAP_SYS_RESOURCE: without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerdSocket(), c.containerdSocket()+".ttrpc",
		c.path("containerd", "opt"), pauseImage, c.path("cni", "net.d"))
}

func (c *config) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "meridian",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, bridgeName, c.path("cni", "ipam"), podCIDR, nodeIP)
}

func (c *config) kubeletConfig() string {
	pki := c.path("pki")
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %[2]s/kubelet.crt
tlsPrivateKeyFile: %[2]s/kubelet.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[2]s/ca.crt
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[3]s
cgroupDriver: cgroupfs
# The host's cgroups are v1.
failCgroupV1: false
failSwapOn: false
clusterDNS: [%[4]s]
clusterDomain: cluster.local
resolvConf: %[5]s
podLogsDir: %[6]s
volumePluginDir: %[7]s
staticPodPath: ""
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
# A test node on a shared machine: evict only when really short, and never
# garbage-collect the images imported here (they cannot be pulled again).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, nodeIP, pki, c.containerdSocket(), dnsServiceIP, c.path("config", "resolv.conf"), c.path("pod-logs"), c.path("kubelet", "volume-plugins"))
}

func (c *config) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
clusterCIDR: %s
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack and route_localnet settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
nodePortAddresses: [%s/32]
`, c.path("kubeconfigs", "kube-proxy.kubeconfig"), nodeName, podCIDR, nodeIP)
}

func (c *config) schedulerConfig() string {
	return fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
leaderElection:
  leaderElect: false
`, c.path("kubeconfigs", "scheduler.kubeconfig"))
}

// corednsManifest is the cluster DNS: CoreDNS answering for cluster.local
// only (no forward plugin: nothing leaves this machine), behind the kube-dns
// Service at dnsServiceIP.
func corednsManifest(image string) string {
	return strings.NewReplacer("IMAGE", image, "DNSIP", dnsServiceIP).Replace(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loadbalance
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: IMAGE
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
        resources:
          requests: {cpu: 50m, memory: 32Mi}
          limits: {memory: 170Mi}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: DNSIP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`)
}
