// Package netnstest runs a test inside a network namespace of its own, so
// that it can install iptables rules (a real REDIRECT, for SO_ORIGINAL_DST)
// without touching the machine's network.
//
// The test re-executes its own binary under `ip netns exec`, restricted to
// itself; the copy inside the namespace sees Enter return true and runs the
// body. It needs root, ip(8) and iptables(8); without them the test is
// skipped, saying which is missing.
package netnstest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// envVar names the test that the child process is to run inside the namespace.
const envVar = "MERIDIAN_NETNS_TEST"

// childTimeout bounds the child test process.
const childTimeout = 2 * time.Minute

// Enter reports whether the calling top-level test is running inside its
// namespace. In the parent it creates the namespace (loopback up), runs the
// test in it, reports the child's outcome, deletes the namespace and returns
// false: the caller then returns at once.
func Enter(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envVar) == t.Name() {
		return true
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("netnstest.Enter must be called from a top-level test, not %s", t.Name())
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: network namespaces and iptables need root")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (apt-get install iproute2 iptables)", tool)
		}
	}
	ns := fmt.Sprintf("meridian-test-%d-%d", os.Getpid(), time.Now().UnixNano()%1_000_000_000)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0],
		"-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout="+childTimeout.String())
	cmd.Env = append(os.Environ(), envVar+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("inside network namespace %s:\n%s", ns, out)
	switch {
	case err != nil:
		t.Fatalf("the test failed inside the namespace: %v", err)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skip("skipped inside the namespace")
	case !strings.Contains(string(out), "--- PASS: "+t.Name()):
		t.Fatal("the test did not run inside the namespace")
	}
	return false
}

// IPTables runs iptables (ip6tables when v6) with args, preferring the
// nftables backend and falling back to the legacy one.
func IPTables(t *testing.T, v6 bool, args ...string) {
	t.Helper()
	names := []string{"iptables", "iptables-legacy"}
	if v6 {
		names = []string{"ip6tables", "ip6tables-legacy"}
	}
	var errs []string
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			continue
		}
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil {
			return
		}
		errs = append(errs, fmt.Sprintf("%s %s: %v: %s", name, strings.Join(args, " "), err, out))
	}
	if len(errs) == 0 {
		t.Skipf("skipping: none of %v is installed", names)
	}
	t.Fatal(strings.Join(errs, "\n"))
}

// Redirect sends TCP connections to ip:fromPort to the same host's toPort,
// as a mesh's init container does for a pod.
func Redirect(t *testing.T, ip string, fromPort, toPort int) {
	t.Helper()
	IPTables(t, strings.Contains(ip, ":"), "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", ip,
		"--dport", fmt.Sprint(fromPort), "-j", "REDIRECT", "--to-ports", fmt.Sprint(toPort))
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
