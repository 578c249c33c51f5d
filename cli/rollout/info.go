package rollout

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// The annotations the tree reads, Argo Rollouts' keys (as the
// rollouts-pod-template-hash label is), so ReplicaSets and AnalysisRuns an
// Argo controller wrote read the same.
const (
	// RevisionAnnotation is the revision number of a Rollout's ReplicaSet
	// (and of the AnalysisRuns made for it).
	RevisionAnnotation = "rollout.argoproj.io/revision"
	// ScaleDownDeadlineAnnotation is when an old ReplicaSet is scaled down
	// (RFC 3339).
	ScaleDownDeadlineAnnotation = "scale-down-deadline"
)

// Info is a Rollout with the objects it owns, as `meridian rollout get`
// shows it (the JSON of `-o json`).
type Info struct {
	Name         string        `json:"name"`
	Namespace    string        `json:"namespace"`
	Created      metav1.Time   `json:"creationTimestamp"`
	Status       string        `json:"status"`
	Message      string        `json:"message,omitempty"`
	Strategy     string        `json:"strategy"`
	Step         string        `json:"step,omitempty"`
	SetWeight    string        `json:"setWeight,omitempty"`
	ActualWeight string        `json:"actualWeight,omitempty"`
	Images       []Image       `json:"images"`
	Replicas     Replicas      `json:"replicas"`
	ReplicaSets  []ReplicaSet  `json:"replicaSets"`
	AnalysisRuns []AnalysisRun `json:"analysisRuns"`
}

// Image is a running image and the ReplicaSets it runs in (canary, stable,
// active, preview).
type Image struct {
	Image string   `json:"image"`
	Tags  []string `json:"tags,omitempty"`
}

// Replicas are the Rollout's pod counts.
type Replicas struct {
	Desired   int32 `json:"desired"`
	Current   int32 `json:"current"`
	Updated   int32 `json:"updated"`
	Ready     int32 `json:"ready"`
	Available int32 `json:"available"`
}

// ReplicaSet is one of the Rollout's ReplicaSets.
type ReplicaSet struct {
	Name              string      `json:"name"`
	Created           metav1.Time `json:"creationTimestamp"`
	Revision          int64       `json:"revision"`
	PodTemplateHash   string      `json:"podTemplateHash,omitempty"`
	Status            string      `json:"status"`
	Stable            bool        `json:"stable,omitempty"`
	Canary            bool        `json:"canary,omitempty"`
	Active            bool        `json:"active,omitempty"`
	Preview           bool        `json:"preview,omitempty"`
	Replicas          int32       `json:"replicas"`
	Available         int32       `json:"available"`
	ScaleDownDeadline string      `json:"scaleDownDeadline,omitempty"`
	Images            []string    `json:"images"`
	Pods              []Pod       `json:"pods"`
	uid               types.UID
}

// Pod is one pod of a ReplicaSet.
type Pod struct {
	Name     string      `json:"name"`
	Created  metav1.Time `json:"creationTimestamp"`
	Status   string      `json:"status"`
	Ready    string      `json:"ready"`
	Restarts int32       `json:"restarts"`
}

// AnalysisRun is one of the Rollout's AnalysisRuns, with its runSummary.
type AnalysisRun struct {
	Name         string      `json:"name"`
	Created      metav1.Time `json:"creationTimestamp"`
	Revision     int64       `json:"revision"`
	Status       string      `json:"status"`
	Message      string      `json:"message,omitempty"`
	Successful   int32       `json:"successful"`
	Failed       int32       `json:"failed"`
	Inconclusive int32       `json:"inconclusive"`
	Error        int32       `json:"error"`
}

// Tags of a ReplicaSet, Argo's words.
const (
	TagCanary  = "canary"
	TagStable  = "stable"
	TagActive  = "active"
	TagPreview = "preview"
)

