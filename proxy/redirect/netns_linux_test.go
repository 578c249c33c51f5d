package redirect

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A pod and a peer, each in a network namespace of its own, joined by a
// veth pair: eth0 in the pod, peer0 in the peer. The pod routes everything
// via the peer, so that any address is dialable (and, unless redirected,
// unreachable beyond it).
const (
	podIP4   = "192.0.2.1"
	peerIP4  = "192.0.2.2"
	peerIP4b = "192.0.2.3" // a second address of the peer, for the skipped CIDRs
	podIP6   = "2001:db8::1"
	peerIP6  = "2001:db8::2"
	peerIP6b = "2001:db8::3"
)

// peerEnv carries the peer namespace's path to the test process in the pod.
const peerEnv = "MERIDIAN_REDIRECT_PEER_NETNS"

const childTimeout = 2 * time.Minute

// enterPod reports whether the calling top-level test runs inside the pod's
// namespace, and the peer namespace's path there. In the parent it builds
// both namespaces, runs the test again inside the pod, reports the outcome,
// deletes the namespaces and returns false: the caller then returns.
//
// It never skips: without root, ip(8) or a kernel that does what is tested,
// the test fails and says why.
func enterPod(t *testing.T) (peerNS string, inside bool) {
	t.Helper()
	if p := os.Getenv(peerEnv); p != "" {
		return p, true
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it creates network namespaces and installs nftables rules in them")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs ip(8) to build its network namespaces: apt-get install iproute2 (hack/test-deps.sh does)")
	}
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1_000_000)
	pod, peer := "meridian-pod-"+suffix, "meridian-peer-"+suffix
	for _, ns := range []string{pod, peer} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	ip(t, "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", peer)
	for _, a := range [][]string{
		{pod, "eth0", podIP4 + "/24"}, {pod, "eth0", podIP6 + "/64"},
		{peer, "peer0", peerIP4 + "/24"}, {peer, "peer0", peerIP4b + "/24"},
		{peer, "peer0", peerIP6 + "/64"}, {peer, "peer0", peerIP6b + "/64"},
	} {
		// nodad: usable at once, without waiting for duplicate address detection.
		ip(t, "-n", a[0], "addr", "add", a[2], "dev", a[1], "nodad")
	}
	ip(t, "-n", pod, "link", "set", "eth0", "up")
	ip(t, "-n", peer, "link", "set", "peer0", "up")
	ip(t, "-n", pod, "route", "add", "default", "via", peerIP4)
	ip(t, "-n", pod, "-6", "route", "add", "default", "via", peerIP6)

	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", pod, os.Args[0],
		"-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout="+childTimeout.String())
	cmd.Env = append(os.Environ(), peerEnv+"=/var/run/netns/"+peer)
	out, err := cmd.CombinedOutput()
	t.Logf("inside network namespace %s:\n%s", pod, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()+" (") {
		t.Fatalf("the test failed inside the pod's network namespace (%v); its output is above", err)
	}
	return "", false
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// onThread runs f on an OS thread of its own, for per-thread state: the
// network namespace (setns) and the fsuid that new sockets take their owner
// from. The thread is never unlocked, so the runtime ends it when f returns
// and the changed state dies with it.
func onThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		done <- f()
	}()
	return <-done
}

// inNetns runs f on a thread inside the network namespace at path. Sockets
// f opens stay in that namespace wherever they are used afterwards.
func inNetns(path string, f func() error) error {
	return onThread(func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns %s: %w", path, err)
		}
		return f()
	})
}

// asUID runs f on a thread whose fsuid is uid: the sockets f opens belong to
// uid, which is what nftables' meta skuid looks at.
func asUID(uid int, f func() error) error {
	return onThread(func() error {
		// setfsuid answers with the previous fsuid, not an error, when it
		// refuses: asking twice shows whether the first call took.
		unix.SetfsuidRetUid(uid)
		if prev, _ := unix.SetfsuidRetUid(uid); prev != uid {
			return fmt.Errorf("setfsuid %d did not take (fsuid is %d)", uid, prev)
		}
		return f()
	})
}
