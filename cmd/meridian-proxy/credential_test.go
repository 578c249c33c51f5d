package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The local-mode workload credential comes from --workload-credential-file
// (trimmed), else from the environment; an empty file is an error that says
// what the file must hold.
func TestWorkloadCredential(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "web-0.secret")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.secret")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvWorkloadCredential, "from-env")
	if got, err := workloadCredential(good); err != nil || got != "s3cret" {
		t.Errorf("file: %q, %v", got, err)
	}
	if got, err := workloadCredential(""); err != nil || got != "from-env" {
		t.Errorf("env: %q, %v", got, err)
	}
	if _, err := workloadCredential(empty); err == nil || !strings.Contains(err.Error(), "--workload-credential-file") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := workloadCredential(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}
