// Package local is the store's local source: a directory of Kubernetes-style
// YAML objects, loaded whole and reloaded when a file changes.
package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
	kyaml "sigs.k8s.io/yaml"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// DefaultNamespace is the namespace of objects that name none, as with
// kubectl apply.
const DefaultNamespace = "default"

// maxErrors bounds the errors one Load reports.
const maxErrors = 20

// kinds are the objects a directory may hold.
var kinds = map[schema.GroupVersionKind]func() runtime.Object{
	corev1.SchemeGroupVersion.WithKind("Service"):        func() runtime.Object { return &corev1.Service{} },
	corev1.SchemeGroupVersion.WithKind("Pod"):            func() runtime.Object { return &corev1.Pod{} },
	corev1.SchemeGroupVersion.WithKind("Namespace"):      func() runtime.Object { return &corev1.Namespace{} },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"): func() runtime.Object { return &corev1.ServiceAccount{} },
	discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"): func() runtime.Object {
		return &discoveryv1.EndpointSlice{}
	},
	v1alpha1.GroupVersion.WithKind("ServiceProfile"):    func() runtime.Object { return &v1alpha1.ServiceProfile{} },
	splitv1alpha1.GroupVersion.WithKind("TrafficSplit"): func() runtime.Object { return &splitv1alpha1.TrafficSplit{} },
	splitv1alpha2.GroupVersion.WithKind("TrafficSplit"): func() runtime.Object { return &splitv1alpha2.TrafficSplit{} },
	splitv1alpha3.GroupVersion.WithKind("TrafficSplit"): func() runtime.Object { return &splitv1alpha3.TrafficSplit{} },
	splitv1alpha4.GroupVersion.WithKind("TrafficSplit"): func() runtime.Object { return &splitv1alpha4.TrafficSplit{} },
	// Progressive delivery: Rollouts (the store holds them: `meridian: {}`
	// compiles their status into the stable Service's split) and the
	// analysis templates (read by the local rollout driver, not held by the
	// store: see StoreHolds).
	v1alpha1.GroupVersion.WithKind("Rollout"):                 func() runtime.Object { return &v1alpha1.Rollout{} },
	v1alpha1.GroupVersion.WithKind("AnalysisTemplate"):        func() runtime.Object { return &v1alpha1.AnalysisTemplate{} },
	v1alpha1.GroupVersion.WithKind("ClusterAnalysisTemplate"): func() runtime.Object { return &v1alpha1.ClusterAnalysisTemplate{} },
	// The gateway's: the Gateway API (v1) and the certificates and CA
	// bundles it reads.
	gatewayV1.WithKind("GatewayClass"):              func() runtime.Object { return &gwv1.GatewayClass{} },
	gatewayV1.WithKind("Gateway"):                   func() runtime.Object { return &gwv1.Gateway{} },
	gatewayV1.WithKind("HTTPRoute"):                 func() runtime.Object { return &gwv1.HTTPRoute{} },
	gatewayV1.WithKind("GRPCRoute"):                 func() runtime.Object { return &gwv1.GRPCRoute{} },
	gatewayV1.WithKind("TLSRoute"):                  func() runtime.Object { return &gwv1.TLSRoute{} },
	gatewayV1.WithKind("TCPRoute"):                  func() runtime.Object { return &gwv1.TCPRoute{} },
	gatewayV1.WithKind("UDPRoute"):                  func() runtime.Object { return &gwv1.UDPRoute{} },
	gatewayV1.WithKind("ListenerSet"):               func() runtime.Object { return &gwv1.ListenerSet{} },
	gatewayV1.WithKind("ReferenceGrant"):            func() runtime.Object { return &gwv1.ReferenceGrant{} },
	gatewayV1.WithKind("BackendTLSPolicy"):          func() runtime.Object { return &gwv1.BackendTLSPolicy{} },
	corev1.SchemeGroupVersion.WithKind("Secret"):    func() runtime.Object { return &corev1.Secret{} },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"): func() runtime.Object { return &corev1.ConfigMap{} },
}

