package kubeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseRef(t *testing.T) {
	for s, want := range map[string]Ref{
		"web-1":            {KindPod, "web-1"},
		"pod/web-1":        {KindPod, "web-1"},
		"po/web-1":         {KindPod, "web-1"},
		"pods/web-1":       {KindPod, "web-1"},
		"deploy/web":       {KindDeployment, "web"},
		"Deployment/web":   {KindDeployment, "web"},
		"deployments/web":  {KindDeployment, "web"},
		"sts/db":           {KindStatefulSet, "db"},
		"statefulset/db":   {KindStatefulSet, "db"},
		"ds/agent":         {KindDaemonSet, "agent"},
		"daemonsets/agent": {KindDaemonSet, "agent"},
	} {
		got, err := ParseRef(s)
		if err != nil || got != want {
			t.Errorf("ParseRef(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"svc/web", "deploy/", "deploy/a/b", "/web", ""} {
		if got, err := ParseRef(s); err == nil {
			t.Errorf("ParseRef(%q) = %v, want an error", s, got)
		}
	}
}

func TestProxyAdminPort(t *testing.T) {
	pod := func(init, containers []corev1.Container) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"},
			Spec: corev1.PodSpec{InitContainers: init, Containers: containers}}
	}
	app := corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 9999}}}
	for name, c := range map[string]struct {
		pod  *corev1.Pod
		want int32
	}{
		"native sidecar": {pod([]corev1.Container{{Name: "meridian-init"}, {Name: "meridian-proxy",
			Ports: []corev1.ContainerPort{{Name: "inbound", ContainerPort: 4143}, {Name: "meridian-admin", ContainerPort: 4191}}}},
			[]corev1.Container{app}), 4191},
		"regular container, named port": {pod(nil, []corev1.Container{app, {Name: "meridian-proxy",
			Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4192}}}}), 4192},
		"no named port": {pod([]corev1.Container{{Name: "meridian-proxy"}}, nil), AdminPort},
		// A Gateway's pod (controlplane/gateway/provision) is its own proxy.
		"gateway": {pod(nil, []corev1.Container{{Name: "meridian-gateway",
			Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4191}, {ContainerPort: 8443}}}}), 4191},
	} {
		if got, err := ProxyAdminPort(c.pod); err != nil || got != c.want {
			t.Errorf("%s: %d, %v; want %d", name, got, err, c.want)
		}
	}
	_, err := ProxyAdminPort(pod(nil, []corev1.Container{app}))
	if want := "pod shop/web-1 is not meshed: no meridian-proxy container; inject it with meridian inject"; err == nil || err.Error() != want {
		t.Errorf("unmeshed pod: %v, want %q", err, want)
	}
}

// The namespace: -n, else the context's, else "default"; --context picks
// the context.
func TestConnectNamespace(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://127.0.0.1:1"}
- name: b
  cluster: {server: "https://127.0.0.2:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: shop
  context: {cluster: a, user: u, namespace: shop}
- name: bare
  context: {cluster: b, user: u}
current-context: shop
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		flags Flags
		ns    string
	}{
		{Flags{Kubeconfig: kc}, "shop"},
		{Flags{Kubeconfig: kc, Namespace: "emojivoto"}, "emojivoto"},
		{Flags{Kubeconfig: kc, Context: "bare"}, "default"},
		{Flags{Kubeconfig: kc, Context: "bare", Namespace: "x"}, "x"},
	} {
		cl, err := c.flags.Connect()
		if err != nil {
			t.Fatalf("%+v: %v", c.flags, err)
		}
		if cl.Namespace != c.ns {
			t.Errorf("%+v: namespace %q, want %q", c.flags, cl.Namespace, c.ns)
		}
	}
	if _, err := (Flags{Kubeconfig: kc, Context: "nope"}).Connect(); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown context: %v", err)
	}
}
