package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/cli/install"
)

// run runs the CLI with args and returns its standard output and error.
func runInstallCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// issuerFlags writes a generated issuer to files and returns the flags
// that name them.
func installIssuerFlags(t *testing.T) []string {
	t.Helper()
	id, err := install.GenerateIssuer(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{"ca.crt": id.TrustAnchorsPEM, "issuer.crt": id.IssuerCrtPEM, "issuer.key": id.IssuerKeyPEM}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []string{
		"--identity-trust-anchors-file", filepath.Join(dir, "ca.crt"),
		"--identity-issuer-certificate-file", filepath.Join(dir, "issuer.crt"),
		"--identity-issuer-key-file", filepath.Join(dir, "issuer.key"),
	}
}

// docs decodes a YAML stream into its objects.
func installDocs(t *testing.T, stream string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, d := range strings.Split(stream, "\n---\n") {
		d = strings.TrimPrefix(d, "---\n")
		if !strings.HasPrefix(d, "# Source: meridian/") && !strings.HasPrefix(d, "# Source: gateway-api-experimental/") {
			t.Errorf("a document without its # Source line:\n%.200s", d)
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func installDeployment(t *testing.T, objs []map[string]any) map[string]any {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == "Deployment" {
			return o
		}
	}
	t.Fatal("no Deployment")
	return nil
}

func installContainer(t *testing.T, objs []map[string]any) map[string]any {
	t.Helper()
	d := installDeployment(t, objs)
	spec := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec["containers"].([]any)[0].(map[string]any)
}

func TestInstallCLIIsDeterministic(t *testing.T) {
	flags := append([]string{"install", "--ignore-cluster"}, installIssuerFlags(t)...)
	a, errA, err := runInstallCLI(t, flags...)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := runInstallCLI(t, flags...)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("two runs with the same issuer print different manifests")
	}
	if errA != "" {
		t.Errorf("stderr: %q", errA)
	}
	if !strings.HasPrefix(a, "---\n# Source: meridian/templates/namespace.yaml\napiVersion: v1\nkind: Namespace\n") {
		t.Errorf("output starts:\n%.200s", a)
	}
	for _, o := range installDocs(t, a) {
		if o["kind"] == "CustomResourceDefinition" {
			t.Error("install without --crds prints a CRD")
		}
	}
}

func TestInstallCLIImageTagIsTheCLIVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	for _, tc := range []struct{ stamped, want string }{{"", "dev"}, {"v3.1.4", "v3.1.4"}} {
		version = tc.stamped
		out, _, err := runInstallCLI(t, append([]string{"install", "--ignore-cluster"}, installIssuerFlags(t)...)...)
		if err != nil {
			t.Fatal(err)
		}
		if img := installContainer(t, installDocs(t, out))["image"]; img != "ghcr.io/meridian-mesh/controller:"+tc.want {
			t.Errorf("version %q: image %v", tc.stamped, img)
		}
		if !strings.Contains(out, "--proxy-image=ghcr.io/meridian-mesh/proxy:"+tc.want+"\n") {
			t.Errorf("version %q: no proxy image of tag %s", tc.stamped, tc.want)
		}
	}
}

func TestInstallCLIValueFlags(t *testing.T) {
	vf := filepath.Join(t.TempDir(), "v.yaml")
	if err := os.WriteFile(vf, []byte("image:\n  registry: registry.example.com/m\ncontroller:\n  replicas: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"install", "--ignore-cluster", "-f", vf, "--set", "controller.replicas=5", "--set", "controller.resources.limits.memory=1Gi", "--set-string", "image.tag=1.0"}, installIssuerFlags(t)...)
	out, _, err := runInstallCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs := installDocs(t, out)
	if r := installDeployment(t, objs)["spec"].(map[string]any)["replicas"]; r != float64(5) {
		t.Errorf("replicas %v", r)
	}
	c := installContainer(t, objs)
	if c["image"] != "registry.example.com/m/controller:1.0" {
		t.Errorf("image %v", c["image"])
	}
	if m := c["resources"].(map[string]any)["limits"].(map[string]any)["memory"]; m != "1Gi" {
		t.Errorf("memory limit %v", m)
	}
}

func TestInstallCLIGeneratesIssuer(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none")) // no cluster to look at
	t.Setenv("HOME", t.TempDir())
	out, stderr, err := runInstallCLI(t, "install")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "generated an identity trust anchor") {
		t.Errorf("stderr %q", stderr)
	}
	if !strings.Contains(out, "kind: Secret\nmetadata:\n  name: meridian-identity-issuer") {
		t.Error("no issuer Secret")
	}
}

func TestInstallCLICRDs(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none")) // no cluster to ask: all of them
	out, _, err := runInstallCLI(t, "install", "--crds")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := install.Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := install.Write(&want, ms); err != nil {
		t.Fatal(err)
	}
	if out != want.String() {
		t.Error("install --crds is not the chart's CRDs")
	}
	objs := installDocs(t, out)
	if len(objs) == 0 {
		t.Fatal("no CRDs")
	}
	for _, o := range objs {
		if o["kind"] != "CustomResourceDefinition" {
			t.Errorf("install --crds prints a %v", o["kind"])
		}
	}
}

// --gateway-api-crds=never leaves out exactly the Gateway API's CRDs;
// always prints them without asking a cluster.
func TestInstallCLIGatewayAPICRDs(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	kinds := func(args ...string) (own, gateway int) {
		out, stderr, err := runInstallCLI(t, args...)
		if err != nil || stderr != "" {
			t.Fatalf("%v: %v %s", args, err, stderr)
		}
		for _, o := range installDocs(t, out) {
			if o["spec"].(map[string]any)["group"] == install.GatewayAPIGroup {
				gateway++
			} else {
				own++
			}
		}
		return own, gateway
	}
	ownAll, gwAll := kinds("install", "--crds", "--gateway-api-crds=always")
	ownNever, gwNever := kinds("install", "--crds", "--gateway-api-crds=never")
	if gwAll < 8 || gwNever != 0 || ownAll == 0 || ownNever != ownAll {
		t.Errorf("always: %d own + %d Gateway API; never: %d + %d", ownAll, gwAll, ownNever, gwNever)
	}
}

// --gateway-api-channel=experimental prints the experimental channel's
// CRDs, byte for byte the files the generator copied, in place of the
// standard ones, and Meridian's own as before.
func TestInstallCLIGatewayAPIExperimental(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	out, stderr, err := runInstallCLI(t, "install", "--crds", "--gateway-api-channel=experimental")
	if err != nil || stderr != "" {
		t.Fatalf("%v %s", err, stderr)
	}
	exp, err := install.GatewayAPIExperimentalCRDs()
	if err != nil {
		t.Fatal(err)
	}
	all, err := install.Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := install.Write(&want, append(exp, slices.DeleteFunc(all, install.IsGatewayAPI)...)); err != nil {
		t.Fatal(err)
	}
	if out != want.String() {
		t.Error("install --crds --gateway-api-channel=experimental is not the experimental CRDs and Meridian's")
	}
	channels := map[string]int{}
	retry := false
	for _, o := range installDocs(t, out) {
		md := o["metadata"].(map[string]any)
		if a, ok := md["annotations"].(map[string]any); ok {
			if ch, ok := a[install.GatewayAPIGroup+"/channel"].(string); ok {
				channels[ch]++
			}
		}
		if md["name"] == "httproutes."+install.GatewayAPIGroup {
			v := o["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)
			props := func(m any, k string) any {
				return m.(map[string]any)["properties"].(map[string]any)[k]
			}
			rules := props(props(v["schema"].(map[string]any)["openAPIV3Schema"], "spec"), "rules").(map[string]any)["items"]
			retry = props(rules, "retry") != nil
		}
	}
	if channels["standard"] != 0 || channels["experimental"] < 10 || !retry {
		t.Errorf("channels %v, HTTPRoute with retry %v", channels, retry)
	}
	std, _, err := runInstallCLI(t, "install", "--crds", "--gateway-api-channel=standard")
	if err != nil {
		t.Fatal(err)
	}
	if def, _, _ := runInstallCLI(t, "install", "--crds"); std != def {
		t.Error("--gateway-api-channel=standard is not the default")
	}
}

func TestInstallCLIErrors(t *testing.T) {
	flags := installIssuerFlags(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--ignore-cluster", flags[0], flags[1]}, "go together"},
		{append([]string{"install", "--ignore-cluster", "--set", "controller.replicas=lots"}, flags...), "/controller/replicas"},
		{[]string{"install", "--ignore-cluster", "--set", "identity.issuer.tlsKeyPEM=x"}, "identity.issuer.tlsCrtPEM is required"},
		{[]string{"install", "extra"}, "unknown command"},
		{[]string{"install", "--crds", "--gateway-api-crds", "sometimes"}, "allowed are auto, always and never"},
		{append([]string{"install", "--ignore-cluster", "--gateway-api-crds", "never"}, flags...), "--gateway-api-crds goes with --crds"},
		{[]string{"install", "--crds", "--gateway-api-channel", "beta"}, `invalid argument "beta" for "--gateway-api-channel" flag: gateway API channel "beta": allowed are standard and experimental`},
		{append([]string{"install", "--ignore-cluster", "--gateway-api-channel", "experimental"}, flags...), "--gateway-api-channel goes with --crds"},
		{[]string{"install", "--crds", "--gateway-api-channel=experimental", "--gateway-api-crds=never"}, "--gateway-api-channel=experimental with --gateway-api-crds=never"},
	} {
		_, _, err := runInstallCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestUninstallCLI(t *testing.T) {
	out, stderr, err := runInstallCLI(t, "uninstall", "--set", "namespace=mesh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "meridian install --crds | kubectl delete -f -") {
		t.Errorf("stderr %q", stderr)
	}
	kinds := map[string]bool{}
	for _, o := range installDocs(t, out) {
		kinds[o["kind"].(string)] = true
		if _, ok := o["spec"]; ok {
			t.Errorf("%v: uninstall prints its spec", o["kind"])
		}
		if _, ok := o["data"]; ok {
			t.Errorf("%v: uninstall prints its data", o["kind"])
		}
		md := o["metadata"].(map[string]any)
		if ns, ok := md["namespace"]; ok && ns != "mesh" {
			t.Errorf("%v %v in namespace %v", o["kind"], md["name"], ns)
		}
	}
	for _, k := range []string{"Namespace", "Deployment", "ClusterRole", "MutatingWebhookConfiguration", "Secret"} {
		if !kinds[k] {
			t.Errorf("uninstall does not print the %s", k)
		}
	}
	if kinds["CustomResourceDefinition"] {
		t.Error("uninstall prints CRDs")
	}
}