// gatewayV1 is gateway.networking.k8s.io/v1.
var gatewayV1 = schema.GroupVersion(gwv1.GroupVersion)

// clusterScoped kinds get no namespace.
var clusterScoped = map[string]bool{"Namespace": true, "GatewayClass": true, "ClusterAnalysisTemplate": true}

// StoreHolds reports whether the controller's store holds obj's kind. The
// analysis templates are in a directory for the local rollout driver
// (controlplane/rollouts/local), which reads them with OnObjects; Watch
// leaves them out of the store.
func StoreHolds(obj runtime.Object) bool {
	switch obj.(type) {
	case *v1alpha1.AnalysisTemplate, *v1alpha1.ClusterAnalysisTemplate:
		return false
	}
	return true
}

// StatusSuffix ends the name of a status file (also ".status.yml"): its
// documents hold only the status of objects declared in other files, which
// replaces theirs, as a controller writes the status subresource while the
// spec stays the user's. Only Rollouts have one here.
const StatusSuffix = ".status.yaml"

// isStatusFile reports whether path is a status file.
func isStatusFile(path string) bool {
	return strings.HasSuffix(path, StatusSuffix) || strings.HasSuffix(path, ".status.yml")
}

// statusKinds are the kinds a status file may give the status of.
var statusKinds = map[string]bool{"Rollout": true}

// withStatus returns a copy of obj with the status of st (same kind).
func withStatus(obj, st runtime.Object) runtime.Object {
	switch o := obj.(type) {
	case *v1alpha1.Rollout:
		cp := o.DeepCopy()
		cp.Status = *st.(*v1alpha1.Rollout).Status.DeepCopy()
		return cp
	}
	return obj
}

// AllowedKinds describes the kinds a directory may hold, for error messages
// and documentation: "Kind (apiVersion[, apiVersion...])", sorted.
func AllowedKinds() string {
	versions := map[string][]string{}
	for gvk := range kinds {
		versions[gvk.Kind] = append(versions[gvk.Kind], gvk.GroupVersion().String())
	}
	names := make([]string, 0, len(versions))
	for k := range versions {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		sort.Strings(versions[k])
		parts[i] = k + " (" + strings.Join(versions[k], ", ") + ")"
	}
	return strings.Join(parts, ", ")
}

