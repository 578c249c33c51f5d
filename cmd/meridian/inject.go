package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/internal/names"
)

func newInjectCmd() *cobra.Command {
	var o injectFlags
	cmd := &cobra.Command{
		Use:   "inject [--manual] FILE|DIR|URL|- ...",
		Short: "Mesh Kubernetes workloads: annotate their pod templates (or add the proxy with --manual)",
		Long: `Reads Kubernetes manifests (files, directories searched recursively for
*.yaml, *.yml and *.json, http(s) URLs, or - for stdin; multi-document YAML
and v1 Lists) and writes them to stdout with Meridian's proxy asked for.

By default the pod templates of Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs and CronJobs, Pods, and Namespaces get the annotation
meridian.io/inject: enabled; the proxy injector (the controller's admission
webhook) then adds the proxy to the pods when they are created.

With --manual the proxy is added to the pod templates here, as the injector
would add it: the init container meridian-init, the native sidecar
meridian-proxy and the identity token volume. --manual needs the mesh's
identity trust anchors (--identity-trust-anchors-file, the ca.crt of the
meridian-identity-issuer Secret) and fails without them.

Everything else passes through unchanged. One line per object on stderr says
what was done, e.g. 'deployment "web" injected' or 'service "web" skipped:
not a workload'.

  kubectl get deploy -n emojivoto -o yaml | meridian inject - | kubectl apply -f -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := transformer{mode: modeAnnotate}
			if o.manual {
				cfg, err := o.config()
				if err != nil {
					return err
				}
				t = transformer{mode: modeManual, cfg: cfg}
			}
			return runTransform(cmd, args, t)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.manual, "manual", false, "add the proxy to the pod templates instead of annotating them")
	f.StringVar(&o.proxyVersion, "proxy-version", cliVersion(), "--manual: the proxy's version (meridian.io/proxy-version) and the default image tag")
	f.StringVar(&o.proxyImage, "proxy-image", "", "--manual: the proxy's image (default "+inject.ProxyImageRepo+":<proxy-version>)")
	f.StringVar(&o.proxyInitImage, "proxy-init-image", "", "--manual: the init container's image (default "+inject.ProxyInitImageRepo+":<proxy-version>)")
	f.StringVar(&o.controllerNamespace, "controller-namespace", "meridian", "--manual: the control plane's namespace")
	f.StringVar(&o.clusterDomain, "cluster-domain", compile.DefaultClusterDomain, "--manual: the cluster's DNS domain")
	f.StringVar(&o.trustDomain, "trust-domain", compile.DefaultTrustDomain, "--manual: the identity trust domain")
	f.StringVar(&o.anchorsFile, "identity-trust-anchors-file", "", "--manual (required): PEM file of the identity trust anchors, e.g. from\n"+
		"kubectl -n meridian get secret meridian-identity-issuer -o jsonpath='{.data.ca\\.crt}' | base64 -d")
	return cmd
}

func newUninjectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "uninject FILE|DIR|URL|- ...",
		Short: "Unmesh Kubernetes workloads: remove the inject annotation and any manually injected proxy",
		Long: `Reads Kubernetes manifests as 'meridian inject' does and writes them to
stdout without the meridian.io/inject annotation (on pod templates, Pods and
Namespaces) and without what 'meridian inject --manual' added: the
meridian-init and meridian-proxy containers, the identity token volume and
the meridian.io/proxy-version annotation. Everything else passes through
unchanged; one line per object on stderr says what was done.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTransform(cmd, args, transformer{mode: modeUninject})
		},
	}
}

type injectFlags struct {
	manual                                   bool
	proxyImage, proxyInitImage, proxyVersion string
	controllerNamespace, clusterDomain       string
	trustDomain, anchorsFile                 string
}

