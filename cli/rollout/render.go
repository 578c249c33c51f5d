package rollout

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// The icons of Argo Rollouts' tree.
const (
	IconWaiting     = "◷"
	IconProgressing = "◌"
	IconWarning     = "⚠"
	IconUnknown     = "?"
	IconOK          = "✔"
	IconBad         = "✖"
	IconPaused      = "॥"
	IconNeutral     = "•"

	IconRollout    = "⟳"
	IconRevision   = "#"
	IconReplicaSet = "⧉"
	IconPod        = "□"
	IconAnalysis   = "α"
)

// StatusIcon is the icon of a Rollout's, ReplicaSet's or AnalysisRun's
// status, as Argo Rollouts draws it.
func StatusIcon(status string) string {
	switch status {
	case "Progressing", "Running":
		return IconProgressing
	case "Pending":
		return IconWaiting
	case "Healthy", "Successful":
		return IconOK
	case "Degraded", "Failed", string(appsv1.ReplicaSetReplicaFailure):
		return IconBad
	case "Error", "InvalidSpec":
		return IconWarning
	case "Paused":
		return IconPaused
	case "Inconclusive", "Unknown":
		return IconUnknown
	case "ScaledDown":
		return IconNeutral
	}
	return " "
}

// podIcon is the icon of a pod's status (kubectl's STATUS words).
func podIcon(status string) string {
	switch {
	case strings.HasPrefix(status, "Init:"):
		return IconProgressing
	case strings.HasPrefix(status, "Signal:"), strings.HasPrefix(status, "ExitCode:"):
		return IconBad
	case strings.HasSuffix(status, "Error"), strings.HasPrefix(status, "Err"):
		return IconWarning
	}
	switch status {
	case "Pending", "Terminating", "ContainerCreating":
		return IconProgressing
	case "Running", "Completed", "Succeeded":
		return IconOK
	case "Failed", "InvalidImageName", "CrashLoopBackOff":
		return IconBad
	case "ImagePullBackOff", "RegistryUnavailable":
		return IconWarning
	case "Unknown":
		return IconUnknown
	}
	return " "
}

// Age is kubectl's age of t at now ("5m", "3h2m", "<unknown>").
func Age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

const field = "%-17s%v\n"