// Error is a problem in one object of a file.
type Error struct {
	File  string
	Line  int    // 1-based; 0 when unknown
	Field string // the offending field's path, such as spec.routes[0].timeout; may be empty
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// MaxFileSize is the largest file a store directory may hold (4 MiB, as
// a ConfigMap holds at most 1 MiB): a larger one is rejected without being
// read, so that a stray dump in the directory cannot take the controller's
// memory.
const MaxFileSize = 4 << 20

// Load reads every *.yaml and *.yml file under dir (recursively; names
// starting with a dot are skipped, symbolic links to files are followed, so
// a mounted ConfigMap works) and decodes the objects in them. Decoding is
// strict: an unknown or duplicated field, a value of the wrong type, an
// invalid ServiceProfile or TrafficSplit, a kind other than those of
// AllowedKinds, two objects with the same kind, namespace and name, or a
// file larger than MaxFileSize reject the whole directory, with errors (each
// an *Error, joined) naming the file, the line and the field. Objects
// without a namespace get DefaultNamespace. Watch, unlike Load, rejects only
// the files in error (see Status).
func Load(dir string) ([]runtime.Object, error) {
	objs, st, err := LoadFiles(dir)
	if err != nil {
		return nil, err
	}
	if err := st.Err(); err != nil {
		return nil, err
	}
	return objs, nil
}

// LoadFiles loads dir as Watch's first load does: each file is applied
// whole or rejected whole, and the objects of the files applied are
// returned with the status of every file. err is set only when the
// directory cannot be listed.
func LoadFiles(dir string) ([]runtime.Object, Status, error) {
	l := loader{dir: dir}
	objs, st, _, err := l.load()
	return objs, st, err
}

// FileStatus is the outcome of one file of a store directory.
type FileStatus struct {
	Path string
	// Objects is how many objects of the file are served: those of its
	// current content, or of its last good content when that is rejected.
	Objects int
	// Err says why the file's current content is rejected (joined *Errors);
	// nil when it is applied.
	Err error
}

// Status is the outcome of a load: the objects served and every file.
type Status struct {
	Objects int
	Files   []FileStatus // in path order
}

// Rejected returns the files whose current content is rejected.
func (s Status) Rejected() []FileStatus {
	var out []FileStatus
	for _, f := range s.Files {
		if f.Err != nil {
			out = append(out, f)
		}
	}
	return out
}

// Err joins the errors of the rejected files, or is nil.
func (s Status) Err() error {
	var errs []error
	for _, f := range s.Rejected() {
		errs = append(errs, f.Err)
	}
	return errors.Join(errs...)
}

// loader keeps, across the loads of one directory, each file's last good
// content, so that a file broken later keeps serving what it served.
type loader struct {
	dir   string
	files map[string]*fileState
}

type fileState struct {
	size  int64
	mtime time.Time
	// served is the content applied: the current one, or the last good
	// one while the current one is rejected.
	served []doc
	// pending is current content that decoded but clashes with another
	// file's objects: it is tried again on every change of the directory.
	pending []doc
	err     error
}

// load reads the files that changed since the last load (path, size or
// modification time) and returns the objects to serve; changed is false
// when nothing did.
func (l *loader) load() (objs []runtime.Object, st Status, changed bool, err error) {
	files, err := yamlFiles(l.dir)
	if err != nil {
		return nil, Status{}, false, err
	}
	next := make(map[string]*fileState, len(files))
	var cands []string // files with content to apply, in path order
	for _, f := range files {
		old := l.files[f.path]
		if old != nil && old.size == f.info.Size() && old.mtime.Equal(f.info.ModTime()) {
			next[f.path] = old
			if old.pending != nil {
				cands = append(cands, f.path)
			}
			continue
		}
		changed = true
		fs := &fileState{size: f.info.Size(), mtime: f.info.ModTime()}
		if old != nil {
			fs.served = old.served
		}
		next[f.path] = fs
		data, err := readFile(f)
		if err != nil {
			fs.err = err
			continue
		}
		docs, errs := decodeFile(f.path, data, isStatusFile(f.path))
		if len(errs) > 0 {
			fs.err = joinCapped(errs)
			continue
		}
		fs.pending = docs
		cands = append(cands, f.path)
	}
	for p := range l.files {
		if next[p] == nil {
			changed = true // removed
		}
	}
	l.files = next
	if changed {
		// Objects (and statuses, separately) served stay claimed by their
		// files; new content that clashes with them is rejected, and the
		// clash is tried again on the next change (the other file may drop
		// the object).
		for _, status := range []bool{false, true} {
			claimed := map[string]string{} // id → file:line
			pending := map[string]bool{}
			for _, p := range cands {
				pending[p] = true
			}
			for _, f := range files {
				if !pending[f.path] && isStatusFile(f.path) == status {
					claim(claimed, f.path, next[f.path].served)
				}
			}
			for _, p := range cands {
				if isStatusFile(p) != status {
					continue
				}
				fs := next[p]
				if errs := claim(claimed, p, fs.pending); len(errs) > 0 {
					fs.err = joinCapped(errs)
					if errs := claim(claimed, p, fs.served); len(errs) > 0 {
						fs.served = nil // its last good objects now clash too
					}
					continue
				}
				fs.served, fs.pending, fs.err = fs.pending, nil, nil
			}
		}
	}
	at := map[string]int{} // object id → index in objs
	for _, f := range files {
		fs := next[f.path]
		if isStatusFile(f.path) {
			continue
		}
		for _, d := range fs.served {
			at[docID(d)] = len(objs)
			objs = append(objs, d.obj)
		}
	}
	for _, f := range files {
		fs := next[f.path]
		n := len(fs.served)
		if isStatusFile(f.path) {
			// A status whose object is not (or no longer) declared is
			// left unused: the object may come back.
			n = 0
			for _, d := range fs.served {
				if i, ok := at[docID(d)]; ok {
					objs[i] = withStatus(objs[i], d.obj)
					n++
				}
			}
		}
		st.Files = append(st.Files, FileStatus{Path: f.path, Objects: n, Err: fs.err})
	}
	st.Objects = len(objs)
	return objs, st, changed, nil
}

// docID is "Kind namespace/name" ("Kind name" when cluster-scoped).
func docID(d doc) string {
	m := d.obj.(metav1.Object)
	if m.GetNamespace() == "" {
		return d.gvk.Kind + " " + m.GetName()
	}
	return d.gvk.Kind + " " + m.GetNamespace() + "/" + m.GetName()
}

// claim records the ids of docs, all or none: it returns the clashes (with
// claimed, or within docs) and records nothing if there are any.
func claim(claimed map[string]string, path string, docs []doc) []error {
	var errs []error
	mine := map[string]string{}
	for _, d := range docs {
		id := docID(d)
		first, dup := claimed[id]
		if !dup {
			first, dup = mine[id]
		}
		if dup {
			errs = append(errs, &Error{File: path, Line: d.line, Msg: "duplicate " + id + " (first at " + first + ")"})
			continue
		}
		mine[id] = path + ":" + strconv.Itoa(d.line)
	}
	if len(errs) > 0 {
		return errs
	}
	for id, at := range mine {
		claimed[id] = at
	}
	return nil
}

func joinCapped(errs []error) error {
	if len(errs) > maxErrors {
		errs = append(errs[:maxErrors], fmt.Errorf("(more errors not shown)"))
	}
	return errors.Join(errs...)
}

// readFile reads one file of the directory, refusing one larger than
// MaxFileSize before reading it (and if it grows while being read).
func readFile(f file) ([]byte, error) {
	tooBig := func(size string) error {
		return &Error{File: f.path, Msg: fmt.Sprintf("file is %s bytes; the limit is %d bytes (4 MiB)", size, MaxFileSize)}
	}
	if f.info.Size() > MaxFileSize {
		return nil, tooBig(strconv.FormatInt(f.info.Size(), 10))
	}
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, tooBig("more than " + strconv.Itoa(MaxFileSize))
	}
	return data, nil
}