func (o injectFlags) config() (inject.Config, error) {
	if o.anchorsFile == "" {
		return inject.Config{}, errors.New("--manual needs the identity trust anchors: pass --identity-trust-anchors-file=FILE " +
			"(the ca.crt of the meridian-identity-issuer Secret: kubectl -n " + o.controllerNamespace +
			" get secret meridian-identity-issuer -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt)")
	}
	pemBytes, err := os.ReadFile(o.anchorsFile)
	if err != nil {
		return inject.Config{}, fmt.Errorf("--identity-trust-anchors-file: %w", err)
	}
	cfg := inject.DefaultConfig(o.proxyVersion, o.controllerNamespace)
	if o.proxyImage != "" {
		cfg.ProxyImage = o.proxyImage
	}
	if o.proxyInitImage != "" {
		cfg.ProxyInitImage = o.proxyInitImage
	}
	cfg.ControllerAddr = inject.ControllerAddr("", o.controllerNamespace, o.clusterDomain)
	cfg.TrustDomain = o.trustDomain
	cfg.ControllerIdentity = inject.ControllerIdentity(o.trustDomain, o.controllerNamespace)
	cfg.TrustAnchorsPEM = string(pemBytes)
	if err := cfg.Validate(); err != nil {
		if !strings.Contains(cfg.TrustAnchorsPEM, "-----BEGIN CERTIFICATE-----") {
			return inject.Config{}, fmt.Errorf("--identity-trust-anchors-file %s: no PEM certificate", o.anchorsFile)
		}
		return inject.Config{}, err
	}
	return cfg, nil
}

// runTransform reads every input, transforms each document and writes
// them to stdout, only when all of them went well.
func runTransform(cmd *cobra.Command, args []string, t transformer) error {
	docs, err := readManifests(cmd.Context(), args, cmd.InOrStdin())
	if err != nil {
		return err
	}
	var out bytes.Buffer
	var errs []error
	report := cmd.ErrOrStderr()
	n := 0
	for _, d := range docs {
		b, err := t.document(d, func(line string) { fmt.Fprintln(report, line) })
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.source, err))
			continue
		}
		if b == nil {
			continue
		}
		if n > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(out.Bytes())
	return err
}

// manifest is one YAML (or JSON) document and where it came from.
type manifest struct {
	source string
	raw    []byte
}

// readManifests reads the documents of every argument in order: "-" is
// stdin, http(s):// a URL, a directory its *.yaml, *.yml and *.json files
// (recursively, in lexical order), anything else a file.
func readManifests(ctx context.Context, args []string, stdin io.Reader) ([]manifest, error) {
	var docs []manifest
	add := func(source string, r io.Reader) error {
		yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
		for i := 1; ; i++ {
			b, err := yr.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", source, err)
			}
			docs = append(docs, manifest{source: fmt.Sprintf("%s (document %d)", source, i), raw: b})
		}
	}
	client := &http.Client{Timeout: 30 * time.Second}
	for _, arg := range args {
		switch {
		case arg == "-":
			if err := add("stdin", stdin); err != nil {
				return nil, err
			}
		case strings.HasPrefix(arg, "http://") || strings.HasPrefix(arg, "https://"):
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, arg, nil)
			if err != nil {
				return nil, err
			}
			resp, err := client.Do(req)
			if err != nil {
				return nil, err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", arg, err)
			}
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("%s: %s", arg, resp.Status)
			}
			if err := add(arg, bytes.NewReader(body)); err != nil {
				return nil, err
			}
		default:
			fi, err := os.Stat(arg)
			if err != nil {
				return nil, err
			}
			var files []string
			if fi.IsDir() {
				err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					switch strings.ToLower(filepath.Ext(path)) {
					case ".yaml", ".yml", ".json":
						if !d.IsDir() {
							files = append(files, path)
						}
					}
					return nil
				})
				if err != nil {
					return nil, err
				}
			} else {
				files = []string{arg}
			}
			for _, name := range files {
				b, err := os.ReadFile(name)
				if err != nil {
					return nil, err
				}
				if err := add(name, bytes.NewReader(b)); err != nil {
					return nil, err
				}
			}
		}
	}
	return docs, nil
}

type mode int

const (
	modeAnnotate mode = iota // add meridian.io/inject: enabled
	modeManual               // add the proxy
	modeUninject             // remove both
)

type transformer struct {
	mode mode
	cfg  inject.Config // modeManual
}

// document transforms one manifest and returns its output (nil for an
// empty document). A document that does not change is written as it came,
// comments and all; JSON documents are written as YAML.
func (t transformer) document(m manifest, report func(string)) ([]byte, error) {
	js, err := yaml.YAMLToJSON(m.raw)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, nil // empty, or only comments
	}
	changed := false
	if obj, ok := v.(map[string]any); ok {
		if changed, err = t.object(obj, report); err != nil {
			return nil, err
		}
	} else {
		report(fmt.Sprintf("document %s skipped: not an object", m.source))
	}
	trimmed := bytes.TrimSpace(m.raw)
	if !changed && len(trimmed) > 0 && trimmed[0] != '{' && trimmed[0] != '[' {
		out := bytes.TrimLeft(m.raw, "\n")
		if !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		return out, nil
	}
	js, err = json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// object transforms a Kubernetes object (map form) in place.
