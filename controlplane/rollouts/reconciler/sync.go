package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
)

// DefaultRevisionHistoryLimit is how many old ReplicaSets a Rollout keeps
// (scaled to 0) without revisionHistoryLimit, as Argo.
const DefaultRevisionHistoryLimit = 10

// restartRequeue is how often a restart in progress looks again.
const restartRequeue = 5 * time.Second

// verifyRequeue is how often weights not yet verified are looked at again.
const verifyRequeue = time.Second

// sync reconciles one Rollout and returns when to look again.
func (r *Reconciler) sync(ctx context.Context, k string) (time.Duration, error) {
	ns, name, _ := cutKey(k)
	ro := &v1alpha1.Rollout{}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ro); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, r.removed(ctx, k)
		}
		return 0, err
	}
	if ro.DeletionTimestamp != nil {
		// Its ReplicaSets and AnalysisRuns go with it (owner references).
		return 0, r.removeRoutes(ctx, ro)
	}
	now := r.o.Now()

	// Resolve the template: inline, or the workloadRef's Deployment.
	resolved := ro.DeepCopy()
	var dep *appsv1.Deployment
	if ref := ro.Spec.WorkloadRef; ref != nil && ref.Kind == "Deployment" && ref.Name != "" {
		dep = &appsv1.Deployment{}
		err := r.cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: ref.Name}, dep)
		if apierrors.IsNotFound(err) {
			return 0, r.invalid(ctx, ro, fmt.Sprintf("spec.workloadRef: Deployment %s/%s not found", ns, ref.Name))
		}
		if err != nil {
			return 0, err
		}
	}
	if msg, err := r.missingRefs(ctx, ro); err != nil || msg != "" {
		if err != nil {
			return 0, err
		}
		return 0, r.invalid(ctx, ro, msg)
	}
	if errs := ro.Validate(); len(errs) > 0 {
		// The step machine records it and keeps everything as it is.
		out := steps.Reconcile(steps.Input{Rollout: ro, Now: now})
		return 0, r.writeStatus(ctx, ro, out.Status)
	}
	if dep != nil {
		resolved.Spec.WorkloadRef = nil
		resolved.Spec.Template = dep.Spec.Template.DeepCopy()
		resolved.Spec.Selector = dep.Spec.Selector.DeepCopy()
		resolved.Status.WorkloadObservedGeneration = strconv.FormatInt(dep.Generation, 10)
	}

	rss, err := r.replicaSets(ctx, ro)
	if err != nil {
		return 0, err
	}
	hash := PodTemplateHash(resolved.Spec.Template, ro.Status.CollisionCount)
	if other := collision(rss.all, rss.foreign, resolved, hash); other {
		// Another template (or someone else's ReplicaSet) has this name:
		// bump the collision count, as the Deployment controller does.
		n := int32(1)
		if ro.Status.CollisionCount != nil {
			n = *ro.Status.CollisionCount + 1
		}
		ro.Status.CollisionCount = &n
		return 0, r.client.Status().Update(ctx, ro)
	}

	runs, err := r.analysisRuns(ctx, ro)
	if err != nil {
		return 0, err
	}
	in := steps.Input{Rollout: resolved, PodHash: hash, AnalysisRuns: map[string]steps.AnalysisRun{}, Now: now}
	for _, rs := range rss.owned {
		in.ReplicaSets = append(in.ReplicaSets, observe(rs))
	}
	for _, run := range runs {
		in.AnalysisRuns[run.Name] = steps.AnalysisRun{Phase: run.Status.Phase, Message: run.Status.Message}
	}
	out := steps.Reconcile(in)
	st := out.Status

	// Carry the decision out in the order that keeps every request
	// served: new pods first, then Services and traffic, then scale-downs
	// (which the step machine already delays until traffic has left).
	revision := nextRevision(rss.owned)
	byHash := map[string]*appsv1.ReplicaSet{}
	for _, rs := range rss.owned {
		byHash[rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]] = rs
	}
	desired := int32(steps.DefaultReplicas)
	if ro.Spec.Replicas != nil {
		desired = *ro.Spec.Replicas
	}
	if cur, ok := byHash[hash]; !ok {
		rs, err := r.createReplicaSet(ctx, ro, resolved, hash, out.Replicas[hash], desired, revision)
		if err != nil {
			return 0, err
		}
		byHash[hash] = rs
	} else if top := revisionOf(rss.owned); cur.Annotations[RevisionAnnotation] != top {
		// A rollback to an old ReplicaSet makes it the newest revision.
		if err := r.patchRS(ctx, cur, map[string]any{"metadata": map[string]any{"annotations": map[string]any{RevisionAnnotation: revision}}}); err != nil {
			return 0, err
		}
	}
	for h, n := range out.Replicas {
		if rs := byHash[h]; rs != nil && replicasOf(rs) < n {
			if err := r.scale(ctx, rs, n, desired); err != nil {
				return 0, err
			}
		}
	}
	if err := r.syncMetadata(ctx, ro, byHash, st); err != nil {
		return 0, err
	}
	if err := r.services(ctx, ro, byHash, &st); err != nil {
		return 0, err
	}
	if err := r.route(ctx, ro, out, &st); err != nil {
		return 0, err
	}
	for h, n := range out.Replicas {
		if rs := byHash[h]; rs != nil && replicasOf(rs) > n {
			if err := r.scale(ctx, rs, n, desired); err != nil {
				return 0, err
			}
		}
	}
	for _, sd := range out.ScaleDowns {
		if rs := byHash[sd.Hash]; rs != nil && rs.Annotations[ScaleDownDeadlineKey] != sd.At.UTC().Format(time.RFC3339) {
			if err := r.patchRS(ctx, rs, map[string]any{"metadata": map[string]any{"annotations": map[string]any{ScaleDownDeadlineKey: sd.At.UTC().Format(time.RFC3339)}}}); err != nil {
				return 0, err
			}
		}
	}
	clear := map[string]bool{}
	for _, h := range out.ClearScaleDowns {
		clear[h] = true
	}
	for h, rs := range byHash {
		// A deadline is cleared when asked, and once the ReplicaSet is at
		// 0 (Argo removes it with the scale-down).
		if _, ok := rs.Annotations[ScaleDownDeadlineKey]; ok && (clear[h] || out.Replicas[h] == 0 && replicasOf(rs) == 0) {
			if err := r.patchRS(ctx, rs, map[string]any{"metadata": map[string]any{"annotations": map[string]any{ScaleDownDeadlineKey: nil}}}); err != nil {
				return 0, err
			}
		}
	}
	if err := r.history(ctx, ro, rss.owned, st, out); err != nil {
		return 0, err
	}
	for _, c := range out.Create {
		// A run is of its ReplicaSet's revision (as Argo's): not the next
		// one, which the current ReplicaSet only has in the pass that
		// creates it.
		runRevision := revision
		if rs := byHash[c.PodHash]; rs != nil && rs.Annotations[RevisionAnnotation] != "" {
			runRevision = rs.Annotations[RevisionAnnotation]
		}
		run, err := r.newAnalysisRun(ctx, ro, c, runRevision)
		if err != nil {
			return 0, r.invalid(ctx, ro, fmt.Sprintf("AnalysisRun %s: %v", c.Name, err))
		}
		if err := r.client.Create(ctx, run); err != nil && !apierrors.IsAlreadyExists(err) {
			return 0, fmt.Errorf("creating AnalysisRun %s/%s: %w", ns, c.Name, err)
		}
	}
	for _, name := range out.Cancel {
		if err := r.terminate(ctx, ns, name); err != nil {
			return 0, fmt.Errorf("terminating AnalysisRun %s/%s: %w", ns, name, err)
		}
	}
	hashes := map[string]bool{}
	for h := range byHash {
		hashes[h] = true
	}
	if err := r.pruneRuns(ctx, ro, runs, st, hashes); err != nil {
		return 0, err
	}
	if dep != nil {
		if err := r.scaleDownWorkload(ctx, ro, dep, st); err != nil {
			return 0, err
		}
	}
	after := out.RequeueAfter
	if w := st.Canary.Weights; w != nil && w.Verified != nil && !*w.Verified && (after == 0 || after > verifyRequeue) {
		// The store compiles the weights after it sees this status: no
		// event says when, so look again soon (a setWeight step waits on
		// it; Argo's default retry is 10 s, ours a store read).
		after = verifyRequeue
	}
	if ro.Spec.RestartAt != nil {
		done, err := r.restart(ctx, ro, byHash, &st, now)
		if err != nil {
			return 0, err
		}
		if !done && (after == 0 || after > restartRequeue) {
			after = restartRequeue
		}
	}
	return after, r.writeStatus(ctx, ro, st)
}

