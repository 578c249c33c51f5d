package install

import (
	"fmt"
	"io"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// ValueOptions are the user's values as helm's flags give them. They merge
// as helm's do (helm.sh/helm/v3/pkg/cli/values, whose getters for remote
// files and whose dependencies are left out): the -f files in order, each
// merged over the last, then every --set, --set-string and --set-file.
type ValueOptions struct {
	ValueFiles   []string // -f/--values: YAML files, "-" for standard input
	Values       []string // --set key=value[,key=value]
	StringValues []string // --set-string key=value[,key=value]
	FileValues   []string // --set-file key=path[,key=path]
}

// Values merges o into one map of values.
func Values(o ValueOptions) (map[string]any, error) {
	base := map[string]any{}
	for _, f := range o.ValueFiles {
		b, err := readValuesFile(f)
		if err != nil {
			return nil, err
		}
		cur := map[string]any{}
		if err := yaml.Unmarshal(b, &cur); err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", f, err)
		}
		base = mergeMaps(base, cur)
	}
	for _, v := range o.Values {
		if err := strvals.ParseInto(v, base); err != nil {
			return nil, fmt.Errorf("failed parsing --set data: %w", err)
		}
	}
	for _, v := range o.StringValues {
		if err := strvals.ParseIntoString(v, base); err != nil {
			return nil, fmt.Errorf("failed parsing --set-string data: %w", err)
		}
	}
	for _, v := range o.FileValues {
		reader := func(rs []rune) (any, error) {
			b, err := readValuesFile(string(rs))
			return string(b), err
		}
		if err := strvals.ParseIntoFile(v, base, reader); err != nil {
			return nil, fmt.Errorf("failed parsing --set-file data: %w", err)
		}
	}
	return base, nil
}

func readValuesFile(p string) ([]byte, error) {
	if strings.TrimSpace(p) == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(p)
}

// mergeMaps merges b over a, recursing into maps both have.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}
