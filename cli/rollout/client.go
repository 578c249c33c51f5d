package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Client reads and changes the Rollouts of one namespace.
type Client struct {
	C         client.WithWatch
	Namespace string
}

// Scheme knows the Kubernetes kinds and meridian.io/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha1.AddToScheme(s)
	return s
}

// NewClient connects to the API server cfg names; names resolve in ns.
func NewClient(cfg *rest.Config, ns string) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "meridian"
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return &Client{C: c, Namespace: ns}, nil
}

// objErr names the Rollout in an API error: "rollout default/web not
// found" rather than the API server's wording.
func (c *Client) objErr(name string, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("rollout %s/%s not found", c.Namespace, name)
	case meta404(err):
		return fmt.Errorf("rollout %s/%s: the Rollout CRD (rollouts.meridian.io) is not installed: meridian install --crds | kubectl apply --server-side -f -", c.Namespace, name)
	}
	return fmt.Errorf("rollout %s/%s: %w", c.Namespace, name, err)
}

// ErrNotInstalled is List's (and ListOwned's) error when the API server
// does not serve Rollouts.
var ErrNotInstalled = errors.New("the Rollout CRD (rollouts.meridian.io) is not installed: meridian install --crds | kubectl apply --server-side -f -")

// meta404 reports whether the API server does not know the kind.
func meta404(err error) bool { return meta.IsNoMatchError(err) }

// Get reads the Rollout name.
func (c *Client) Get(ctx context.Context, name string) (*v1alpha1.Rollout, error) {
	ro := &v1alpha1.Rollout{}
	err := c.C.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, ro)
	return ro, c.objErr(name, err)
}

// hashed selects the objects that carry a pod-template hash: a Rollout's
// ReplicaSets and pods (and a Deployment's; ownerReferences tell them
// apart).
func hashed() labels.Selector {
	r, _ := labels.NewRequirement(v1alpha1.DefaultRolloutUniqueLabelKey, selection.Exists, nil)
	return labels.NewSelector().Add(*r)
}

// snapshot is one reading of a Rollout and what it owns, with the
// resource versions to watch from.
type snapshot struct {
	ro   *v1alpha1.Rollout
	info *Info
	rvs  [4]string // rollouts, replicasets, pods, analysisruns
}

// snapshot reads the Rollout (by a list, whose resource version is
// current, to watch from), its namespace's hashed ReplicaSets and pods and
// its AnalysisRuns.
func (c *Client) snapshot(ctx context.Context, name string) (*snapshot, error) {
	var ros v1alpha1.RolloutList
	if err := c.C.List(ctx, &ros, client.InNamespace(c.Namespace), client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)}); err != nil {
		return nil, c.objErr(name, err)
	}
	if len(ros.Items) == 0 {
		return nil, c.objErr(name, apierrors.NewNotFound(v1alpha1.GroupVersion.WithResource("rollouts").GroupResource(), name))
	}
	var (
		rss  appsv1.ReplicaSetList
		pods corev1.PodList
		runs v1alpha1.AnalysisRunList
	)
	sel := client.MatchingLabelsSelector{Selector: hashed()}
	if err := c.C.List(ctx, &rss, client.InNamespace(c.Namespace), sel); err != nil {
		return nil, fmt.Errorf("listing the ReplicaSets of namespace %s: %w", c.Namespace, err)
	}
	if err := c.C.List(ctx, &pods, client.InNamespace(c.Namespace), sel); err != nil {
		return nil, fmt.Errorf("listing the pods of namespace %s: %w", c.Namespace, err)
	}
	if err := c.C.List(ctx, &runs, client.InNamespace(c.Namespace)); err != nil {
		return nil, fmt.Errorf("listing the AnalysisRuns of namespace %s: %w", c.Namespace, err)
	}
	ro := &ros.Items[0]
	return &snapshot{ro: ro, info: NewInfo(ro, rss.Items, pods.Items, runs.Items),
		rvs: [4]string{ros.ResourceVersion, rss.ResourceVersion, pods.ResourceVersion, runs.ResourceVersion}}, nil
}