func cutKey(k string) (ns, name string, ok bool) {
	for i := range len(k) {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return "", k, false
}

// writeStatus writes st through the status subresource when it changed;
// a conflict (the Rollout changed meanwhile) is retried from the start.
func (r *Reconciler) writeStatus(ctx context.Context, ro *v1alpha1.Rollout, st v1alpha1.RolloutStatus) error {
	if equality.Semantic.DeepEqual(ro.Status, st) {
		return nil
	}
	ro = ro.DeepCopy()
	ro.Status = st
	return r.client.Status().Update(ctx, ro)
}

// invalid records InvalidSpec with msg and changes nothing else.
func (r *Reconciler) invalid(ctx context.Context, ro *v1alpha1.Rollout, msg string) error {
	st := *ro.Status.DeepCopy()
	st.ObservedGeneration = strconv.FormatInt(ro.Generation, 10)
	setCondition(&st, v1alpha1.InvalidSpec, corev1.ConditionTrue, "InvalidSpec", msg, r.o.Now())
	st.Phase = v1alpha1.RolloutPhaseDegraded
	st.Message = "InvalidSpec: " + msg
	return r.writeStatus(ctx, ro, st)
}

func setCondition(st *v1alpha1.RolloutStatus, t v1alpha1.RolloutConditionType, s corev1.ConditionStatus, reason, msg string, now time.Time) {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != s {
			c.LastTransitionTime = metav1.NewTime(now)
		}
		if c.Status != s || c.Reason != reason || c.Message != msg {
			c.LastUpdateTime = metav1.NewTime(now)
		}
		c.Status, c.Reason, c.Message = s, reason, msg
		return
	}
	st.Conditions = append(st.Conditions, v1alpha1.RolloutCondition{Type: t, Status: s, Reason: reason, Message: msg,
		LastUpdateTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)})
}