func (t transformer) object(obj map[string]any, report func(string)) (bool, error) {
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	what := fmt.Sprintf("%s %q", strings.ToLower(kind), name)
	if kind == "" {
		what = "object without a kind"
	}
	if items, ok := obj["items"].([]any); ok && strings.HasSuffix(kind, "List") {
		changed := false
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				c, err := t.object(m, report)
				if err != nil {
					return false, err
				}
				changed = changed || c
			}
		}
		return changed, nil
	}
	var tmpl map[string]any
	switch kind {
	case "Namespace":
		return t.namespace(obj, what, report), nil
	case "Pod":
		tmpl = obj
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		tmpl = path(obj, "spec", "template")
	case "CronJob":
		tmpl = path(obj, "spec", "jobTemplate", "spec", "template")
	default:
		report(what + " skipped: not a workload")
		return false, nil
	}
	if tmpl == nil {
		report(what + " skipped: no pod template")
		return false, nil
	}
	changed, result, err := t.podTemplate(tmpl)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	report(what + " " + result)
	return changed, nil
}

func path(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

func (t transformer) namespace(obj map[string]any, what string, report func(string)) bool {
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	ann, _ := meta["annotations"].(map[string]any)
	if t.mode == modeUninject {
		if _, ok := ann[names.AnnotationInject]; !ok {
			report(what + " skipped: not annotated")
			return false
		}
		delete(ann, names.AnnotationInject)
		if len(ann) == 0 {
			delete(meta, "annotations")
		}
		report(what + " uninjected")
		return true
	}
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	if ann[names.AnnotationInject] == names.InjectEnabled {
		report(what + " annotated")
		return false
	}
	ann[names.AnnotationInject] = names.InjectEnabled
	report(what + " annotated")
	return true
}

// podTemplate transforms a pod template (or a Pod: metadata and spec) in
// place. The work is done on a typed copy; only the fields of metadata and
// spec that differ are written back, so that everything else in the
// manifest, unknown fields included, stays as it was.
func (t transformer) podTemplate(tmpl map[string]any) (bool, string, error) {
	js, err := json.Marshal(tmpl)
	if err != nil {
		return false, "", err
	}
	var pt corev1.PodTemplateSpec
	if err := json.Unmarshal(js, &pt); err != nil {
		return false, "", fmt.Errorf("pod template: %w", err)
	}
	before, err := json.Marshal(&pt)
	if err != nil {
		return false, "", err
	}
	meta, spec := &pt.ObjectMeta, &pt.Spec
	var result string
	switch t.mode {
	case modeUninject:
		changed := inject.Uninject(meta, spec)
		if _, ok := meta.Annotations[names.AnnotationInject]; ok {
			delete(meta.Annotations, names.AnnotationInject)
			changed = true
		}
		if !changed {
			return false, "skipped: not injected", nil
		}
		result = "uninjected"
	case modeAnnotate:
		switch {
		case spec.HostNetwork:
			return false, "skipped: " + inject.SkipHostNetwork, nil
		case inject.Injected(spec):
			return false, "skipped: " + inject.SkipAlreadyInjected, nil
		}
		if meta.Annotations == nil {
			meta.Annotations = map[string]string{}
		}
		meta.Annotations[names.AnnotationInject] = names.InjectEnabled
		result = "injected"
	case modeManual:
		// Asking for the proxy explicitly is an enabled annotation,
		// whatever the manifest said before.
		if meta.Annotations == nil {
			meta.Annotations = map[string]string{}
		}
		meta.Annotations[names.AnnotationInject] = names.InjectEnabled
		changed, rep, err := inject.Pod(meta, spec, nil, t.cfg)
		if err != nil {
			return false, "", err
		}
		if !changed {
			return false, rep.String(), nil
		}
		result = rep.String()
	}
	after, err := json.Marshal(&pt)
	if err != nil {
		return false, "", err
	}
	ops, err := inject.Diff(before, after, 2)
	if err != nil {
		return false, "", err
	}
	if err := inject.Apply(tmpl, ops); err != nil {
		return false, "", err
	}
	if m, ok := tmpl["metadata"].(map[string]any); ok && len(m) == 0 && t.mode == modeUninject {
		delete(tmpl, "metadata") // inject made it for the annotations
	}
	return len(ops) > 0, result, nil
}
