// Package docs holds the project's own documentation; its test keeps
// architecture.md true to the tree.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every package folder of the product is named in architecture.md: a
// folder added or moved without a word there fails here.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, root := range []string{"api", "cli", "cmd", "controlplane", "internal", "proxy", "viz"} {
		err := filepath.WalkDir(filepath.Join("..", root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() || !hasGo(path) {
				return err
			}
			rel, _ := filepath.Rel("..", path)
			rel = filepath.ToSlash(rel)
			parts := strings.Split(rel, "/")
			// Named by its path from the root, from below the root, or by its
			// own name (inside the paragraph of its folder).
			for i := range parts {
				if strings.Contains(text, "`"+strings.Join(parts[i:], "/")) {
					return nil
				}
			}
			t.Errorf("docs/architecture.md does not name %s", rel)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// hasGo reports whether dir holds a Go file that is not a test.
func hasGo(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			return true
		}
	}
	return false
}