// missingRefs names the first Service or analysis template the Rollout
// refers to that does not exist.
func (r *Reconciler) missingRefs(ctx context.Context, ro *v1alpha1.Rollout) (string, error) {
	for _, s := range serviceRefs(ro) {
		var svc corev1.Service
		err := r.cache.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: s.name}, &svc)
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("%s: Service %s/%s not found", s.field, ro.Namespace, s.name), nil
		}
		if err != nil {
			return "", err
		}
	}
	return r.missingTemplate(ctx, ro)
}

type serviceRef struct{ field, name, role string }

// The Service roles: their selector gets the stable, canary, active or
// preview hash.
const (
	roleStable  = "stable"
	roleCanary  = "canary"
	roleActive  = "active"
	rolePreview = "preview"
)

func serviceRefs(ro *v1alpha1.Rollout) []serviceRef {
	var refs []serviceRef
	if c := ro.Spec.Strategy.Canary; c != nil {
		if c.CanaryService != "" {
			refs = append(refs, serviceRef{"spec.strategy.canary.canaryService", c.CanaryService, roleCanary})
		}
		if c.StableService != "" {
			refs = append(refs, serviceRef{"spec.strategy.canary.stableService", c.StableService, roleStable})
		}
	}
	if b := ro.Spec.Strategy.BlueGreen; b != nil {
		if b.ActiveService != "" {
			refs = append(refs, serviceRef{"spec.strategy.blueGreen.activeService", b.ActiveService, roleActive})
		}
		if b.PreviewService != "" {
			refs = append(refs, serviceRef{"spec.strategy.blueGreen.previewService", b.PreviewService, rolePreview})
		}
	}
	return refs
}

