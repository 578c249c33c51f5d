package store

import "sort"

// index groups values by a key (say, slices by their service) with a
// shared sorted snapshot per group, so that reads do not allocate.
type index[T any] map[Key]*group[T]

type group[T any] struct {
	byName map[string]T
	list   []T // sorted by name; replaced on change, never mutated
}

func (ix index[T]) get(k Key) []T {
	if g := ix[k]; g != nil {
		return g.list
	}
	return nil
}

func (ix index[T]) set(k Key, name string, v T) {
	g := ix[k]
	if g == nil {
		g = &group[T]{byName: map[string]T{}}
		ix[k] = g
	}
	g.byName[name] = v
	g.rebuild()
}

func (ix index[T]) remove(k Key, name string) {
	g := ix[k]
	if g == nil {
		return
	}
	if _, ok := g.byName[name]; !ok {
		return
	}
	delete(g.byName, name)
	if len(g.byName) == 0 {
		delete(ix, k)
		return
	}
	g.rebuild()
}

func (g *group[T]) rebuild() {
	names := make([]string, 0, len(g.byName))
	for n := range g.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]T, len(names))
	for i, n := range names {
		list[i] = g.byName[n]
	}
	g.list = list
}