// Info reads the Rollout name and what it owns.
func (c *Client) Info(ctx context.Context, name string) (*Info, *v1alpha1.Rollout, error) {
	s, err := c.snapshot(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return s.info, s.ro, nil
}

// List summarizes the Rollouts of the namespace, or of every namespace,
// sorted by namespace and name.
func (c *Client) List(ctx context.Context, allNamespaces bool) ([]Row, error) {
	var opts []client.ListOption
	where := "namespace " + c.Namespace
	if !allNamespaces {
		opts = append(opts, client.InNamespace(c.Namespace))
	} else {
		where = "all namespaces"
	}
	var ros v1alpha1.RolloutList
	if err := c.C.List(ctx, &ros, opts...); err != nil {
		if meta404(err) {
			return nil, ErrNotInstalled
		}
		return nil, fmt.Errorf("listing the Rollouts of %s: %w", where, err)
	}
	var rss appsv1.ReplicaSetList
	if len(ros.Items) > 0 {
		if err := c.C.List(ctx, &rss, append(opts, client.MatchingLabelsSelector{Selector: hashed()})...); err != nil {
			return nil, fmt.Errorf("listing the ReplicaSets of %s: %w", where, err)
		}
	}
	rows := []Row{}
	for i := range ros.Items {
		rows = append(rows, NewRow(&ros.Items[i], rss.Items))
	}
	slices.SortFunc(rows, func(a, b Row) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return rows, nil
}

// Patches are the merge patches of a change to a Rollout: Spec to the
// object, Status to its status subresource (applied first, as Argo's
// plugin does). A nil map is no patch.
type Patches struct {
	Spec, Status map[string]any
}

// PromotePatches are `promote`'s (and `promote --full`'s) patches, the
// changes steps.Promote makes: a paused Rollout (spec.paused, or pause
// conditions the controller set) is unpaused and its pause conditions
// cleared; otherwise a canary skips its current step. --full sets
// status.promoteFull, unless the Rollout is already fully promoted (it
// would skip the next update's steps too).
func PromotePatches(ro *v1alpha1.Rollout, full bool) Patches {
	var p Patches
	status := map[string]any{}
	if full && ro.Status.CurrentPodHash != ro.Status.StableRS {
		status["promoteFull"] = true
	}
	switch {
	case ro.Spec.Paused || len(ro.Status.PauseConditions) > 0:
		if ro.Spec.Paused {
			p.Spec = map[string]any{"paused": false}
		}
		if len(ro.Status.PauseConditions) > 0 {
			status["pauseConditions"] = nil
		}
	case !full:
		if step, i := currentStep(ro); step != nil && ro.Status.CurrentStepIndex != nil {
			status["currentStepIndex"] = *i + 1
		}
	}
	if len(status) > 0 {
		p.Status = status
	}
	return p
}

// The other commands' patches (Argo's; retry also clears pause
// conditions, as steps.Retry does).
var (
	AbortPatches  = Patches{Status: map[string]any{"abort": true}}
	RetryPatches  = Patches{Status: map[string]any{"abort": false, "pauseConditions": nil}}
	PausePatches  = Patches{Spec: map[string]any{"paused": true}}
	ResumePatches = Patches{Spec: map[string]any{"paused": false}}
)

// RestartPatches sets spec.restartAt: the controller restarts the pods,
// one by one, once at has passed.
func RestartPatches(at time.Time) Patches {
	return Patches{Spec: map[string]any{"restartAt": at.UTC().Format(time.RFC3339)}}
}

// Apply sends p for the Rollout name. With rv set, the status patch
// carries it, so it fails with a conflict if the Rollout changed since it
// was read (a promote that skips a step must not skip two).
func (c *Client) Apply(ctx context.Context, name, rv string, p Patches) (*v1alpha1.Rollout, error) {
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name}}
	if p.Status != nil {
		body := map[string]any{"status": p.Status}
		if rv != "" {
			body["metadata"] = map[string]any{"resourceVersion": rv}
		}
		data, _ := json.Marshal(body)
		if err := c.C.Status().Patch(ctx, ro, client.RawPatch(types.MergePatchType, data)); err != nil {
			return nil, c.objErr(name, err)
		}
	}
	if p.Spec != nil {
		data, _ := json.Marshal(map[string]any{"spec": p.Spec})
		if err := c.C.Patch(ctx, ro, client.RawPatch(types.MergePatchType, data)); err != nil {
			return nil, c.objErr(name, err)
		}
	}
	if p.Status == nil && p.Spec == nil {
		return c.Get(ctx, name)
	}
	return ro, nil
}

// Do reads the Rollout name, makes patches of it and applies them, again
// from a fresh read when the Rollout changed in between.
func (c *Client) Do(ctx context.Context, name string, patches func(*v1alpha1.Rollout) Patches) (*v1alpha1.Rollout, error) {
	for attempt := 0; ; attempt++ {
		ro, err := c.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		ro, err = c.Apply(ctx, name, ro.ResourceVersion, patches(ro))
		if err == nil || !apierrors.IsConflict(err) || attempt == 4 {
			return ro, err
		}
	}
}

// Promote promotes the Rollout name (PromotePatches).
func (c *Client) Promote(ctx context.Context, name string, full bool) (*v1alpha1.Rollout, error) {
	return c.Do(ctx, name, func(ro *v1alpha1.Rollout) Patches { return PromotePatches(ro, full) })
}

