package check

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/crds"
)

var embedded = sync.OnceValues(func() ([]*apiextv1.CustomResourceDefinition, error) {
	return ParseCRDs(crds.FS)
})

// EmbeddedCRDs returns the CustomResourceDefinitions this binary carries
// (api/crds), sorted by name.
func EmbeddedCRDs() ([]*apiextv1.CustomResourceDefinition, error) { return embedded() }

// ParseCRDs reads every *.yaml file at the top of fsys as one
// CustomResourceDefinition.
func ParseCRDs(fsys fs.FS) ([]*apiextv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, err
	}
	var out []*apiextv1.CustomResourceDefinition
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		var crd apiextv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(b, &crd); err != nil {
			return nil, fmt.Errorf("%s: %w", path.Base(n), err)
		}
		if crd.Kind != "CustomResourceDefinition" || crd.Name == "" {
			return nil, fmt.Errorf("%s: not a named CustomResourceDefinition", path.Base(n))
		}
		out = append(out, &crd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// clusterCRDs fetches the cluster's copy of each embedded CRD; missing ones
// are named in missing.
func clusterCRDs(ctx context.Context, s *State) (want []*apiextv1.CustomResourceDefinition, have map[string]*apiextv1.CustomResourceDefinition, missing []string, err error) {
	if err := s.needClient(); err != nil {
		return nil, nil, nil, err
	}
	want, err = EmbeddedCRDs()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("the CRDs embedded in this binary: %w", err)
	}
	have = map[string]*apiextv1.CustomResourceDefinition{}
	for _, w := range want {
		c, err := s.APIExt.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, w.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, w.Name)
		case err != nil:
			return nil, nil, nil, fmt.Errorf("get CustomResourceDefinition %s: %w", w.Name, err)
		default:
			have[w.Name] = c
		}
	}
	return want, have, missing, nil
}

func crdChecks(Options) []Check {
	return []Check{
		{
			Group:       GroupCRDs,
			Description: "control plane CustomResourceDefinitions exist",
			Hint:        installCRDsCommand,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				_, _, missing, err := clusterCRDs(ctx, s)
				if err != nil {
					return err
				}
				if len(missing) > 0 {
					return fmt.Errorf("missing CustomResourceDefinitions: %s", strings.Join(missing, ", "))
				}
				return nil
			},
		},
		{
			Group:       GroupCRDs,
			Description: "control plane CustomResourceDefinitions are established",
			Hint:        "kubectl get crd -o wide; kubectl describe crd NAME shows why the API server did not accept it",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				want, have, missing, err := clusterCRDs(ctx, s)
				if err != nil {
					return err
				}
				if len(have) == 0 && len(missing) > 0 {
					return Skip("no CRD installed")
				}
				var probs []string
				for _, w := range want {
					c := have[w.Name]
					if c == nil {
						continue
					}
					for _, t := range []struct {
						cond apiextv1.CustomResourceDefinitionConditionType
						what string
					}{{apiextv1.NamesAccepted, "accepted (NamesAccepted)"}, {apiextv1.Established, "established"}} {
						if cond := crdCondition(c, t.cond); cond == nil || cond.Status != apiextv1.ConditionTrue {
							msg := fmt.Sprintf("%s is not %s", c.Name, t.what)
							if cond != nil && cond.Message != "" {
								msg += ": " + cond.Message
							}
							probs = append(probs, msg)
							break
						}
					}
				}
				return joinProblems(probs)
			},
		},
		{
			Group:       GroupCRDs,
			Description: "control plane CustomResourceDefinitions are up to date",
			Hint:        installCRDsCommand,
			Run: func(ctx context.Context, s *State) error {
				want, have, missing, err := clusterCRDs(ctx, s)
				if err != nil {
					return err
				}
				if len(have) == 0 && len(missing) > 0 {
					return Skip("no CRD installed")
				}
				var probs []string
				for _, w := range want {
					if c := have[w.Name]; c != nil {
						probs = append(probs, crdDiff(w, c)...)
					}
				}
				return joinProblems(probs)
			},
		},
	}
}

func crdCondition(c *apiextv1.CustomResourceDefinition, t apiextv1.CustomResourceDefinitionConditionType) *apiextv1.CustomResourceDefinitionCondition {
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == t {
			return &c.Status.Conditions[i]
		}
	}
	return nil
}

// crdDiff says how the cluster's CRD (have) differs from this binary's
// (want): versions served and stored, their schemas and subresources, and
// objects stored in versions this binary no longer serves.
func crdDiff(want, have *apiextv1.CustomResourceDefinition) []string {
	var probs []string
	byName := map[string]*apiextv1.CustomResourceDefinitionVersion{}
	for i := range have.Spec.Versions {
		byName[have.Spec.Versions[i].Name] = &have.Spec.Versions[i]
	}
	wantNames := map[string]bool{}
	for i := range want.Spec.Versions {
		w := &want.Spec.Versions[i]
		wantNames[w.Name] = true
		h := byName[w.Name]
		switch {
		case h == nil:
			probs = append(probs, fmt.Sprintf("%s has no version %s", want.Name, w.Name))
			continue
		case h.Served != w.Served:
			probs = append(probs, fmt.Sprintf("%s version %s: served is %t, want %t", want.Name, w.Name, h.Served, w.Served))
		case h.Storage != w.Storage:
			probs = append(probs, fmt.Sprintf("%s version %s: storage is %t, want %t", want.Name, w.Name, h.Storage, w.Storage))
		}
		if !equality.Semantic.DeepEqual(h.Schema, w.Schema) {
			probs = append(probs, fmt.Sprintf("%s version %s: the schema differs from this CLI's", want.Name, w.Name))
		}
		if !equality.Semantic.DeepEqual(h.Subresources, w.Subresources) {
			probs = append(probs, fmt.Sprintf("%s version %s: the subresources differ from this CLI's", want.Name, w.Name))
		}
	}
	for _, v := range have.Status.StoredVersions {
		if !wantNames[v] {
			probs = append(probs, fmt.Sprintf("%s: objects are stored as %s, a version this CLI does not know (migrate them, then remove %s from status.storedVersions)", want.Name, v, v))
		}
	}
	var extra []string
	for n := range byName {
		if !wantNames[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		probs = append(probs, fmt.Sprintf("%s serves versions this CLI does not know: %s (a newer install?)", want.Name, strings.Join(extra, ", ")))
	}
	return probs
}

// joinProblems turns a list of problems into one error, a line each.
func joinProblems(probs []string) error {
	if len(probs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(probs, "\n"))
}