// services points each Service at its hash, as Argo: stable at stableRS,
// canary at the current hash, active and preview at the blue-green
// selectors. A Service whose hash has no value yet is left as it is.
//
// A Service moves to a hash only once that ReplicaSet is fully available
// (Argo's ensureSVCTargets): until then it keeps selecting the pods it
// has, and status.blueGreen.previewSelector says so. Moving it earlier
// points it at pods that are not ready yet, which its clients see as an
// empty endpoint set (the e2e test's preview load got 503s for seconds).
// The ReplicaSet's status change brings the Rollout back.
func (r *Reconciler) services(ctx context.Context, ro *v1alpha1.Rollout, byHash map[string]*appsv1.ReplicaSet, st *v1alpha1.RolloutStatus) error {
	for _, s := range serviceRefs(ro) {
		var hash string
		switch s.role {
		case roleStable:
			hash = st.StableRS
		case roleCanary:
			hash = st.CurrentPodHash
		case roleActive:
			hash = st.BlueGreen.ActiveSelector
		case rolePreview:
			hash = st.BlueGreen.PreviewSelector
		}
		if hash == "" {
			continue
		}
		var svc corev1.Service
		if err := r.cache.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: s.name}, &svc); err != nil {
			return err
		}
		cur := svc.Spec.Selector[v1alpha1.DefaultRolloutUniqueLabelKey]
		if cur != hash && !fullyAvailable(byHash[hash]) {
			if s.role == rolePreview {
				st.BlueGreen.PreviewSelector = cur
			}
			continue
		}
		if cur == hash && svc.Annotations[ManagedByAnnotation] == ro.Name {
			continue
		}
		patch := map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{ManagedByAnnotation: ro.Name}},
			"spec":     map[string]any{"selector": map[string]any{v1alpha1.DefaultRolloutUniqueLabelKey: hash}},
		}
		b, _ := json.Marshal(patch)
		if err := r.client.Patch(ctx, &svc, client.RawPatch(types.MergePatchType, b)); err != nil {
			return fmt.Errorf("%s: Service %s/%s: %w", s.field, ro.Namespace, s.name, err)
		}
	}
	return nil
}

// route gives the Router the decision and records what it verified.
func (r *Reconciler) route(ctx context.Context, ro *v1alpha1.Rollout, out steps.Output, st *v1alpha1.RolloutStatus) error {
	c := ro.Spec.Strategy.Canary
	if c == nil || c.TrafficRouting == nil {
		return nil
	}
	if r.o.Routers == nil {
		return fmt.Errorf("spec.strategy.canary.trafficRouting: this controller has no traffic routers")
	}
	rt, err := r.o.Routers(ro)
	if err != nil {
		return fmt.Errorf("spec.strategy.canary.trafficRouting: %w", err)
	}
	// The Router sees the Rollout with the status being written (the
	// meridian router's data plane reads status.canary.weights).
	view := ro.DeepCopy()
	view.Status = *st.DeepCopy()
	if err := rt.SetWeights(ctx, view, out.Weights); err != nil {
		return fmt.Errorf("setting the weights canary %d%% (%s) / stable %d%% (%s): %w", out.Weights.Canary, out.Weights.CanaryHash, out.Weights.Stable, out.Weights.StableHash, err)
	}
	if err := rt.SetHeaderRoute(ctx, view, out.HeaderRoute); err != nil {
		return fmt.Errorf("setting the header route: %w", err)
	}
	if w := st.Canary.Weights; w != nil {
		w.Canary.ServiceName = c.CanaryService
		w.Stable.ServiceName = c.StableService
		ok, err := rt.Verify(ctx, view, out.Weights)
		if err != nil {
			return fmt.Errorf("verifying the weights: %w", err)
		}
		w.Verified = &ok
	}
	return nil
}