// WriteTree writes Argo Rollouts' `get rollout` view: the Rollout's
// summary, then the tree of its revisions, ReplicaSets, pods and
// AnalysisRuns. Ages are counted to now.
func WriteTree(w io.Writer, in *Info, now time.Time) error {
	b := &strings.Builder{}
	fmt.Fprintf(b, field, "Name:", in.Name)
	fmt.Fprintf(b, field, "Namespace:", in.Namespace)
	fmt.Fprintf(b, field, "Status:", StatusIcon(in.Status)+" "+in.Status)
	if in.Message != "" {
		fmt.Fprintf(b, field, "Message:", in.Message)
	}
	fmt.Fprintf(b, field, "Strategy:", in.Strategy)
	if in.Strategy == "Canary" {
		fmt.Fprintf(b, field, "  Step:", in.Step)
		fmt.Fprintf(b, field, "  SetWeight:", in.SetWeight)
		fmt.Fprintf(b, field, "  ActualWeight:", in.ActualWeight)
	}
	for i, img := range in.Images {
		label := ""
		if i == 0 {
			label = "Images:"
		}
		s := img.Image
		if len(img.Tags) > 0 {
			s += " (" + strings.Join(img.Tags, ", ") + ")"
		}
		fmt.Fprintf(b, field, label, s)
	}
	b.WriteString("Replicas:\n")
	fmt.Fprintf(b, field, "  Desired:", in.Replicas.Desired)
	fmt.Fprintf(b, field, "  Current:", in.Replicas.Current)
	fmt.Fprintf(b, field, "  Updated:", in.Replicas.Updated)
	fmt.Fprintf(b, field, "  Ready:", in.Replicas.Ready)
	fmt.Fprintf(b, field, "  Available:", in.Replicas.Available)
	b.WriteString("\n")

	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATUS\tAGE\tINFO")
	fmt.Fprintf(tw, "%s %s\tRollout\t%s %s\t%s\t\n", IconRollout, in.Name, StatusIcon(in.Status), in.Status, Age(in.Created, now))
	revs := in.Revisions()
	for i, rev := range revs {
		prefix, sub := branches(i == len(revs)-1, "")
		fmt.Fprintf(tw, "%s%s revision:%d\t\t\t\t\n", prefix, IconRevision, rev)
		var rss []ReplicaSet
		for _, r := range in.ReplicaSets {
			if r.Revision == rev {
				rss = append(rss, r)
			}
		}
		var runs []AnalysisRun
		for _, r := range in.AnalysisRuns {
			if r.Revision == rev {
				runs = append(runs, r)
			}
		}
		n, total := 0, len(rss)+len(runs)
		for _, r := range rss {
			n++
			p, s := branches(n == total, sub)
			writeReplicaSet(tw, r, p, s, now)
		}
		for _, r := range runs {
			n++
			p, _ := branches(n == total, sub)
			var info []string
			for _, c := range []struct {
				icon string
				n    int32
			}{{IconOK, r.Successful}, {IconBad, r.Failed}, {IconUnknown, r.Inconclusive}, {IconWarning, r.Error}} {
				if c.n > 0 {
					info = append(info, fmt.Sprintf("%s %d", c.icon, c.n))
				}
			}
			fmt.Fprintf(tw, "%s%s %s\tAnalysisRun\t%s %s\t%s\t%s\n", p, IconAnalysis, r.Name, StatusIcon(r.Status), r.Status, Age(r.Created, now), strings.Join(info, ","))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// tabwriter pads the last cell of a line with an empty INFO; trim it.
	var out strings.Builder
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		nl := strings.HasSuffix(l, "\n")
		out.WriteString(strings.TrimRight(l, " \n"))
		if nl {
			out.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func writeReplicaSet(w io.Writer, r ReplicaSet, prefix, sub string, now time.Time) {
	info := r.tags()
	if r.ScaleDownDeadline != "" {
		if d, err := time.Parse(time.RFC3339, r.ScaleDownDeadline); err == nil {
			if d.Before(now) {
				info = append(info, "delay:passed")
			} else {
				info = append(info, "delay:"+duration.HumanDuration(d.Sub(now)))
			}
		}
	}
	fmt.Fprintf(w, "%s%s %s\tReplicaSet\t%s %s\t%s\t%s\n", prefix, IconReplicaSet, r.Name, StatusIcon(r.Status), r.Status, Age(r.Created, now), strings.Join(info, ","))
	for i, p := range r.Pods {
		pp, _ := branches(i == len(r.Pods)-1, sub)
		info := []string{"ready:" + p.Ready}
		if p.Restarts > 0 {
			info = append(info, fmt.Sprintf("restarts:%d", p.Restarts))
		}
		fmt.Fprintf(w, "%s%s %s\tPod\t%s %s\t%s\t%s\n", pp, IconPod, p.Name, podIcon(p.Status), p.Status, Age(p.Created, now), strings.Join(info, ","))
	}
}

// branches is the tree's prefix for an element (last or not) under sub,
// and the prefix of that element's children.
func branches(last bool, sub string) (string, string) {
	if last {
		return sub + "└──", sub + "   "
	}
	return sub + "├──", sub + "│  "
}

// Row is one line of `meridian rollout list` (the JSON of `-o json`).
type Row struct {
	Namespace    string      `json:"namespace"`
	Name         string      `json:"name"`
	Strategy     string      `json:"strategy"`
	Status       string      `json:"status"`
	Message      string      `json:"message,omitempty"`
	Step         string      `json:"step"`
	SetWeight    string      `json:"setWeight"`
	ActualWeight string      `json:"actualWeight"`
	Ready        int32       `json:"ready"`
	Current      int32       `json:"current"`
	Desired      int32       `json:"desired"`
	UpToDate     int32       `json:"upToDate"`
	Available    int32       `json:"available"`
	Created      metav1.Time `json:"creationTimestamp"`
}

// NewRow summarizes a Rollout; rss (any ReplicaSets of its namespace)
// give a basic canary's actual weight.
func NewRow(ro *v1alpha1.Rollout, rss []appsv1.ReplicaSet) Row {
	phase, msg := Phase(ro)
	r := Row{Namespace: ro.Namespace, Name: ro.Name, Strategy: Strategy(ro), Status: string(phase), Message: msg,
		Step: "-", SetWeight: "-", ActualWeight: "-",
		Ready: ro.Status.ReadyReplicas, Current: ro.Status.Replicas, Desired: desired(ro),
		UpToDate: ro.Status.UpdatedReplicas, Available: ro.Status.AvailableReplicas, Created: ro.CreationTimestamp}
	if ro.Spec.Strategy.Canary != nil {
		r.Step = Step(ro)
		r.SetWeight = fmt.Sprint(SetWeight(ro))
		var canary int32
		for i := range rss {
			rs := &rss[i]
			h := rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]
			if ownedBy(rs.OwnerReferences, ro.UID) && h != "" && h == ro.Status.CurrentPodHash && h != ro.Status.StableRS {
				canary = rs.Status.AvailableReplicas
			}
		}
		r.ActualWeight = ActualWeight(ro, canary)
	}
	return r
}

// WriteList writes the rows as a table (with a NAMESPACE column for
// --all-namespaces); ages are counted to now.
func WriteList(w io.Writer, rows []Row, allNamespaces bool, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NAME\tSTRATEGY\tSTATUS\tSTEP\tSET-WEIGHT\tACTUAL-WEIGHT\tREADY\tDESIRED\tUP-TO-DATE\tAVAILABLE\tAGE"
	if allNamespaces {
		head = "NAMESPACE\t" + head
	}
	fmt.Fprintln(tw, head)
	for _, r := range rows {
		if allNamespaces {
			fmt.Fprintf(tw, "%s\t", r.Namespace)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%d\t%s\n", r.Name, r.Strategy, r.Status, r.Step, r.SetWeight, r.ActualWeight,
			r.Ready, r.Current, r.Desired, r.UpToDate, r.Available, Age(r.Created, now))
	}
	return tw.Flush()
}
