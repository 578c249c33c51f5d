package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"

	"github.com/meridian-mesh/meridian/proxy/redirect"
)

// asMainEnv makes the test binary behave as meridian-init itself, for the
// tests that need it in a process of its own.
const asMainEnv = "MERIDIAN_INIT_AS_MAIN"

// netnsEnv names the test a child process runs in a network namespace of its own.
const netnsEnv = "MERIDIAN_INIT_NETNS_TEST"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func runArgs(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// Bad flags exit 2, naming the flag and the value, and change nothing (no
// namespace here: had they tried, the test's own would have been touched).
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--skip-inbound-ports=70000"}, `invalid value "70000" for flag -skip-inbound-ports: port 70000 is out of range 1-65535`},
		{[]string{"--skip-outbound-ports", "25,mysql"}, `invalid value "25,mysql" for flag -skip-outbound-ports: "mysql" is not a port number`},
		{[]string{"--skip-outbound-ports=4010-4000"}, `invalid value "4010-4000" for flag -skip-outbound-ports: range "4010-4000": it ends before it starts`},
		{[]string{"--skip-outbound-cidrs=10.0.0.0/33"}, `invalid value "10.0.0.0/33" for flag -skip-outbound-cidrs: "10.0.0.0/33" is not a CIDR`},
		{[]string{"--inbound-port=0"}, `invalid value "0" for flag -inbound-port: port 0 is out of range 1-65535`},
		{[]string{"--outbound-port=http"}, `invalid value "http" for flag -outbound-port: "http" is not a port number`},
		{[]string{"--proxy-uid=-1"}, `invalid value "-1" for flag -proxy-uid: not a uid`},
		{[]string{"--log-level=loud"}, `invalid value "loud" for flag -log-level`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"--outbound-port=4143"}, "meridian-init: inbound and outbound ports are both 4143"},
		{[]string{"--dry-run", "extra"}, `meridian-init: unexpected argument "extra"`},
	} {
		code, stdout, stderr := runArgs(tc.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("meridian-init %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and a message containing %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
	}
}

func TestDryRun(t *testing.T) {
	code, stdout, stderr := runArgs("--dry-run", "--inbound-port=5143", "--outbound-port=5140", "--proxy-uid=1000",
		"--skip-inbound-ports=22,4000-4010", "--skip-outbound-ports=5432", "--skip-outbound-ports=3306",
		"--skip-outbound-cidrs=169.254.169.254/32,fd00::/8")
	want := `table inet meridian {
	chain inbound {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 22 return
		tcp dport 4000-4010 return
		tcp dport 4190-4191 return
		tcp dport 5143 return
		meta l4proto tcp redirect to :5143
	}

	chain outbound {
		type nat hook output priority -100; policy accept;
		meta skuid 1000 return
		oifname "lo" return
		ip daddr 169.254.169.254 return
		ip6 daddr fd00::/8 return
		tcp dport 3306 return
		tcp dport 5432 return
		meta l4proto tcp redirect to :5140
	}
}
`
	if code != 0 || stdout != want || !strings.Contains(stderr, "nothing was installed") {
		t.Errorf("meridian-init --dry-run: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 0 and stdout:\n%s", code, stdout, stderr, want)
	}
	code, stdout, _ = runArgs("--dry-run", "--remove")
	if code != 0 || stdout != "delete table inet meridian\n" {
		t.Errorf("meridian-init --dry-run --remove: exit %d, stdout %q", code, stdout)
	}
}

// Installing, installing again and removing, for real, in a network
// namespace of the test's own.
func TestInstallAndRemove(t *testing.T) {
	if !inNewNetns(t) {
		return
	}
	present := func() bool {
		t.Helper()
		conn, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == redirect.TableName {
				return true
			}
		}
		return false
	}
	for i := range 2 {
		code, _, stderr := runArgs("--skip-inbound-ports=25", "--skip-outbound-cidrs=10.0.0.0/8")
		if code != 0 || !present() {
			t.Fatalf("install #%d: exit %d, table present %v; stderr:\n%s\n(nftables NAT must work on this kernel)", i+1, code, present(), stderr)
		}
		for _, want := range []string{`msg="installed the nftables table" table="inet meridian" inbound_port=4143 outbound_port=4140 proxy_uid=2102`,
			`rule="inbound: tcp dport 25 return"`, `rule="outbound: ip daddr 10.0.0.0/8 return"`} {
			if !strings.Contains(stderr, want) {
				t.Errorf("install #%d: the log lacks %s:\n%s", i+1, want, stderr)
			}
		}
	}
	for i := range 2 { // removing what is not there is fine
		code, _, stderr := runArgs("--remove")
		if code != 0 || present() {
			t.Fatalf("remove #%d: exit %d, table present %v; stderr:\n%s", i+1, code, present(), stderr)
		}
	}
}

// Without NET_ADMIN (here: not root) it fails, exit 1, and says what it needs.
func TestWithoutNetAdmin(t *testing.T) {
	requireRoot(t)
	// The test binary, where user nobody may run it.
	dir, err := os.MkdirTemp("", "meridian-init-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "meridian-init")
	copyFile(t, os.Args[0], bin)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--skip-inbound-ports=25")
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET, // in case it could after all: not in the test's namespace
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "operation not permitted (this needs the NET_ADMIN capability") {
		t.Errorf("meridian-init as nobody: %v; stderr:\n%s\nwant exit 1 and a message about NET_ADMIN", err, stderr.String())
	}
}

// The init container's image is this one binary: keep Kubernetes out of it.
func TestNoKubernetesDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/google/nftables") {
		t.Fatalf("go list -deps does not look right:\n%s", out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
			t.Errorf("meridian-init depends on %s", p)
		}
	}
}

// inNewNetns reports whether the calling top-level test runs in a network
// namespace of its own. In the parent it runs the test again in a new one
// (which vanishes with the child), reports the outcome and returns false:
// the caller then returns. It fails, never skips, without root.
func inNewNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		return true
	}
	requireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	t.Logf("in a new network namespace:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()+" (") {
		t.Fatalf("the test failed in its network namespace (%v); its output is above", err)
	}
	return false
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it installs nftables rules in a network namespace it creates")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