// removed handles a Rollout that is gone: its Router undoes its writes.
func (r *Reconciler) removed(ctx context.Context, k string) error {
	r.mu.Lock()
	ro := r.gone[k]
	r.mu.Unlock()
	if ro == nil {
		return nil
	}
	if err := r.removeRoutes(ctx, ro); err != nil {
		return err
	}
	r.mu.Lock()
	if r.gone[k] == ro {
		delete(r.gone, k)
	}
	r.mu.Unlock()
	return nil
}

func (r *Reconciler) removeRoutes(ctx context.Context, ro *v1alpha1.Rollout) error {
	if c := ro.Spec.Strategy.Canary; c == nil || c.TrafficRouting == nil || r.o.Routers == nil {
		return nil
	}
	rt, err := r.o.Routers(ro)
	if err != nil {
		return err
	}
	return rt.Remove(ctx, ro)
}

type replicaSets struct {
	owned []*appsv1.ReplicaSet
	// all is every ReplicaSet of the namespace by name; foreign those not
	// the Rollout's.
	all     map[string]*appsv1.ReplicaSet
	foreign map[string]bool
}

func (r *Reconciler) replicaSets(ctx context.Context, ro *v1alpha1.Rollout) (replicaSets, error) {
	var l appsv1.ReplicaSetList
	if err := r.cache.List(ctx, &l, client.InNamespace(ro.Namespace)); err != nil {
		return replicaSets{}, err
	}
	res := replicaSets{all: map[string]*appsv1.ReplicaSet{}, foreign: map[string]bool{}}
	for i := range l.Items {
		rs := &l.Items[i]
		res.all[rs.Name] = rs
		if isOwnedBy(rs, ro) && rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] != "" {
			res.owned = append(res.owned, rs)
		} else {
			res.foreign[rs.Name] = true
		}
	}
	sort.Slice(res.owned, func(i, j int) bool { return res.owned[i].Name < res.owned[j].Name })
	return res, nil
}

// collision reports whether the name <rollout>-<hash> is taken by a
// ReplicaSet that is not the Rollout's. One of the Rollout's own with that
// name is taken as this template's: the API server defaults the pod
// template of a ReplicaSet (and not the Rollout's), so comparing them would
// see a difference in every one (see README, Bugs).
func collision(all map[string]*appsv1.ReplicaSet, foreign map[string]bool, ro *v1alpha1.Rollout, hash string) bool {
	rs := all[ro.Name+"-"+hash]
	return rs != nil && foreign[rs.Name]
}

func (r *Reconciler) analysisRuns(ctx context.Context, ro *v1alpha1.Rollout) ([]v1alpha1.AnalysisRun, error) {
	var l v1alpha1.AnalysisRunList
	if err := r.cache.List(ctx, &l, client.InNamespace(ro.Namespace)); err != nil {
		return nil, err
	}
	var runs []v1alpha1.AnalysisRun
	for _, run := range l.Items {
		if isOwnedBy(&run, ro) {
			runs = append(runs, run)
		}
	}
	return runs, nil
}

func observe(rs *appsv1.ReplicaSet) steps.ReplicaSet {
	o := steps.ReplicaSet{
		Hash:      rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey],
		Replicas:  replicasOf(rs),
		Ready:     rs.Status.ReadyReplicas,
		Available: rs.Status.AvailableReplicas,
	}
	// A status from before the last spec change may count pods that are
	// going: trust it only once the ReplicaSet controller has seen the spec.
	if rs.Status.ObservedGeneration < rs.Generation {
		o.Ready = min(o.Ready, o.Replicas)
		o.Available = min(o.Available, o.Replicas)
	}
	if v := rs.Annotations[ScaleDownDeadlineKey]; v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			o.ScaleDownDeadline = t
		}
	}
	o.Revision, _ = strconv.ParseInt(rs.Annotations[RevisionAnnotation], 10, 64)
	return o
}

// fullyAvailable is Argo's IsReplicaSetAvailable: rs wants pods and has
// them all available.
func fullyAvailable(rs *appsv1.ReplicaSet) bool {
	return rs != nil && replicasOf(rs) > 0 && rs.Status.AvailableReplicas >= replicasOf(rs)
}