type file struct {
	path string
	info fs.FileInfo // of the target, for links
}

// yamlFiles lists the YAML files under dir, sorted by path.
func yamlFiles(dir string) ([]file, error) {
	var out []file
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		ext := filepath.Ext(path)
		if ext != ".yaml" && ext != ".yml" {
			return nil
		}
		info, err := os.Stat(path) // follows links
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		out = append(out, file{path: path, info: info})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

type doc struct {
	obj  runtime.Object
	gvk  schema.GroupVersionKind
	line int
}

var docSeparator = regexp.MustCompile(`^---(\s|$)`)

// decodeFile decodes every document of one file (of a status file when
// status is set).
func decodeFile(path string, data []byte, status bool) ([]doc, []error) {
	var (
		docs []doc
		errs []error
	)
	lines := bytes.SplitAfter(data, []byte("\n"))
	start := 0 // index of the current document's first line
	flush := func(end int) {
		if end > start {
			d, err := decodeDoc(path, start+1, bytes.Join(lines[start:end], nil), status)
			if err != nil {
				errs = append(errs, err...)
			} else if d != nil {
				docs = append(docs, *d)
			}
		}
		start = end + 1
	}
	for i, l := range lines {
		if docSeparator.Match(l) {
			flush(i)
		}
	}
	flush(len(lines))
	return docs, errs
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// parserProblem reports whether a YAML error comes from the parser (rather
// than the scanner): yaml.v3 gives their lines 0-based, pointing at the
// start of the construct it was parsing.
func parserProblem(msg string) bool {
	for _, p := range []string{
		"did not find expected ',' or ']'",
		"did not find expected ',' or '}'",
		"did not find expected '-' indicator",
		"did not find expected <document start>",
		"did not find expected key",
		"did not find expected node content",
		"found duplicate %TAG directive",
		"found duplicate %YAML directive",
		"found incompatible YAML document",
		"found undefined tag handle",
	} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// decodeDoc decodes one document whose first line is line first of the
// file (a status document when status is set: apiVersion, kind, metadata
// and status only, of a kind in statusKinds). It returns nil, nil for a
// document with no content.
func decodeDoc(path string, first int, data []byte, status bool) (*doc, []error) {
	fail := func(line int, fld, msg string) (*doc, []error) {
		return nil, []error{&Error{File: path, Line: line, Field: fld, Msg: msg}}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		msg, line := err.Error(), first
		if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
			n, _ := strconv.Atoi(msg[m[2]:m[3]])
			line, msg = first+n-1, msg[m[1]:]
			if parserProblem(msg) {
				line++ // the YAML library reports these 0-based
			}
		}
		return fail(line, "", "invalid YAML: "+strings.TrimPrefix(msg, "yaml: "))
	}
	if root.Kind == 0 || len(root.Content) == 0 || root.Content[0].Kind == yaml.ScalarNode && root.Content[0].Tag == "!!null" {
		return nil, nil // empty, or only comments
	}
	top := root.Content[0]
	pos := positions{node: top, offset: first - 1}
	if top.Kind != yaml.MappingNode {
		return fail(pos.line(""), "", "an object must be a YAML mapping")
	}
	var tm metav1.TypeMeta
	tm.APIVersion, _ = scalar(top, "apiVersion")
	tm.Kind, _ = scalar(top, "kind")
	if tm.APIVersion == "" || tm.Kind == "" {
		return fail(pos.line(""), "", "apiVersion and kind are required")
	}
	gvk := tm.GroupVersionKind()
	newObj, ok := kinds[gvk]
	if !ok {
		return fail(pos.line("kind"), "kind", fmt.Sprintf("unknown kind %q of apiVersion %q; a store directory holds %s", tm.Kind, tm.APIVersion, AllowedKinds()))
	}
	if status {
		if !statusKinds[gvk.Kind] {
			return fail(pos.line("kind"), "kind", fmt.Sprintf("a status file (*%s) holds the status of Rollouts (%s), not of %s", StatusSuffix, v1alpha1.GroupVersion, tm.Kind))
		}
		for i := 0; i+1 < len(top.Content); i += 2 {
			switch k := top.Content[i].Value; k {
			case "apiVersion", "kind", "metadata", "status":
			default:
				return fail(pos.line(k), k, "a status file holds only apiVersion, kind, metadata and status: declare the object in another file")
			}
		}
	}
	js, err := kyaml.YAMLToJSONStrict(data)
	if err != nil {
		msg, line := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "), pos.line("")
		if m := yamlLine.FindStringSubmatchIndex(msg); m != nil { // a duplicate key
			n, _ := strconv.Atoi(msg[m[2]:m[3]])
			line, msg = first+n-1, msg[m[1]:]
		}
		return fail(line, "", "invalid YAML: "+msg)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		var te interface{ FieldPath() string }
		fld := ""
		if errors.As(err, &te) {
			fld = te.FieldPath()
		} else if m := typeErrorField.FindStringSubmatch(err.Error()); m != nil {
			fld = m[2]
			return fail(pos.lineOfKind(fld, m[1]), fld, strings.TrimPrefix(err.Error(), "json: "))
		} else if m := quotedValue.FindStringSubmatch(err.Error()); m != nil {
			// A type's own decoder (a quantity, a ratio) names the value,
			// not the field: find the value.
			fld = pos.find(top, "", m[1])
		}
		return fail(pos.line(fld), fld, strings.TrimPrefix(err.Error(), "json: "))
	}
	var errs []error
	for _, e := range strict {
		fld := ""
		if fe, ok := e.(kjson.FieldError); ok {
			fld = fe.FieldPath()
		}
		msg := e.Error()
		if i := strings.Index(msg, " \""); i > 0 {
			msg = msg[:i] // "unknown field": the path is reported as the field
		}
		errs = append(errs, &Error{File: path, Line: pos.line(fld), Field: fld, Msg: msg})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	m := obj.(metav1.Object)
	if !clusterScoped[gvk.Kind] && m.GetNamespace() == "" {
		m.SetNamespace(DefaultNamespace)
	}
	if status {
		if m.GetName() == "" {
			return fail(pos.line("metadata"), "metadata.name", "Required value")
		}
		return &doc{obj: obj, gvk: gvk, line: pos.line("")}, nil
	}
	for _, fe := range validate(obj) {
		errs = append(errs, &Error{File: path, Line: pos.line(fe.Field), Field: fe.Field, Msg: fe.ErrorBody()})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &doc{obj: obj, gvk: gvk, line: pos.line("")}, nil
}

// typeErrorField finds the path in encoding/json's type errors:
// "cannot unmarshal string into Go struct field RetryBudget.spec.retryBudget.ttl of type ...".
var typeErrorField = regexp.MustCompile(`cannot unmarshal (\w+) into Go struct field [A-Za-z0-9_]+\.(\S+) of type`)

var quotedValue = regexp.MustCompile(`"([^"]+)"`)

func scalar(m *yaml.Node, key string) (string, bool) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1].Value, true
		}
	}
	return "", false
}