// workload is the object whose pod template a Rollout runs: the Rollout,
// or the Deployment its workloadRef names.
type workload struct {
	kind, name string
	obj        client.Object
	template   *corev1.PodTemplateSpec
}

func (w workload) String() string { return strings.ToLower(w.kind) + " " + w.name }

func (c *Client) workload(ctx context.Context, ro *v1alpha1.Rollout) (workload, error) {
	ref := ro.Spec.WorkloadRef
	if ref == nil {
		if ro.Spec.Template == nil {
			return workload{}, fmt.Errorf("rollout %s/%s has neither spec.template nor spec.workloadRef", ro.Namespace, ro.Name)
		}
		return workload{kind: "Rollout", name: ro.Name, obj: ro, template: ro.Spec.Template}, nil
	}
	if ref.Kind != "Deployment" {
		return workload{}, fmt.Errorf("rollout %s/%s: spec.workloadRef.kind %q: only Deployment is supported", ro.Namespace, ro.Name, ref.Kind)
	}
	d := &appsv1.Deployment{}
	if err := c.C.Get(ctx, client.ObjectKey{Namespace: ro.Namespace, Name: ref.Name}, d); err != nil {
		if apierrors.IsNotFound(err) {
			return workload{}, fmt.Errorf("rollout %s/%s: its spec.workloadRef, deployment %s/%s, not found", ro.Namespace, ro.Name, ro.Namespace, ref.Name)
		}
		return workload{}, fmt.Errorf("rollout %s/%s: reading deployment %s/%s: %w", ro.Namespace, ro.Name, ro.Namespace, ref.Name, err)
	}
	return workload{kind: "Deployment", name: d.Name, obj: d, template: &d.Spec.Template}, nil
}

// patchTemplate sends a JSON patch to the workload's pod template.
func (c *Client) patchTemplate(ctx context.Context, ro *v1alpha1.Rollout, w workload, ops []map[string]any) error {
	data, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	if err := c.C.Patch(ctx, w.obj, client.RawPatch(types.JSONPatchType, data)); err != nil {
		if testFailed(err) {
			// The container moved since it was read: read again.
			return apierrors.NewConflict(v1alpha1.GroupVersion.WithResource("rollouts").GroupResource(), ro.Name, err)
		}
		return fmt.Errorf("rollout %s/%s: patching %s: %w", ro.Namespace, ro.Name, w, err)
	}
	return nil
}

// testFailed reports whether a JSON patch was refused because a test
// operation failed: the API server answers 422 Invalid with no field and
// no object named, where a validation error names both.
func testFailed(err error) bool {
	var se *apierrors.StatusError
	if !errors.As(err, &se) || !apierrors.IsInvalid(err) {
		return false
	}
	d := se.ErrStatus.Details
	return d == nil || (d.Name == "" && len(d.Causes) == 0)
}

// SetImage sets the image of the container (every container with "*") of
// the Rollout's pod template, or of its workloadRef's Deployment's, and
// names the object it changed ("rollout web", "deployment web").
func (c *Client) SetImage(ctx context.Context, name, container, image string) (string, error) {
	for attempt := 0; ; attempt++ {
		ro, err := c.Get(ctx, name)
		if err != nil {
			return "", err
		}
		w, err := c.workload(ctx, ro)
		if err != nil {
			return "", err
		}
		var ops []map[string]any
		var names []string
		spec := w.template.Spec
		for _, list := range []struct {
			field string
			cs    []corev1.Container
		}{{"initContainers", spec.InitContainers}, {"containers", spec.Containers}} {
			for i, ct := range list.cs {
				names = append(names, ct.Name)
				if ct.Name != container && container != "*" {
					continue
				}
				path := fmt.Sprintf("/spec/template/spec/%s/%d", list.field, i)
				// The test pins the container the index was read for.
				ops = append(ops, map[string]any{"op": "test", "path": path + "/name", "value": ct.Name},
					map[string]any{"op": "replace", "path": path + "/image", "value": image})
			}
		}
		for i, ct := range spec.EphemeralContainers {
			names = append(names, ct.Name)
			if ct.Name == container || container == "*" {
				path := fmt.Sprintf("/spec/template/spec/ephemeralContainers/%d", i)
				ops = append(ops, map[string]any{"op": "test", "path": path + "/name", "value": ct.Name},
					map[string]any{"op": "replace", "path": path + "/image", "value": image})
			}
		}
		if len(ops) == 0 {
			where := "rollout " + ro.Name
			if w.kind != "Rollout" {
				where = fmt.Sprintf("%s (rollout %s's workloadRef)", w, ro.Name)
			}
			return "", fmt.Errorf("container %s not in %s: has %s", container, where, strings.Join(names, ", "))
		}
		err = c.patchTemplate(ctx, ro, w, ops)
		if err == nil || !apierrors.IsConflict(err) || attempt == 4 {
			return w.String(), err
		}
	}
}