func replicasOf(rs *appsv1.ReplicaSet) int32 {
	if rs.Spec.Replicas == nil {
		return 1
	}
	return *rs.Spec.Replicas
}

// revisionOf is the highest revision among rss ("" for none).
func revisionOf(rss []*appsv1.ReplicaSet) string {
	top := 0
	for _, rs := range rss {
		if n, err := strconv.Atoi(rs.Annotations[RevisionAnnotation]); err == nil && n > top {
			top = n
		}
	}
	if top == 0 {
		return ""
	}
	return strconv.Itoa(top)
}

func nextRevision(rss []*appsv1.ReplicaSet) string {
	n, _ := strconv.Atoi(revisionOf(rss))
	return strconv.Itoa(n + 1)
}

// createReplicaSet creates the Rollout's ReplicaSet for hash, as Argo's
// getNewReplicaSet: name <rollout>-<hash>, the hash label on the template
// and in the selector, the Rollout as controller.
func (r *Reconciler) createReplicaSet(ctx context.Context, ro, resolved *v1alpha1.Rollout, hash string, n, desired int32, revision string) (*appsv1.ReplicaSet, error) {
	tmpl := resolved.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] = hash
	sel := resolved.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[v1alpha1.DefaultRolloutUniqueLabelKey] = hash
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:            ro.Name + "-" + hash,
			Namespace:       ro.Namespace,
			Labels:          tmpl.Labels,
			Annotations:     map[string]string{RevisionAnnotation: revision, DesiredReplicasAnnotation: strconv.Itoa(int(desired))},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))},
		},
		Spec: appsv1.ReplicaSetSpec{
			Replicas:        &n,
			MinReadySeconds: ro.Spec.MinReadySeconds,
			Selector:        sel,
			Template:        *tmpl,
		},
	}
	err := r.client.Create(ctx, rs)
	if apierrors.IsAlreadyExists(err) {
		// Our own, not yet in the cache: the next pass sees it.
		return nil, fmt.Errorf("ReplicaSet %s/%s exists but is not in the cache yet", rs.Namespace, rs.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("creating ReplicaSet %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	return rs, nil
}

func (r *Reconciler) patchRS(ctx context.Context, rs *appsv1.ReplicaSet, patch map[string]any) error {
	b, _ := json.Marshal(patch)
	if err := r.client.Patch(ctx, rs, client.RawPatch(types.MergePatchType, b)); err != nil {
		return fmt.Errorf("ReplicaSet %s/%s: %w", rs.Namespace, rs.Name, err)
	}
	return nil
}

func (r *Reconciler) scale(ctx context.Context, rs *appsv1.ReplicaSet, n, desired int32) error {
	return r.patchRS(ctx, rs, map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{DesiredReplicasAnnotation: strconv.Itoa(int(desired))}},
		"spec":     map[string]any{"replicas": n},
	})
}

// history deletes the oldest ReplicaSets at 0 replicas beyond
// revisionHistoryLimit (never the stable or current one).
func (r *Reconciler) history(ctx context.Context, ro *v1alpha1.Rollout, rss []*appsv1.ReplicaSet, st v1alpha1.RolloutStatus, out steps.Output) error {
	limit := int32(DefaultRevisionHistoryLimit)
	if ro.Spec.RevisionHistoryLimit != nil {
		limit = *ro.Spec.RevisionHistoryLimit
	}
	var old []*appsv1.ReplicaSet
	for _, rs := range rss {
		h := rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]
		if h == st.StableRS || h == st.CurrentPodHash || out.Replicas[h] != 0 || replicasOf(rs) != 0 || rs.Status.Replicas != 0 || rs.DeletionTimestamp != nil {
			continue
		}
		old = append(old, rs)
	}
	if int32(len(old)) <= limit {
		return nil
	}
	sort.Slice(old, func(i, j int) bool {
		a, _ := strconv.Atoi(old[i].Annotations[RevisionAnnotation])
		b, _ := strconv.Atoi(old[j].Annotations[RevisionAnnotation])
		return a < b
	})
	for _, rs := range old[:int32(len(old))-limit] {
		if err := r.client.Delete(ctx, rs, client.Preconditions{UID: &rs.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting old ReplicaSet %s/%s: %w", rs.Namespace, rs.Name, err)
		}
	}
	return nil
}