// validate checks what the API server's validation would, for the kinds
// where a mistake would silently serve nothing.
func validate(obj runtime.Object) field.ErrorList {
	var errs field.ErrorList
	m := obj.(metav1.Object)
	if m.GetName() == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	switch o := obj.(type) {
	case *v1alpha1.ServiceProfile:
		errs = append(errs, o.Validate()...)
	case *v1alpha1.Rollout:
		errs = append(errs, o.Validate()...)
	case *v1alpha1.AnalysisTemplate:
		errs = append(errs, o.Validate()...)
	case *v1alpha1.ClusterAnalysisTemplate:
		errs = append(errs, o.Validate()...)
	case *discoveryv1.EndpointSlice:
		if o.Labels[discoveryv1.LabelServiceName] == "" {
			errs = append(errs, field.Required(field.NewPath("metadata", "labels").Key(discoveryv1.LabelServiceName),
				"the service this slice belongs to"))
		}
		if o.AddressType == "" {
			errs = append(errs, field.Required(field.NewPath("addressType"), "IPv4, IPv6 or FQDN"))
		}
		for i, ep := range o.Endpoints {
			if len(ep.Addresses) == 0 {
				errs = append(errs, field.Required(field.NewPath("endpoints").Index(i).Child("addresses"), ""))
			}
		}
	default:
		if _, ok, err := store.TrafficSplitFrom(obj); ok {
			errs = append(errs, validateSplit(obj)...)
		} else if err != nil {
			errs = append(errs, field.InternalError(nil, err))
		}
	}
	return errs
}

