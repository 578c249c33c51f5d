package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Op is one RFC 6902 JSON Patch operation.
type Op struct {
	Op    string // "add" or "remove"
	Path  string
	Value any // add's value
}

// MarshalJSON writes the operation; add always has a value, even null.
func (o Op) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// Diff returns the JSON Patch that turns the JSON document before into
// after, field by field down to depth levels of objects (an object is
// replaced whole below that): Diff(pod, injected, 2) gives one operation per
// changed field of metadata and spec, such as /spec/initContainers. "add"
// replaces a member that exists (RFC 6902 4.1), so ops are add or remove.
// The order of operations is deterministic.
func Diff(before, after []byte, depth int) ([]Op, error) {
	b, err := decodeJSON(before)
	if err != nil {
		return nil, fmt.Errorf("diff: before: %w", err)
	}
	a, err := decodeJSON(after)
	if err != nil {
		return nil, fmt.Errorf("diff: after: %w", err)
	}
	var ops []Op
	diff("", b, a, depth, &ops)
	return ops, nil
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func diff(path string, b, a any, depth int, ops *[]Op) {
	bm, bok := b.(map[string]any)
	am, aok := a.(map[string]any)
	if depth == 0 || !bok || !aok {
		if !reflect.DeepEqual(b, a) {
			*ops = append(*ops, Op{Op: "add", Path: path, Value: a})
		}
		return
	}
	keys := make([]string, 0, len(bm)+len(am))
	for k := range bm {
		keys = append(keys, k)
	}
	for k := range am {
		if _, ok := bm[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := path + "/" + escapePointer(k)
		bv, inB := bm[k]
		av, inA := am[k]
		switch {
		case !inA:
			*ops = append(*ops, Op{Op: "remove", Path: p})
		case !inB:
			*ops = append(*ops, Op{Op: "add", Path: p, Value: av})
		default:
			diff(p, bv, av, depth-1, ops)
		}
	}
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

// Apply applies ops made by Diff to doc (JSON objects as map[string]any),
// in place: paths name object members only.
func Apply(doc map[string]any, ops []Op) error {
	for _, op := range ops {
		parts := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		if op.Path == "" || !strings.HasPrefix(op.Path, "/") {
			return fmt.Errorf("apply %s %q: not a member path", op.Op, op.Path)
		}
		m := doc
		for _, p := range parts[:len(parts)-1] {
			p = unescapePointer(p)
			next, ok := m[p].(map[string]any)
			if !ok {
				if op.Op == "remove" {
					return fmt.Errorf("apply remove %q: no such member", op.Path)
				}
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		last := unescapePointer(parts[len(parts)-1])
		switch op.Op {
		case "add", "replace":
			m[last] = op.Value
		case "remove":
			delete(m, last)
		default:
			return fmt.Errorf("apply %s %q: unsupported operation", op.Op, op.Path)
		}
	}
	return nil
}
