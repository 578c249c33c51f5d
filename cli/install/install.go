// Package install renders Meridian's Helm chart (charts/meridian, embedded)
// into plain Kubernetes manifests with Helm's own Go packages (chart loader,
// chartutil values and schema, template engine, manifest sorter), so that
// `meridian install | kubectl apply -f -` applies the same objects as
// `helm install meridian ./charts/meridian`, with no helm binary and no
// cluster.
package install

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime/debug"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"

	"github.com/meridian-mesh/meridian/charts"
)

// ReleaseName is the Helm release name the chart is rendered as
// (.Release.Name); the chart's object names do not depend on it.
const ReleaseName = "meridian"

// DefaultVersion is the images' tag when the CLI's version is not stamped.
const DefaultVersion = "dev"

// LoadChart loads the embedded meridian chart. A non-empty appVersion
// replaces the chart's appVersion, the images' default tag.
func LoadChart(appVersion string) (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(charts.FS, charts.Meridian, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, charts.Meridian+"/")
		if rel == ".helmignore" {
			return nil // read by helm's directory loader, not part of the chart
		}
		b, err := fs.ReadFile(charts.FS, p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: rel, Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	if appVersion != "" {
		ch.Metadata.AppVersion = appVersion
	}
	return ch, nil
}

// Manifest is one rendered Kubernetes object.
type Manifest struct {
	Source  string // the template it came from: meridian/templates/…
	Kind    string
	Name    string
	Content string // YAML, without the leading "---"
}

// Render renders the chart's templates with vals (user values: the chart's
// values.yaml supplies the rest), checked against values.schema.json, and
// returns the objects in Helm's install order: by kind, then name. The
// CRDs are not included (see CRDs).
func Render(ch *chart.Chart, vals map[string]any) ([]Manifest, error) {
	return render(ch, vals, releaseutil.InstallOrder)
}

// fallbackKubeVersion is the Kubernetes version of the client-go in go.mod,
// for builds without module information.
const fallbackKubeVersion = "v1.34.0"

// Capabilities are what the chart is rendered against (.Capabilities):
// Helm's defaults, with the Kubernetes version this build's k8s.io/client-go
// is for (v0.34.x: v1.34.0), as Helm's own releases stamp theirs.
func Capabilities() *chartutil.Capabilities {
	caps := *chartutil.DefaultCapabilities
	v := fallbackKubeVersion
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path != "k8s.io/client-go" {
				continue
			}
			if d.Replace != nil {
				d = d.Replace
			}
			// v0.MINOR.PATCH
			if parts := strings.Split(strings.TrimPrefix(d.Version, "v"), "."); len(parts) >= 2 && parts[0] == "0" {
				v = "v1." + parts[1] + ".0"
			}
		}
	}
	if kv, err := chartutil.ParseKubeVersion(v); err == nil {
		caps.KubeVersion = *kv
	}
	return &caps
}

func render(ch *chart.Chart, vals map[string]any, order releaseutil.KindSortOrder) ([]Manifest, error) {
	caps := Capabilities()
	if ch.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return nil, fmt.Errorf("chart requires kubeVersion %s, which is incompatible with Kubernetes %s", ch.Metadata.KubeVersion, caps.KubeVersion.String())
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name:      ReleaseName,
		Namespace: namespaceOf(ch, vals),
		Revision:  1,
		IsInstall: true,
	}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	hooks, ms, err := releaseutil.SortManifests(files, nil, order)
	if err != nil {
		return nil, err
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("chart: %s is a hook: hooks cannot be rendered into plain manifests", hooks[0].Path)
	}
	out := make([]Manifest, 0, len(ms))
	for _, m := range ms {
		if m.Head == nil || m.Head.Kind == "" {
			return nil, fmt.Errorf("%s: an object without a kind", m.Name)
		}
		o := Manifest{Source: m.Name, Kind: m.Head.Kind, Content: m.Content}
		if m.Head.Metadata != nil {
			o.Name = m.Head.Metadata.Name
		}
		out = append(out, o)
	}
	rank := func(kind string) int {
		if i := slices.Index(order, kind); i >= 0 {
			return i
		}
		return len(order) // unknown kinds last, as Helm does
	}
	slices.SortStableFunc(out, func(a, b Manifest) int {
		return cmp.Or(
			cmp.Compare(rank(a.Kind), rank(b.Kind)),
			strings.Compare(a.Kind, b.Kind),
			strings.Compare(a.Name, b.Name),
			strings.Compare(a.Source, b.Source),
		)
	})
	return out, nil
}

// namespaceOf is .Release.Namespace: the chart's namespace value. (The
// chart names the namespace of every object from .Values.namespace.)
func namespaceOf(ch *chart.Chart, vals map[string]any) string {
	if v, err := chartutil.CoalesceValues(ch, vals); err == nil {
		if ns, ok := v["namespace"].(string); ok && ns != "" {
			return ns
		}
	}
	return "default"
}

// CRDs returns the chart's CRDs (crds/), sorted by file name, exactly as
// they are in the chart.
func CRDs(ch *chart.Chart) []Manifest {
	var out []Manifest
	for _, c := range ch.CRDObjects() {
		content := strings.TrimSpace(string(c.File.Data))
		content = strings.TrimSpace(strings.TrimPrefix(content, "---"))
		out = append(out, Manifest{
			Source:  path.Join(ch.Name(), c.Name),
			Kind:    "CustomResourceDefinition",
			Content: content,
		})
	}
	slices.SortFunc(out, func(a, b Manifest) int { return strings.Compare(a.Source, b.Source) })
	return out
}

// Write writes manifests as one YAML stream in the form `helm template`
// prints: each document "---", then "# Source: <template>", then the object.
func Write(w io.Writer, ms []Manifest) error {
	var b bytes.Buffer
	for _, m := range ms {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Source, strings.TrimRight(m.Content, "\n"))
	}
	_, err := w.Write(b.Bytes())
	return err
}
