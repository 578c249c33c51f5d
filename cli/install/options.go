package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/controlplane/identity"
)

// The values that hold the identity issuer (the Secret
// meridian-identity-issuer's ca.crt, tls.crt and tls.key).
var (
	valTrustAnchors = []string{"identity", "trustAnchorsPEM"}
	valIssuerCrt    = []string{"identity", "issuer", "tlsCrtPEM"}
	valIssuerKey    = []string{"identity", "issuer", "tlsKeyPEM"}
)

// Options are the inputs of `meridian install` and `meridian uninstall`.
type Options struct {
	// Version is the CLI's version: the chart is rendered with it as
	// appVersion, the images' tag unless image.tag is set. Empty:
	// DefaultVersion.
	Version string
	// Values are the user's values, as helm's flags give them: -f files,
	// --set, --set-string, --set-file.
	Values ValueOptions
	// The identity issuer as files: the trust anchors (ca.crt), the issuer
	// certificate (tls.crt) and its key (tls.key). All three or none.
	TrustAnchorsFile, IssuerCertFile, IssuerKeyFile string
	// CheckCluster, when set, is called before install generates a new
	// identity issuer, with the namespace it would be installed to; an
	// error stops install (see ClusterChecker).
	CheckCluster func(ctx context.Context, namespace string) error
	// Log is told what install decides on its own, such as generating the
	// identity issuer (the CLI's standard error). Nil: discarded.
	Log io.Writer
	// GatewayAPICRDs says whether PrintedCRDs includes the Gateway API's
	// CRDs (empty: auto), and GatewayAPIInstalled, when set, is how auto
	// asks the cluster whether it has them already (see
	// GatewayAPIChecker): it names what it found, "" for nothing.
	GatewayAPICRDs      GatewayAPIMode
	GatewayAPIInstalled func(ctx context.Context) (string, error)
	// GatewayAPIChannel is the release channel of the Gateway API CRDs
	// PrintedCRDs includes (empty: standard).
	GatewayAPIChannel GatewayAPIChannel
}

// Chart loads the embedded chart with the options' version as appVersion.
func (o Options) Chart() (*chart.Chart, error) {
	v := o.Version
	if v == "" {
		v = DefaultVersion
	}
	return LoadChart(v)
}

// Install renders the control plane (the chart's templates, no CRDs) in
// install order. Without an identity issuer (no files, no identity values,
// identity.externalIssuer false) it generates one, ECDSA P-256: a trust
// anchor valid 10 years and an issuer valid 1 year, for the trust domain
// identity.trustDomain, and says so on Log. Given the same issuer, the
// output is the same byte for byte.
func Install(ctx context.Context, o Options) ([]Manifest, error) {
	ch, err := o.Chart()
	if err != nil {
		return nil, err
	}
	vals, err := o.values(ctx, ch, true)
	if err != nil {
		return nil, err
	}
	return Render(ch, vals)
}

// CRDs renders nothing: it returns the chart's CRDs (crds/) as they are.
// Helm installs crds/ before the templates; `meridian install --crds`
// prints these.
func (o Options) CRDs() ([]Manifest, error) {
	ch, err := o.Chart()
	if err != nil {
		return nil, err
	}
	return CRDs(ch), nil
}

// Uninstall returns what `kubectl delete -f -` needs to remove the control
// plane: each object the chart renders with the same values, reduced to
// apiVersion, kind, name and namespace, in Helm's uninstall order. The CRDs
// are not included: deleting them deletes every object of their kinds.
func Uninstall(ctx context.Context, o Options) ([]Manifest, error) {
	ch, err := o.Chart()
	if err != nil {
		return nil, err
	}
	o.Log = nil
	o.CheckCluster = nil
	vals, err := o.values(ctx, ch, false)
	if err != nil {
		return nil, err
	}
	ms, err := render(ch, vals, releaseutil.UninstallOrder)
	if err != nil {
		return nil, err
	}
	for i, m := range ms {
		stub, err := stubOf(m.Content)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Source, err)
		}
		ms[i].Content = stub
	}
	return ms, nil
}

// stubOf reduces an object to what identifies it.
func stubOf(content string) (string, error) {
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace,omitempty"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(content), &obj); err != nil {
		return "", err
	}
	b, err := yaml.Marshal(obj)
	return string(b), err
}