// NewInfo gathers what the tree shows: the ReplicaSets the Rollout
// controls (by ownerReference), their pods (by ownerReference) and the
// Rollout's AnalysisRuns, each sorted newest revision first (Argo's order).
// The lists may hold other objects of the namespace; they are skipped.
func NewInfo(ro *v1alpha1.Rollout, rss []appsv1.ReplicaSet, pods []corev1.Pod, runs []v1alpha1.AnalysisRun) *Info {
	in := &Info{
		Name: ro.Name, Namespace: ro.Namespace, Created: ro.CreationTimestamp,
		Strategy: Strategy(ro),
		Replicas: Replicas{Desired: desired(ro), Current: ro.Status.Replicas, Updated: ro.Status.UpdatedReplicas,
			Ready: ro.Status.ReadyReplicas, Available: ro.Status.AvailableReplicas},
		Images: []Image{}, ReplicaSets: []ReplicaSet{}, AnalysisRuns: []AnalysisRun{},
	}
	phase, msg := Phase(ro)
	in.Status, in.Message = string(phase), msg

	for i := range rss {
		rs := &rss[i]
		if !ownedBy(rs.OwnerReferences, ro.UID) {
			continue
		}
		r := ReplicaSet{
			Name: rs.Name, Created: rs.CreationTimestamp, uid: rs.UID,
			Revision:          revision(rs.Annotations),
			PodTemplateHash:   rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey],
			Status:            replicaSetHealth(rs),
			Replicas:          rs.Status.Replicas,
			Available:         rs.Status.AvailableReplicas,
			ScaleDownDeadline: rs.Annotations[ScaleDownDeadlineAnnotation],
			Images:            []string{},
			Pods:              []Pod{},
		}
		h := r.PodTemplateHash
		if ro.Spec.Strategy.Canary != nil && h != "" {
			r.Stable = h == ro.Status.StableRS
			r.Canary = !r.Stable && h == ro.Status.CurrentPodHash
		}
		if ro.Spec.Strategy.BlueGreen != nil && h != "" {
			r.Stable = h == ro.Status.StableRS
			r.Active = h == ro.Status.BlueGreen.ActiveSelector
			r.Preview = !r.Active && h == ro.Status.BlueGreen.PreviewSelector
		}
		for _, c := range rs.Spec.Template.Spec.Containers {
			r.Images = append(r.Images, c.Image)
		}
		in.ReplicaSets = append(in.ReplicaSets, r)
	}
	slices.SortStableFunc(in.ReplicaSets, func(a, b ReplicaSet) int {
		if a.Revision != b.Revision {
			return cmpDesc(a.Revision, b.Revision)
		}
		if !a.Created.Equal(&b.Created) {
			return a.Created.Compare(b.Created.Time)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i := range pods {
		p := &pods[i]
		for j := range in.ReplicaSets {
			if ownedBy(p.OwnerReferences, in.ReplicaSets[j].uid) {
				in.ReplicaSets[j].Pods = append(in.ReplicaSets[j].Pods, newPod(p))
				break
			}
		}
	}
	var canaryAvailable int32
	for i := range in.ReplicaSets {
		r := &in.ReplicaSets[i]
		slices.SortStableFunc(r.Pods, func(a, b Pod) int {
			if !a.Created.Equal(&b.Created) {
				return a.Created.Compare(b.Created.Time)
			}
			return strings.Compare(a.Name, b.Name)
		})
		if r.Canary {
			canaryAvailable = r.Available
		}
		if r.Replicas > 0 {
			for _, img := range r.Images {
				in.Images = mergeImage(in.Images, img, r.tags())
			}
		}
	}

	for i := range runs {
		run := &runs[i]
		if !ownedBy(run.OwnerReferences, ro.UID) {
			continue
		}
		s := run.Status.RunSummary
		in.AnalysisRuns = append(in.AnalysisRuns, AnalysisRun{
			Name: run.Name, Created: run.CreationTimestamp, Revision: revision(run.Annotations),
			Status: string(run.Status.Phase), Message: run.Status.Message,
			Successful: s.Successful, Failed: s.Failed, Inconclusive: s.Inconclusive, Error: s.Error,
		})
	}
	slices.SortStableFunc(in.AnalysisRuns, func(a, b AnalysisRun) int {
		if a.Revision != b.Revision {
			return cmpDesc(a.Revision, b.Revision)
		}
		if !a.Created.Equal(&b.Created) {
			return a.Created.Compare(b.Created.Time)
		}
		return strings.Compare(b.Name, a.Name)
	})

	if ro.Spec.Strategy.Canary != nil {
		in.Step = Step(ro)
		in.SetWeight = strconv.Itoa(int(SetWeight(ro)))
		in.ActualWeight = ActualWeight(ro, canaryAvailable)
	}
	return in
}

func cmpDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func (r *ReplicaSet) tags() []string {
	var t []string
	if r.Canary {
		t = append(t, TagCanary)
	}
	if r.Stable {
		t = append(t, TagStable)
	}
	if r.Active {
		t = append(t, TagActive)
	}
	if r.Preview {
		t = append(t, TagPreview)
	}
	return t
}

// mergeImage adds img with its tags, or merges the tags into the same
// image's; the list stays sorted by image.
func mergeImage(imgs []Image, img string, tags []string) []Image {
	i := slices.IndexFunc(imgs, func(x Image) bool { return x.Image == img })
	if i < 0 {
		t := slices.Clone(tags)
		slices.Sort(t)
		imgs = append(imgs, Image{Image: img, Tags: t})
	} else {
		t := append(imgs[i].Tags, tags...)
		slices.Sort(t)
		imgs[i].Tags = slices.Compact(t)
	}
	slices.SortFunc(imgs, func(a, b Image) int { return strings.Compare(a.Image, b.Image) })
	return imgs
}

// Revisions are the revisions present, newest first.
func (in *Info) Revisions() []int64 {
	var revs []int64
	for _, r := range in.ReplicaSets {
		revs = append(revs, r.Revision)
	}
	for _, r := range in.AnalysisRuns {
		revs = append(revs, r.Revision)
	}
	slices.Sort(revs)
	revs = slices.Compact(revs)
	slices.Reverse(revs)
	return revs
}

// ownedBy reports whether refs name uid.
func ownedBy(refs []metav1.OwnerReference, uid types.UID) bool {
	return slices.ContainsFunc(refs, func(r metav1.OwnerReference) bool { return r.UID == uid })
}

// revision reads RevisionAnnotation; 0 without one.
func revision(ann map[string]string) int64 {
	n, err := strconv.ParseInt(ann[RevisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// replicaSetHealth is Argo's: Progressing until the ReplicaSet controller
// has seen it and its pods are available, ReplicaFailure, ScaledDown at 0,
// else Healthy.
func replicaSetHealth(rs *appsv1.ReplicaSet) string {
	if rs.Generation > rs.Status.ObservedGeneration {
		return "Progressing"
	}
	for _, c := range rs.Status.Conditions {
		if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
			return string(appsv1.ReplicaSetReplicaFailure)
		}
	}
	if rs.Spec.Replicas != nil && rs.Status.AvailableReplicas < *rs.Spec.Replicas {
		return "Progressing"
	}
	if rs.Spec.Replicas != nil && *rs.Spec.Replicas == 0 {
		return "ScaledDown"
	}
	return "Healthy"
}

// newPod reads a pod's status as kubectl's STATUS column does (and Argo's
// tree): an init container's trouble, a container's waiting or terminated
// reason, Terminating, else the phase.
func newPod(p *corev1.Pod) Pod {
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	var restarts, ready int32
	initializing := false
	for i, c := range p.Status.InitContainerStatuses {
		restarts += c.RestartCount
		switch {
		case c.State.Terminated != nil && c.State.Terminated.ExitCode == 0:
			continue
		case c.State.Running != nil && c.Started != nil && *c.Started && restartable(p, c.Name):
			// A native sidecar (the meshed pod's proxy) that has started
			// does not hold the pod in initialization, as in kubectl.
			continue
		case c.State.Terminated != nil:
			switch t := c.State.Terminated; {
			case t.Reason != "":
				reason = "Init:" + t.Reason
			case t.Signal != 0:
				reason = fmt.Sprintf("Init:Signal:%d", t.Signal)
			default:
				reason = fmt.Sprintf("Init:ExitCode:%d", t.ExitCode)
			}
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + c.State.Waiting.Reason
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(p.Spec.InitContainers))
		}
		initializing = true
		break
	}
	if !initializing {
		restarts = 0
		running := false
		for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
			c := p.Status.ContainerStatuses[i]
			restarts += c.RestartCount
			switch {
			case c.State.Waiting != nil && c.State.Waiting.Reason != "":
				reason = c.State.Waiting.Reason
			case c.State.Terminated != nil && c.State.Terminated.Reason != "":
				reason = c.State.Terminated.Reason
			case c.State.Terminated != nil && c.State.Terminated.Signal != 0:
				reason = fmt.Sprintf("Signal:%d", c.State.Terminated.Signal)
			case c.State.Terminated != nil:
				reason = fmt.Sprintf("ExitCode:%d", c.State.Terminated.ExitCode)
			case c.Ready && c.State.Running != nil:
				running = true
				ready++
			}
		}
		if reason == "Completed" && running {
			reason = "Running"
		}
	}
	if p.DeletionTimestamp != nil {
		if p.Status.Reason == "NodeLost" {
			reason = "Unknown"
		} else {
			reason = "Terminating"
		}
	}
	return Pod{Name: p.Name, Created: p.CreationTimestamp, Status: reason,
		Ready: fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), Restarts: restarts}
}

// restartable reports whether the init container name is a native sidecar
// (restartPolicy Always).
func restartable(p *corev1.Pod, name string) bool {
	for _, c := range p.Spec.InitContainers {
		if c.Name == name {
			return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	return false
}
