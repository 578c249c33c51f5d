package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/cli/rollout"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/test/apiserver"
	"github.com/meridian-mesh/meridian/viz/dashboard"
)

// `meridian viz dashboard`'s rollouts view against a real kube-apiserver
// with the Rollout CRD: the Rollouts of the namespace, their ReplicaSets
// and pods as the reconciler creates them (written by the test, which
// plays the ReplicaSet controller and the kubelet), and the stable's and
// the canary's pods found by rollouts-pod-template-hash, their proxies
// (real ones on loopback) read through the API server's pod proxy. The
// traffic sent between two refreshes, with a different failure rate on
// each side, shows side by side; the steps, weights, pause and newest
// AnalysisRun come from the stored objects.
func TestVizDashboardRollouts(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	cfg := apiserver.Start(t, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := client.New(cfg, client.Options{Scheme: rollout.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"shop", "other"} {
		must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}

	// The application behind every proxy fails /fail.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	proxies := map[string]*sidecar.Proxy{} // pod name → its proxy
	admins := map[string]string{}          // "ns/pod:4191" → its admin address
	startProxy := func(ns, pod string) {
		px, err := sidecar.New(sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			InboundForward: strings.TrimPrefix(app.URL, "http://"), DrainTimeout: time.Second})
		must(err)
		pctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); px.Run(pctx) }()
		t.Cleanup(func() { stop(); <-done })
		proxies[pod] = px
		_, _, admin := px.Addrs()
		admins[ns+"/"+pod+":4191"] = admin.String()
	}

	// rolloutRS creates ro's ReplicaSet of hash at revision rev and its
	// meshed pods (named by suffix; running unless listed in pending), each
	// with a real proxy.
	rolloutRS := func(ro *v1alpha1.Rollout, hash string, rev int, pods []string, pending ...string) {
		t.Helper()
		labels := map[string]string{"app": ro.Name, v1alpha1.DefaultRolloutUniqueLabelKey: hash}
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: ro.Name + "-" + hash, Namespace: ro.Namespace, Labels: labels,
				Annotations:     map[string]string{rollout.RevisionAnnotation: strconv.Itoa(rev)},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))}},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(int32(len(pods))), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: twoContainers("app")}}},
		}
		must(c.Create(ctx, rs))
		for _, suffix := range pods {
			spec := rs.Spec.Template.Spec
			spec.InitContainers = []corev1.Container{{Name: "meridian-proxy", Image: "proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4191}}}}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: rs.Name + "-" + suffix, Namespace: ro.Namespace, Labels: labels,
					OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
				Spec: spec,
			}
			must(c.Create(ctx, pod))
			startProxy(ro.Namespace, pod.Name)
			pod.Status.Phase = corev1.PodRunning
			for _, p := range pending {
				if p == suffix {
					pod.Status.Phase = corev1.PodPending
				}
			}
			must(c.Status().Update(ctx, pod))
		}
	}
	setStatus := func(ro *v1alpha1.Rollout, s v1alpha1.RolloutStatus) {
		t.Helper()
		must(c.Get(ctx, client.ObjectKeyFromObject(ro), ro))
		ro.Status = s
		must(c.Status().Update(ctx, ro))
	}
	owner := func(ro *v1alpha1.Rollout) []metav1.OwnerReference {
		return []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))}
	}

	// shop/web: paused at its pause step, 20% on the canary; two stable
	// pods, a running canary pod and a pending one (not read).
	web := canaryRollout()
	must(c.Create(ctx, web))
	rolloutRS(web, stableHash, 1, []string{"a", "b"})
	rolloutRS(web, canaryHash, 2, []string{"a", "b"}, "b")
	// Two runs created in the same second: the newer revision's is the
	// latest.
	for i, sum := range []v1alpha1.RunSummary{{Count: 1, Failed: 1}, {Count: 3, Successful: 2, Inconclusive: 1}} {
		run := &v1alpha1.AnalysisRun{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + canaryHash + "-" + strconv.Itoa(i+1), Namespace: "shop", OwnerReferences: owner(web),
				Annotations: map[string]string{rollout.RevisionAnnotation: strconv.Itoa(i + 1)}},
			Spec: v1alpha1.AnalysisRunSpec{Metrics: []v1alpha1.Metric{{Name: "success-rate",
				Provider: v1alpha1.MetricProvider{Meridian: &v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate}}}}},
		}
		must(c.Create(ctx, run))
		run.Status = v1alpha1.AnalysisRunStatus{Phase: []v1alpha1.AnalysisPhase{v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseRunning}[i], RunSummary: sum}
		must(c.Status().Update(ctx, run))
	}
	setStatus(web, v1alpha1.RolloutStatus{
		Phase: v1alpha1.RolloutPhasePaused, Message: "CanaryPauseStep", ObservedGeneration: "1",
		CurrentStepIndex: ptr.To[int32](1), CurrentPodHash: canaryHash, StableRS: stableHash, ControllerPause: true,
		PauseConditions: []v1alpha1.PauseCondition{{Reason: v1alpha1.PauseReasonCanaryPauseStep, StartTime: metav1.Now()}},
		Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
			Canary: v1alpha1.WeightDestination{Weight: 20, PodTemplateHash: canaryHash},
			Stable: v1alpha1.WeightDestination{Weight: 80, PodTemplateHash: stableHash}, Verified: ptr.To(true)}},
	})
	// shop/api: fully promoted (its canary is its stable). other/db: in a
	// namespace the dashboard does not show unless asked.
	api := canaryRollout()
	api.Name = "api"
	must(c.Create(ctx, api))
	rolloutRS(api, "7c9d8e", 1, []string{"a"})
	setStatus(api, v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseHealthy, ObservedGeneration: "1",
		CurrentStepIndex: ptr.To[int32](4), CurrentPodHash: "7c9d8e", StableRS: "7c9d8e"})
	db := canaryRollout()
	db.Name, db.Namespace = "db", "other"
	must(c.Create(ctx, db))

	front := newPodProxyFront(t, cfg, admins)
	kf := kubeclient.Flags{Kubeconfig: writeKubeconfig(t, front.URL)} // namespace shop
	list, err := dashboardList(kf, []string{"deploy"})
	must(err)
	var logged bytes.Buffer
	ros, err := dashboardRollouts(kf, []string{"deploy"}, &logged)
	must(err)
	d := dashboard.New(dashboard.Options{List: list, Rollouts: ros, Refresh: time.Second})
	srv := httptest.NewServer(d)
	defer srv.Close()

	d.Refresh(ctx)
	c2 := &http.Client{Timeout: 5 * time.Second}
	send := func(pod string, n, failing int) {
		t.Helper()
		_, in, _ := proxies[pod].Addrs()
		for i := 0; i < n; i++ {
			path := "/"
			if i < failing {
				path = "/fail"
			}
			resp, err := c2.Get("http://" + in.String() + path)
			must(err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send("web-"+stableHash+"-a", 10, 1)
	send("web-"+stableHash+"-b", 10, 1) // stable: 18 of 20
	send("web-"+canaryHash+"-a", 10, 5) // canary: 5 of 10
	send("web-"+canaryHash+"-b", 4, 4)  // pending: not read
	send("api-7c9d8e-a", 5, 0)
	d.Refresh(ctx)

	resp, err := http.Get(srv.URL + "/api/snapshot")
	must(err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var snap dashboard.Snapshot
	must(json.Unmarshal(raw, &snap))
	if len(snap.Errors) != 0 {
		t.Fatalf("errors: %q", snap.Errors)
	}
	if len(snap.Rollouts) != 2 || snap.Rollouts[0].Name != "api" || snap.Rollouts[1].Name != "web" {
		t.Fatalf("rollouts of shop: %s", raw)
	}
	num := func(p *float64) float64 {
		if p == nil {
			return -1
		}
		return *p
	}
	r := snap.Rollouts[1]
	if r.Stable.MeshedPods != 2 || num(r.Stable.Requests) != 20 || num(r.Stable.SuccessRate) != 0.9 || r.Stable.Name != stableHash {
		t.Errorf("web's stable: %+v", r.Stable)
	}
	if r.Canary.MeshedPods != 1 || num(r.Canary.Requests) != 10 || num(r.Canary.SuccessRate) != 0.5 || r.Canary.Name != canaryHash {
		t.Errorf("web's canary (its pending pod not read): %+v", r.Canary)
	}
	if strings.Join(r.Steps, "|") != "setWeight: 20|pause|setWeight: 50|pause: 30s" || r.CurrentStepIndex == nil || *r.CurrentStepIndex != 1 || r.Step != "1/4" {
		t.Errorf("web's steps %q at %v (%s)", r.Steps, r.CurrentStepIndex, r.Step)
	}
	if w := r.Weights; w == nil || w.Canary != 20 || w.Stable != 80 || w.From != "status" || r.Phase != "Paused" || r.Message != "CanaryPauseStep" ||
		len(r.PauseConditions) != 1 || r.StableHash != stableHash || r.CanaryHash != canaryHash {
		t.Errorf("web: %+v (weights %+v)", r, w)
	}
	if a := r.Analysis; a == nil || a.Name != "web-"+canaryHash+"-2" || a.Phase != "Running" || a.Successful != 2 || a.Failed != 0 || a.Inconclusive != 1 {
		t.Errorf("web's latest AnalysisRun: %+v", a)
	}
	if a := snap.Rollouts[0]; a.Stable.MeshedPods != 1 || num(a.Stable.Requests) != 5 || a.Canary.MeshedPods != 0 || a.Canary.Requests != nil || a.Analysis != nil {
		t.Errorf("api (promoted): %+v", a)
	}
	if logged.Len() != 0 {
		t.Errorf("logged %q with the CRD installed", logged.String())
	}

	// "ns": every namespace's Rollouts; "ns/other": that one's.
	for _, tc := range []struct {
		arg  string
		want string
	}{{"ns", "other/db shop/api shop/web"}, {"ns/other", "other/db"}, {"deploy/web", "shop/api shop/web"}} {
		f, err := dashboardRollouts(kf, []string{tc.arg}, io.Discard)
		must(err)
		rs, err := f(ctx)
		must(err)
		var got []string
		for _, r := range rs {
			got = append(got, r.Rollout.Namespace+"/"+r.Rollout.Name)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("viz dashboard %s: rollouts %q, want %s", tc.arg, got, tc.want)
		}
	}
	// Without a cluster (admin addresses): no rollouts view here.
	if f, err := dashboardRollouts(kf, []string{"web=127.0.0.1:4191"}, io.Discard); f != nil || err != nil {
		t.Errorf("admin addresses: %v, %v; want no rollouts function", f != nil, err)
	}
	if f := newVizDashboardCmd().Flags().Lookup("rollouts"); f == nil || f.DefValue != "true" {
		t.Errorf("--rollouts: %+v, want a flag defaulting on", f)
	}
}

// A cluster without the Rollout CRD: the rollouts view is skipped with one
// logged line, not an error of every refresh.
func TestVizDashboardNoRolloutCRD(t *testing.T) {
	cfg := apiserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	front := newPodProxyFront(t, cfg, nil)
	kf := kubeclient.Flags{Kubeconfig: writeKubeconfig(t, front.URL)}
	var logged bytes.Buffer
	ros, err := dashboardRollouts(kf, []string{"deploy"}, &logged)
	if err != nil {
		t.Fatal(err)
	}
	list, err := dashboardList(kf, []string{"deploy"})
	if err != nil {
		t.Fatal(err)
	}
	d := dashboard.New(dashboard.Options{List: list, Rollouts: ros, Refresh: time.Second})
	d.Refresh(ctx)
	d.Refresh(ctx)
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/snapshot", nil))
	if b := rec.Body.String(); !strings.Contains(b, `"rollouts":[]`) || !strings.Contains(b, `"errors":[]`) {
		t.Errorf("snapshot without the CRD: %s", b)
	}
	if l := logged.String(); strings.Count(l, "\n") != 1 || !strings.Contains(l, "rollouts.meridian.io") || !strings.Contains(l, "not installed") {
		t.Errorf("logged %q, want one line saying the CRD is not installed", l)
	}

	// The CRD installed while the dashboard runs: its Rollouts show at a
	// later refresh (the kind is looked up again), with nothing more logged.
	_, file, _, _ := runtime.Caller(0)
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join(filepath.Dir(file), "..", "..", "api", "crds")}}); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: rollout.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, canaryRollout()); err != nil {
		t.Fatal(err)
	}
	for {
		rs, err := ros(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 1 && rs[0].Rollout.Name == "web" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the Rollout created after the CRD was installed never showed: %d rollouts", len(rs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(logged.String(), "\n") != 1 {
		t.Errorf("logged %q", logged.String())
	}
}