// values merges the user's values with the identity issuer: from the
// files, or generated when none is given (generate false: a throwaway one,
// for Uninstall, which needs the objects' names only).
func (o Options) values(ctx context.Context, ch *chart.Chart, generate bool) (map[string]any, error) {
	user, err := Values(o.Values)
	if err != nil {
		return nil, err
	}
	if user == nil {
		user = map[string]any{}
	}
	files := []string{o.TrustAnchorsFile, o.IssuerCertFile, o.IssuerKeyFile}
	given := 0
	for _, f := range files {
		if f != "" {
			given++
		}
	}
	switch given {
	case 0:
	case len(files):
		for _, p := range [][]string{valTrustAnchors, valIssuerCrt, valIssuerKey} {
			if s, _ := lookup(user, p).(string); s != "" {
				return nil, fmt.Errorf("the identity issuer is given twice: by the --identity-*-file flags and by the value %s; give it once", strings.Join(p, "."))
			}
		}
		for i, p := range [][]string{valTrustAnchors, valIssuerCrt, valIssuerKey} {
			b, err := os.ReadFile(files[i])
			if err != nil {
				return nil, fmt.Errorf("identity issuer: %w", err)
			}
			set(user, p, string(b))
		}
	default:
		return nil, errors.New("--identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file go together: give all three, or none to have install generate an issuer")
	}

	// Check the values before acting on them, so that a bad value is
	// reported as the schema says, not as a failure further on.
	merged, err := chartutil.CoalesceValues(ch, user)
	if err != nil {
		return nil, err
	}
	if err := chartutil.ValidateAgainstSchema(ch, merged); err != nil {
		return nil, fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s", err)
	}
	if ext, _ := lookup(merged, []string{"identity", "externalIssuer"}).(bool); ext {
		return user, nil
	}
	tdName, _ := lookup(merged, []string{"identity", "trustDomain"}).(string)
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("identity.trustDomain %q: %w", tdName, err)
	}
	ta, _ := lookup(merged, valTrustAnchors).(string)
	crt, _ := lookup(merged, valIssuerCrt).(string)
	key, _ := lookup(merged, valIssuerKey).(string)
	switch {
	case ta == "" && crt == "" && key == "":
		ns, _ := merged["namespace"].(string)
		if generate && o.CheckCluster != nil {
			if err := o.CheckCluster(ctx, ns); err != nil {
				return nil, err
			}
		}
		id, err := GenerateIssuer(td)
		if err != nil {
			return nil, err
		}
		set(user, valTrustAnchors, id.TrustAnchorsPEM)
		set(user, valIssuerCrt, id.IssuerCrtPEM)
		set(user, valIssuerKey, id.IssuerKeyPEM)
		if generate && o.Log != nil {
			fmt.Fprintf(o.Log, "meridian install: generated an identity trust anchor (ECDSA P-256, valid 10 years) and issuer (valid 1 year) for trust domain %s; they are in the Secret %s/meridian-identity-issuer of the output. Keep them: installing again generates new ones, which meshed pods would not trust. To reuse them: kubectl -n %s get secret meridian-identity-issuer -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt (and tls.crt, tls.key), then pass --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file tls.crt --identity-issuer-key-file tls.key\n", td.Name(), ns, ns)
		}
	case ta != "" && crt != "" && key != "":
		if _, err := identity.Parse(td, []byte(crt), []byte(key), []byte(ta)); err != nil {
			return nil, err
		}
	default:
		// Some but not all: the chart fails, naming the missing value.
	}
	return user, nil
}

// Issuer is an identity issuer in PEM, as the chart's values take it.
type Issuer struct {
	TrustAnchorsPEM string // ca.crt
	IssuerCrtPEM    string // tls.crt
	IssuerKeyPEM    string // tls.key
}

// GenerateIssuer makes a trust anchor (10 years) and an issuer (1 year),
// ECDSA P-256, for td, with controlplane/identity: the same CA that
// `meridian controller` generates in local mode, in the shape it loads.
func GenerateIssuer(td spiffeid.TrustDomain) (Issuer, error) {
	ca, err := identity.Generate(td)
	if err != nil {
		return Issuer{}, err
	}
	dir, err := os.MkdirTemp("", "meridian-issuer-")
	if err != nil {
		return Issuer{}, err
	}
	defer os.RemoveAll(dir)
	if err := ca.WriteDir(dir); err != nil {
		return Issuer{}, err
	}
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		return string(b), err
	}
	var id Issuer
	if id.TrustAnchorsPEM, err = read("ca.crt"); err != nil {
		return Issuer{}, err
	}
	if id.IssuerCrtPEM, err = read("tls.crt"); err != nil {
		return Issuer{}, err
	}
	if id.IssuerKeyPEM, err = read("tls.key"); err != nil {
		return Issuer{}, err
	}
	return id, nil
}

// lookup returns the value at path in nested maps, or nil.
func lookup(m map[string]any, path []string) any {
	var cur any = m
	for _, k := range path {
		switch mm := cur.(type) {
		case map[string]any:
			cur = mm[k]
		case chartutil.Values:
			cur = mm[k]
		default:
			return nil
		}
	}
	return cur
}

// set puts v at path in nested maps, making the maps on the way.
func set(m map[string]any, path []string, v any) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}