// Undo puts back the pod template of an earlier revision of the Rollout:
// the one before the newest, or toRevision (> 0). The template comes from
// that revision's ReplicaSet, without the pod-template hash (and the
// strategy's ephemeral labels and annotations), into the Rollout or its
// workloadRef's Deployment. It says what it did.
func (c *Client) Undo(ctx context.Context, name string, toRevision int64) (string, error) {
	ro, err := c.Get(ctx, name)
	if err != nil {
		return "", err
	}
	var rss appsv1.ReplicaSetList
	if err := c.C.List(ctx, &rss, client.InNamespace(c.Namespace), client.MatchingLabelsSelector{Selector: hashed()}); err != nil {
		return "", fmt.Errorf("listing the ReplicaSets of namespace %s: %w", c.Namespace, err)
	}
	var target *appsv1.ReplicaSet
	var latest, previous *appsv1.ReplicaSet
	var revs []string
	for i := range rss.Items {
		rs := &rss.Items[i]
		if !metav1.IsControlledBy(rs, ro) {
			continue
		}
		v := revision(rs.Annotations)
		if v == 0 {
			continue
		}
		revs = append(revs, fmt.Sprint(v))
		switch {
		case toRevision > 0:
			if v == toRevision {
				target = rs
			}
		case latest == nil || v > revision(latest.Annotations):
			previous, latest = latest, rs
		case previous == nil || v > revision(previous.Annotations):
			previous = rs
		}
	}
	if toRevision <= 0 {
		target = previous
	}
	if target == nil {
		slices.Sort(revs)
		have := "it has none"
		if len(revs) > 0 {
			have = "it has " + strings.Join(revs, ", ")
		}
		if toRevision > 0 {
			return "", fmt.Errorf("rollout %s/%s has no revision %d (%s: ReplicaSets it controls, annotated %s)", ro.Namespace, ro.Name, toRevision, have, RevisionAnnotation)
		}
		return "", fmt.Errorf("rollout %s/%s has no earlier revision to go back to (%s: ReplicaSets it controls, annotated %s)", ro.Namespace, ro.Name, have, RevisionAnnotation)
	}
	rev := revision(target.Annotations)
	w, err := c.workload(ctx, ro)
	if err != nil {
		return "", err
	}
	tmpl := target.Spec.Template.DeepCopy()
	delete(tmpl.Labels, v1alpha1.DefaultRolloutUniqueLabelKey)
	for _, m := range ephemeral(ro) {
		for k := range m.Labels {
			delete(tmpl.Labels, k)
		}
		for k := range m.Annotations {
			delete(tmpl.Annotations, k)
		}
	}
	cur := w.template.DeepCopy()
	delete(cur.Labels, v1alpha1.DefaultRolloutUniqueLabelKey)
	// The ReplicaSet's template has the API server's defaults; the
	// Rollout's (schemaless) may not: fields it leaves unset are not a
	// difference.
	if apiequality.Semantic.DeepDerivative(cur, tmpl) {
		return fmt.Sprintf("skipped rollback (current template already matches revision %d)", rev), nil
	}
	value, err := templateValue(tmpl)
	if err != nil {
		return "", err
	}
	ops := []map[string]any{{"op": "replace", "path": "/spec/template", "value": value}}
	if err := c.patchTemplate(ctx, ro, w, ops); err != nil {
		return "", err
	}
	return fmt.Sprintf("rollout '%s' undo (to revision %d)", ro.Name, rev), nil
}

// templateValue is the template as JSON without the null
// creationTimestamp a Go PodTemplateSpec marshals.
func templateValue(t *corev1.PodTemplateSpec) (map[string]any, error) {
	data, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return m, nil
}

// ephemeral is the metadata the strategy adds to pods while they are the
// canary, stable, active or preview ones.
func ephemeral(ro *v1alpha1.Rollout) []*v1alpha1.PodTemplateMetadata {
	var ms []*v1alpha1.PodTemplateMetadata
	if c := ro.Spec.Strategy.Canary; c != nil {
		ms = append(ms, c.CanaryMetadata, c.StableMetadata)
	}
	if b := ro.Spec.Strategy.BlueGreen; b != nil {
		ms = append(ms, b.ActiveMetadata, b.PreviewMetadata)
	}
	return slices.DeleteFunc(ms, func(m *v1alpha1.PodTemplateMetadata) bool { return m == nil })
}
