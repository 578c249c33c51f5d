package charts_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/meridian-mesh/meridian/charts"
	"github.com/meridian-mesh/meridian/cli/install"
)

// charts/meridian/crds is a copy of api/crds, which `make generate`
// (hack/gencrd.sh) writes: the same files, byte for byte.
func TestCRDsAreAPICRDs(t *testing.T) {
	names := func(dir string) []string {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range m {
			out = append(out, filepath.Base(p))
		}
		slices.Sort(out)
		return out
	}
	api, chart := names("../api/crds"), names("meridian/crds")
	if len(api) == 0 {
		t.Fatal("no CRDs in api/crds")
	}
	if !slices.Equal(api, chart) {
		t.Fatalf("api/crds has %v, charts/meridian/crds has %v: run `make generate` (hack/gencrd.sh copies them)", api, chart)
	}
	for _, n := range api {
		a, err := os.ReadFile(filepath.Join("../api/crds", n))
		if err != nil {
			t.Fatal(err)
		}
		c, err := os.ReadFile(filepath.Join("meridian/crds", n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, c) {
			t.Errorf("charts/meridian/crds/%s differs from api/crds/%s: run `make generate` (hack/gencrd.sh copies them)", n, n)
		}
	}
}

// The embedded chart is the directory on disk.
func TestEmbeddedChartIsTheDirectory(t *testing.T) {
	err := fs.WalkDir(charts.FS, charts.Meridian, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		emb, err := fs.ReadFile(charts.FS, p)
		if err != nil {
			return err
		}
		disk, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil {
			return err
		}
		if !bytes.Equal(emb, disk) {
			t.Errorf("%s: embedded copy differs", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Chart.yaml", "values.yaml", "values.schema.json", "README.md", "templates/_helpers.tpl"} {
		if _, err := fs.Stat(charts.FS, charts.Meridian+"/"+f); err != nil {
			t.Errorf("%s is not embedded: %v", f, err)
		}
	}
}

// `helm lint` passes with no warning (with the identity issuer made
// elsewhere: lint only logs a template's fail).
func TestHelmLint(t *testing.T) {
	kv := &install.Capabilities().KubeVersion
	l := lint.AllWithKubeVersion("meridian", map[string]any{"identity": map[string]any{"externalIssuer": true}}, "default", kv)
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		} else {
			t.Logf("helm lint: %s", m)
		}
	}
}
