package check

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/controlplane/controller"
)

// `meridian check --local` against a real controller in local mode: a
// rejected file fails the run and is named with its error; once fixed, the
// run passes.
func TestLocalStoreChecksReportRejectedFiles(t *testing.T) {
	dir := t.TempDir()
	good := "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\n"
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(filepath.Join(dir, "good.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(good+"spec: {bogus: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	admin := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(ctx, controller.Options{
			Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			TrustDomain: "example.org", ShutdownGrace: time.Second,
		}, func(_, a string) { admin <- a })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var addr string
	select {
	case addr = <-admin:
	case err := <-done:
		t.Fatalf("controller exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not start")
	}

	run := func() *Report {
		checks, err := Groups(Options{LocalAdmin: addr}, LocalGroups...)
		if err != nil {
			t.Fatal(err)
		}
		r := &Runner{Wait: 10 * time.Second, Interval: 20 * time.Millisecond}
		return r.Run(ctx, checks, NewState(Options{}))
	}
	rep := run()
	if rep.Success() {
		t.Fatalf("check passed with a rejected file: %v", descriptions(rep))
	}
	last := rep.Results[len(rep.Results)-1]
	if last.Description != "every file of the store directory is applied" || last.Result != Error ||
		!strings.Contains(last.Err.Error(), "1 of 2 files in "+dir+" rejected") ||
		!strings.Contains(last.Err.Error(), bad+":4: spec.bogus: unknown field") {
		t.Fatalf("last result = %+v", last)
	}

	if err := os.WriteFile(bad, []byte(strings.Replace(good, "web", "api", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The controller sees the fix within its polling period (1s).
	deadline := time.Now().Add(10 * time.Second)
	for rep = run(); !rep.Success(); rep = run() {
		if time.Now().After(deadline) {
			t.Fatalf("check still failing after the fix: %+v", rep.Results)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLocalStoreCheckWithoutAController(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	checks, err := Groups(Options{LocalAdmin: addr}, LocalGroups...)
	if err != nil {
		t.Fatal(err)
	}
	rep := (&Runner{}).Run(context.Background(), checks, NewState(Options{}))
	if rep.Success() || rep.Stopped != "can reach the local controller's admin server" {
		t.Fatalf("report = %v, stopped %q", descriptions(rep), rep.Stopped)
	}
}