// scaleDownWorkload scales the workloadRef's Deployment down as Argo:
// onsuccess to 0 once the Rollout is healthy; progressively by the
// Rollout's available pods; never (the default) not at all.
func (r *Reconciler) scaleDownWorkload(ctx context.Context, ro *v1alpha1.Rollout, dep *appsv1.Deployment, st v1alpha1.RolloutStatus) error {
	var want int32
	switch ro.Spec.WorkloadRef.ScaleDown {
	case v1alpha1.ScaleDownOnSuccess:
		if st.Phase != v1alpha1.RolloutPhaseHealthy {
			return nil
		}
	case v1alpha1.ScaleDownProgressively:
		n := int32(steps.DefaultReplicas)
		if ro.Spec.Replicas != nil {
			n = *ro.Spec.Replicas
		}
		want = max(0, n-st.AvailableReplicas)
		if dep.Spec.Replicas != nil && *dep.Spec.Replicas < want {
			return nil // never scaled back up
		}
	default:
		return nil
	}
	if dep.Spec.Replicas != nil && *dep.Spec.Replicas == want {
		return nil
	}
	b, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": want}})
	if err := r.client.Patch(ctx, dep, client.RawPatch(types.MergePatchType, b)); err != nil {
		return fmt.Errorf("spec.workloadRef: scaling Deployment %s/%s down: %w", dep.Namespace, dep.Name, err)
	}
	return nil
}

// restart evicts the Rollout's pods created before spec.restartAt, as
// Argo's pod restarter: only while every ReplicaSet has all its pods
// available, at most maxUnavailable (at least 1) at a time, oldest first.
// It reports whether the restart is done (status.restartedAt set).
func (r *Reconciler) restart(ctx context.Context, ro *v1alpha1.Rollout, byHash map[string]*appsv1.ReplicaSet, st *v1alpha1.RolloutStatus, now time.Time) (bool, error) {
	at := ro.Spec.RestartAt
	if at.After(now) {
		return false, nil
	}
	if st.RestartedAt != nil && !st.RestartedAt.Before(at) {
		return true, nil
	}
	var old []corev1.Pod
	var missing int32
	for _, rs := range byHash {
		missing += max(0, replicasOf(rs)-rs.Status.AvailableReplicas)
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil {
			continue
		}
		var pods corev1.PodList
		if err := r.client.List(ctx, &pods, client.InNamespace(ro.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if isControlledBy(&p, rs) && p.DeletionTimestamp == nil && p.CreationTimestamp.Before(at) {
				old = append(old, p)
			}
		}
	}
	if len(old) == 0 {
		st.RestartedAt = at.DeepCopy()
		return true, nil
	}
	n := int32(steps.DefaultReplicas)
	if ro.Spec.Replicas != nil {
		n = *ro.Spec.Replicas
	}
	var mu *intstr.IntOrString
	if c := ro.Spec.Strategy.Canary; c != nil {
		mu = c.MaxUnavailable
	} else if b := ro.Spec.Strategy.BlueGreen; b != nil {
		mu = b.MaxUnavailable
	}
	allowed := int32(1)
	if mu != nil {
		if v, err := intstr.GetScaledValueFromIntOrPercent(mu, int(n), false); err == nil && v > 1 {
			allowed = int32(v)
		}
	}
	allowed -= missing
	sort.Slice(old, func(i, j int) bool { return old[i].CreationTimestamp.Before(&old[j].CreationTimestamp) })
	for i := 0; i < len(old) && int32(i) < allowed; i++ {
		p := &old[i]
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
		if err := r.client.SubResource("eviction").Create(ctx, p, ev); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsTooManyRequests(err) {
			return false, fmt.Errorf("spec.restartAt: evicting pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return false, nil
}

func isControlledBy(o metav1.Object, owner metav1.Object) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == owner.GetUID()
}