func validateSplit(obj runtime.Object) field.ErrorList {
	var (
		errs     field.ErrorList
		service  string
		backends []string
		negative []bool
	)
	switch o := obj.(type) {
	case *splitv1alpha1.TrafficSplit:
		service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends, negative = append(backends, b.Service), append(negative, b.Weight.Sign() < 0)
		}
	case *splitv1alpha2.TrafficSplit:
		service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends, negative = append(backends, b.Service), append(negative, b.Weight < 0)
		}
	case *splitv1alpha3.TrafficSplit:
		service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends, negative = append(backends, b.Service), append(negative, b.Weight < 0)
		}
	case *splitv1alpha4.TrafficSplit:
		service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends, negative = append(backends, b.Service), append(negative, b.Weight < 0)
		}
	}
	spec := field.NewPath("spec")
	if service == "" {
		errs = append(errs, field.Required(spec.Child("service"), "the apex service"))
	}
	if len(backends) == 0 {
		errs = append(errs, field.Required(spec.Child("backends"), "at least one backend"))
	}
	for i := range backends {
		p := spec.Child("backends").Index(i)
		if backends[i] == "" {
			errs = append(errs, field.Required(p.Child("service"), ""))
		}
		if negative[i] {
			errs = append(errs, field.Invalid(p.Child("weight"), "", "must not be negative"))
		}
	}
	return errs
}

