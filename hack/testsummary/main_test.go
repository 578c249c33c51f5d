package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSummaryOfARealRun runs go test -json on a package whose subtest
// fails after logging, then dumps a long log from its parent's cleanup,
// and checks that the failure's own line comes again at the end, after
// the dump, and that the output above is go test -v's.
func TestSummaryOfARealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a test binary")
	}
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/failing\n\ngo 1.22\n")
	write("x_test.go", `package failing

import (
	"strings"
	"testing"
)

func TestParent(t *testing.T) {
	t.Cleanup(func() { t.Log("dump:\n" + strings.Repeat("a line of the dump\n", 300)) })
	t.Run("Child", func(t *testing.T) {
		t.Log("a step " + strings.Repeat("x", 1000))
		t.Error("the error that matters")
	})
}

func TestPasses(t *testing.T) { t.Log("not repeated") }
`)
	cmd := exec.Command("go", "test", "-json", "-count=1", ".")
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	s := newSummary()
	failed := s.read(out, &b)
	s.write(&b)
	if err := cmd.Wait(); err == nil {
		t.Fatal("go test passed a failing test")
	}
	if !failed {
		t.Error("read did not report the failure")
	}
	got := b.String()
	for _, want := range []string{"=== RUN   TestParent/Child", "a line of the dump", "--- FAIL: TestParent/Child", "not repeated"} {
		if !strings.Contains(got, want) {
			t.Errorf("the output above lacks %q", want)
		}
	}
	_, tail, ok := strings.Cut(got, "=== The failures again")
	if !ok {
		t.Fatalf("no summary:\n%s", got)
	}
	for _, want := range []string{"--- FAIL: TestParent/Child", "x_test.go:12: the error that matters", "--- FAIL: TestParent (", "x_test.go:9: dump:"} {
		if !strings.Contains(tail, want) {
			t.Errorf("the summary lacks %q:\n%s", want, tail)
		}
	}
	for _, not := range []string{"a line of the dump", "not repeated", "TestPasses"} {
		if strings.Contains(tail, not) {
			t.Errorf("the summary has %q:\n%s", not, tail)
		}
	}
	if !strings.Contains(tail, strings.Repeat("x", 300)+" …") || strings.Contains(tail, strings.Repeat("x", 500)) {
		t.Errorf("the long line is not cut at %d characters:\n%s", maxLine, tail)
	}
	if strings.Index(tail, "the error that matters") > strings.Index(tail, "--- FAIL: TestParent (") {
		t.Errorf("the subtest's failure is not first:\n%s", tail)
	}
}
