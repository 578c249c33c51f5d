package analysisrun

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/meridian"
)

// resolver reads a run's valueFrom arguments: a key of a Secret in the
// run's namespace, or a field of the run's owner Rollout. It remembers the
// Secrets' values, which the runner masks in what it writes.
type resolver struct {
	ctx     context.Context
	c       client.Reader
	run     *v1alpha1.AnalysisRun
	secrets []string
}

func (r *resolver) resolve(vf *v1alpha1.ValueFrom) (string, error) {
	switch {
	case vf.SecretKeyRef != nil && vf.FieldRef != nil:
		return "", fmt.Errorf("valueFrom: set secretKeyRef or fieldRef, not both")
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s := &corev1.Secret{}
		if err := r.c.Get(r.ctx, client.ObjectKey{Namespace: r.run.Namespace, Name: ref.Name}, s); err != nil {
			if apierrors.IsNotFound(err) {
				return "", fmt.Errorf("valueFrom.secretKeyRef: secret %s/%s not found", r.run.Namespace, ref.Name)
			}
			return "", fmt.Errorf("valueFrom.secretKeyRef: secret %s/%s: %w", r.run.Namespace, ref.Name, err)
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return "", fmt.Errorf("valueFrom.secretKeyRef: secret %s/%s has no key %q", r.run.Namespace, ref.Name, ref.Key)
		}
		if len(v) > 0 {
			r.secrets = append(r.secrets, string(v))
		}
		return string(v), nil
	case vf.FieldRef != nil:
		owner, err := meridian.Owner(r.run)
		if err != nil {
			return "", fmt.Errorf("valueFrom.fieldRef %s: %w", vf.FieldRef.FieldPath, err)
		}
		ro := &v1alpha1.Rollout{}
		if err := r.c.Get(r.ctx, client.ObjectKey{Namespace: r.run.Namespace, Name: owner.Name}, ro); err != nil {
			return "", fmt.Errorf("valueFrom.fieldRef %s: rollout %s/%s: %w", vf.FieldRef.FieldPath, r.run.Namespace, owner.Name, err)
		}
		obj, err := kruntime.DefaultUnstructuredConverter.ToUnstructured(ro)
		if err != nil {
			return "", err
		}
		v, err := FieldPath(obj, vf.FieldRef.FieldPath)
		if err != nil {
			return "", fmt.Errorf("valueFrom.fieldRef %s of rollout %s/%s: %w", vf.FieldRef.FieldPath, ro.Namespace, ro.Name, err)
		}
		return v, nil
	}
	return "", fmt.Errorf("valueFrom: set secretKeyRef or fieldRef")
}

// FieldPath reads a field of an object by its path: dot-separated names,
// with ['key'] (or ["key"]) for a map key holding dots and slashes and [n]
// for a list index, as metadata.labels['app.kubernetes.io/name'] or
// spec.template.spec.containers[0].image. A scalar is given as text; a map
// or a list as JSON.
func FieldPath(obj map[string]any, path string) (string, error) {
	var cur any = obj
	rest := path
	for rest != "" {
		var seg string
		var index = -1
		switch {
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return "", fmt.Errorf("unclosed [ in %q", path)
			}
			inner := rest[1:end]
			rest = rest[end+1:]
			if len(inner) >= 2 && (inner[0] == '\'' || inner[0] == '"') && inner[len(inner)-1] == inner[0] {
				seg = inner[1 : len(inner)-1]
			} else if n, err := strconv.Atoi(inner); err == nil {
				index = n
			} else {
				return "", fmt.Errorf("[%s] in %q: a quoted key or an index", inner, path)
			}
		default:
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			seg, rest = rest[:end], rest[end:]
		}
		rest = strings.TrimPrefix(rest, ".")
		if index >= 0 {
			l, ok := cur.([]any)
			if !ok || index >= len(l) {
				return "", fmt.Errorf("no index %d in %q", index, path)
			}
			cur = l[index]
			continue
		}
		if seg == "" {
			return "", fmt.Errorf("empty name in %q", path)
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return "", fmt.Errorf("%q is not a field path of the object", path)
		}
		if cur, ok = m[seg]; !ok {
			return "", fmt.Errorf("no field %q", seg)
		}
	}
	switch v := cur.(type) {
	case string:
		return v, nil
	case bool, int64, float64, int32, int:
		return fmt.Sprint(v), nil
	case nil:
		return "", nil
	}
	b, err := json.Marshal(cur)
	return string(b), err
}