// positions maps field paths of one document to lines of the file.
type positions struct {
	node   *yaml.Node
	offset int
}

var pathSegment = regexp.MustCompile(`([^.\[\]]+)|\[([^\]]*)\]`)

// find returns the path of the first scalar under n whose value is v, or
// "" if there is none.
func (p positions) find(n *yaml.Node, path, v string) string {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == v {
			return path
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if path != "" {
				k = path + "." + k
			}
			if f := p.find(n.Content[i+1], k, v); f != "" {
				return f
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if f := p.find(c, path+"["+strconv.Itoa(i)+"]", v); f != "" {
				return f
			}
		}
	}
	return ""
}

// line returns the line of the deepest node along path
// ("spec.routes[0].timeout", "metadata.labels[kubernetes.io/service-name]"):
// the key's line for a map entry, the item's line for a list element. An
// empty path is the document's first line.
func (p positions) line(path string) int {
	return p.lineOfKind(path, "")
}

// lineOfKind is line for a path that may lack list indices, as encoding/json
// type errors give them ("spec.ports.port"): a list is searched for the
// first element that has the rest of the path, and whose value is of JSON
// kind (string, number, bool, object, array) unless kind is empty.
func (p positions) lineOfKind(path, kind string) int {
	segs := pathSegment.FindAllStringSubmatch(path, -1)
	if l, ok := walk(p.node, p.node.Line, segs, kind); ok {
		return l + p.offset
	}
	l, _ := walk(p.node, p.node.Line, segs, "") // the deepest match, whatever its kind
	return l + p.offset
}

// walk follows segs from n (at line) and returns the line reached; ok is
// false when the path ends early or the value is not of the wanted kind,
// and line is then the deepest line reached.
func walk(n *yaml.Node, line int, segs [][]string, kind string) (int, bool) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if len(segs) == 0 {
		return line, kind == "" || jsonKind(n) == kind
	}
	seg, idx := segs[0][1], segs[0][2]
	switch {
	case n.Kind == yaml.SequenceNode && idx != "":
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 || i >= len(n.Content) {
			return line, false
		}
		return walk(n.Content[i], n.Content[i].Line, segs[1:], kind)
	case n.Kind == yaml.SequenceNode:
		deepest := line
		for _, item := range n.Content {
			l, ok := walk(item, item.Line, segs, kind)
			if ok {
				return l, true
			}
			if deepest == line {
				deepest = l
			}
		}
		return deepest, false
	case n.Kind == yaml.MappingNode:
		key := seg
		if idx != "" {
			key = idx // a map key written as [key]
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return walk(n.Content[i+1], n.Content[i].Line, segs[1:], kind)
			}
		}
	}
	return line, false
}

func jsonKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "array"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "number"
		case "!!bool":
			return "bool"
		case "!!null":
			return "null"
		}
		return "string"
	}
	return ""
}
