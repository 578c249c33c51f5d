package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The node's processes, in start order; `down` stops them in reverse.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}

// readyMarker is written when `up` has finished: the node is Ready and
// CoreDNS answers.
func (c *config) readyMarker() string { return c.path("run", "ready") }

func (c *config) up() error {
	start := time.Now()
	var running, stopped []string
	for _, name := range components {
		if c.recorded(name).alive() {
			running = append(running, name)
		} else {
			stopped = append(stopped, name)
		}
	}
	_, readyErr := os.Stat(c.readyMarker())
	switch {
	case len(stopped) == 0 && readyErr == nil:
		fmt.Printf("cluster already up: nothing changed (work dir %s)\n  export KUBECONFIG=%s\n", c.work, c.kubeconfig())
		return nil
	case len(running) > 0:
		return fmt.Errorf("cluster is partly up (running: %s; not running: %s; ready: %v): see %s, then run hack/cluster down and up again",
			strings.Join(running, " "), strings.Join(stopped, " "), readyErr == nil, c.path("logs"))
	}
	if c.leftovers() {
		fmt.Println("cleaning up after a cluster that did not shut down cleanly")
		if err := c.teardown(); err != nil {
			return err
		}
	}
	if err := c.preflight(); err != nil {
		return err
	}
	b, err := c.ensureBinaries()
	if err != nil {
		return err
	}
	tars, err := c.systemImages(b)
	if err != nil {
		return err
	}
	fmt.Printf("starting the node in %s\n", c.work)
	if err := c.freshWorkDir(b); err != nil {
		return err
	}
	if err := c.writePKI(); err != nil {
		return err
	}
	if err := c.writeConfigs(); err != nil {
		return err
	}
	if err := c.setSysctls(); err != nil {
		return err
	}
	if err := setupBridge(); err != nil {
		return fmt.Errorf("creating the pod bridge %s: %v", bridgeName, err)
	}
	if err := setupGuard(); err != nil {
		return err
	}
	if err := c.startAll(b, tars); err != nil {
		return fmt.Errorf("%v\n(the node is left as it is for inspection: logs in %s; hack/cluster down cleans up)", err, c.path("logs"))
	}
	if err := os.WriteFile(c.readyMarker(), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("cluster up in %s: node %s Ready, CoreDNS answering\n  export KUBECONFIG=%s\n  kubectl: %s (or hack/cluster kubectl)\n  logs:    %s\n",
		time.Since(start).Round(time.Second), nodeName, c.kubeconfig(), c.path("bin", "kubectl"), c.path("logs"))
	return nil
}

// freshWorkDir empties the work dir (keeping the lock) and links the binaries
// into bin/.
func (c *config) freshWorkDir(b binaries) error {
	entries, _ := os.ReadDir(c.work)
	for _, e := range entries {
		if e.Name() == ".lock" {
			continue
		}
		if err := os.RemoveAll(c.path(e.Name())); err != nil {
			return err
		}
	}
	for _, d := range []string{"bin", "run", "logs", "etcd", "home", "pod-logs", "kubelet"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(c.path("etcd"), 0o700)
	for _, name := range kubeBinaries {
		if err := os.Symlink(b.kube(name), c.path("bin", name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *config) startAll(b binaries, tars []string) error {
	pki := func(f string) string { return c.path("pki", f) }
	kc := func(n string) string { return c.path("kubeconfigs", n+".kubeconfig") }
	step := func(what string, f func() error) error {
		t := time.Now()
		if err := f(); err != nil {
			return err
		}
		fmt.Printf("  %-44s %5.1fs\n", what, time.Since(t).Seconds())
		return nil
	}
	startAndWait := func(label, name, bin string, args []string, timeout time.Duration, ready func() error) error {
		return step(label, func() error {
			p, err := c.startProcess(name, bin, args, nil)
			if err != nil {
				return err
			}
			return waitFor(name, timeout, func() error {
				if !p.alive() {
					return fmt.Errorf("%s exited:\n%s", name, c.logTail(name, 15))
				}
				return ready()
			})
		})
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	if err := startAndWait("etcd", "etcd", b.kube("etcd"), []string{
		"--name=meridian",
		"--data-dir=" + c.path("etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("--initial-cluster=meridian=http://127.0.0.1:%d", etcdPeerPort),
		"--log-level=warn",
		// A throwaway test cluster: durability is not worth the fsyncs.
		"--unsafe-no-fsync",
	}, time.Minute, func() error { return httpOK(etcdURL + "/health") }); err != nil {
		return err
	}

	if err := startAndWait("kube-apiserver", "kube-apiserver", b.kube("kube-apiserver"), []string{
		"--advertise-address=" + nodeIP,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--etcd-servers=" + etcdURL,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--client-ca-file=" + pki("ca.crt"),
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--cert-dir=" + c.path("run", "kube-apiserver"),
		"--profiling=false",
	}, 2*time.Minute, func() error { _, err := c.apiGet("/readyz"); return err }); err != nil {
		return err
	}

	if err := step("kube-controller-manager, kube-scheduler", func() error {
		if _, err := c.startProcess("kube-controller-manager", b.kube("kube-controller-manager"), []string{
			"--kubeconfig=" + kc("controller-manager"),
			"--authentication-kubeconfig=" + kc("controller-manager"),
			"--authorization-kubeconfig=" + kc("controller-manager"),
			"--controllers=*,-nodeipam",
			"--service-account-private-key-file=" + pki("sa.key"),
			"--root-ca-file=" + pki("ca.crt"),
			"--cluster-signing-cert-file=" + pki("ca.crt"),
			"--cluster-signing-key-file=" + pki("ca.key"),
			"--use-service-account-credentials=true",
			"--service-cluster-ip-range=" + serviceCIDR,
			"--cluster-name=meridian",
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--cert-dir=" + c.path("run", "kube-controller-manager"),
			"--profiling=false",
		}, nil); err != nil {
			return err
		}
		_, err := c.startProcess("kube-scheduler", b.kube("kube-scheduler"), []string{
			"--config=" + c.path("config", "scheduler.yaml"),
			"--authentication-kubeconfig=" + kc("scheduler"),
			"--authorization-kubeconfig=" + kc("scheduler"),
			"--bind-address=127.0.0.1",
			"--cert-dir=" + c.path("run", "kube-scheduler"),
			"--profiling=false",
		}, nil)
		return err
	}); err != nil {
		return err
	}

	if err := startAndWait("containerd", "containerd", "/usr/bin/containerd", []string{"--config", c.path("containerd", "config.toml")},
		time.Minute, func() error {
			return exec.Command("ctr", "--address", c.containerdSocket(), "version").Run()
		}); err != nil {
		return err
	}
	if err := step("images (pause, coredns)", func() error {
		for _, t := range tars {
			if err := c.importImage(t); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}

	if err := startAndWait("kubelet (node Ready)", "kubelet", b.kube("kubelet"), []string{
		"--config=" + c.path("config", "kubelet.yaml"),
		"--kubeconfig=" + kc("kubelet"),
		"--hostname-override=" + nodeName,
		"--node-ip=" + nodeIP,
		"--root-dir=" + c.path("kubelet"),
		"--cert-dir=" + c.path("kubelet", "pki"),
	}, 3*time.Minute, c.nodeReady); err != nil {
		return err
	}
	if _, err := c.startProcess("kube-proxy", b.kube("kube-proxy"), []string{"--config=" + c.path("config", "kube-proxy.yaml")}, nil); err != nil {
		return err
	}

	return step("coredns (answering)", func() error {
		if err := c.kubectl("apply", "-f", c.path("config", "coredns.yaml")); err != nil {
			return err
		}
		return waitFor("CoreDNS to answer for kubernetes.default.svc.cluster.local", 3*time.Minute, func() error {
			for _, name := range components {
				if !c.recorded(name).alive() {
					return fmt.Errorf("%s exited:\n%s", name, c.logTail(name, 15))
				}
			}
			return dnsAnswers()
		})
	})
}

// down stops every process the cluster started and removes what it set up.
func (c *config) down() error {
	if !c.leftovers() {
		fmt.Println("cluster is not up: nothing to stop")
		return nil
	}
	if err := c.teardown(); err != nil {
		return err
	}
	fmt.Printf("cluster down: no processes, mounts, bridge or iptables rules left (logs kept in %s)\n", c.path("logs"))
	return nil
}

// leftovers reports whether anything of a cluster is there: a pid file, a
// mount under the work dir, the bridge or the guard.
func (c *config) leftovers() bool {
	for _, name := range components {
		if c.recorded(name) != nil {
			return true
		}
	}
	if len(mountsUnder(c.work)) > 0 || len(c.shimPIDs()) > 0 || guardInstalled() {
		return true
	}
	_, err := net.InterfaceByName(bridgeName)
	return err == nil
}

func (c *config) teardown() error {
	stopped := 0
	var exited []*proc
	stop := func(name string, grace time.Duration) {
		if p := c.recorded(name); p.alive() {
			p.stop(grace)
			stopped++
			exited = append(exited, p)
		}
	}
	// The kubelet first, so that nothing restarts what goes away next.
	stop("kubelet", 15*time.Second)
	if c.recorded("containerd").alive() {
		n, err := c.removePods(90 * time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "removing pods through containerd: %v (removed %d; killing the rest)\n", err, n)
		}
		fmt.Printf("removed %d pods\n", n)
	}
	stop("kube-proxy", 10*time.Second)
	if kp := c.path("bin", "kube-proxy"); fileExists(kp) {
		// Removes kube-proxy's iptables chains and rules.
		exec.Command(kp, "--cleanup", "--v=0").Run()
	}
	for _, name := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		stop(name, 15*time.Second)
	}
	// Whatever still runs in a pod cgroup.
	for _, pid := range kubePodPIDs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	stop("containerd", 15*time.Second)
	for _, shim := range c.shimPIDs() {
		shim.stop(5 * time.Second)
		stopped++
		exited = append(exited, shim)
	}
	var problems []string
	if err := unmountAll(c.work); err != nil {
		problems = append(problems, err.Error())
	}
	removeKubeCgroups()
	removeKubeIptables()
	removeGuard()
	deleteBridge()
	c.restoreSysctls()
	removeContainerLogLinks(c.path("pod-logs"))

	for _, name := range components {
		if p := c.recorded(name); p.alive() {
			problems = append(problems, fmt.Sprintf("%s (pid %d) still runs", name, p.pid))
		}
	}
	for _, p := range c.shimPIDs() {
		problems = append(problems, fmt.Sprintf("containerd shim (pid %d) still runs", p.pid))
	}
	if pids := kubePodPIDs(); len(pids) > 0 {
		problems = append(problems, fmt.Sprintf("pod processes %v still run", pids))
	}
	if len(problems) > 0 {
		return fmt.Errorf("down left things behind: %s", strings.Join(problems, "; "))
	}
	// The stopped processes are orphans (`up` has long exited): wait, a
	// little, for pid 1 to reap them, so that ps shows nothing afterwards.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range exited {
		for !p.gone() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Keep the logs; everything else is state of the node that is gone.
	entries, _ := os.ReadDir(c.work)
	for _, e := range entries {
		if e.Name() == "logs" || e.Name() == ".lock" {
			continue
		}
		if err := os.RemoveAll(c.path(e.Name())); err != nil {
			return err
		}
	}
	fmt.Printf("stopped %d processes\n", stopped)
	return nil
}

// removeContainerLogLinks removes the kubelet's symlinks in
// /var/log/containers that point into this node's pod logs, and the
// directory itself if that leaves it empty.
func removeContainerLogLinks(podLogs string) {
	const dir = "/var/log/containers"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, podLogs+"/") {
			os.Remove(p)
		}
	}
	syscall.Rmdir(dir)
}

// status prints what runs; exit status 0 when up, 3 when down, 1 otherwise.
func (c *config) status() int {
	var running, stopped []string
	lines := []string{}
	for _, name := range components {
		p := c.recorded(name)
		switch {
		case p.alive():
			running = append(running, name)
			lines = append(lines, fmt.Sprintf("  %-24s running (pid %d)", name, p.pid))
		case p != nil:
			stopped = append(stopped, name)
			lines = append(lines, fmt.Sprintf("  %-24s NOT RUNNING (was pid %d; see %s)", name, p.pid, c.path("logs", name+".log")))
		default:
			stopped = append(stopped, name)
			lines = append(lines, fmt.Sprintf("  %-24s not started", name))
		}
	}
	if len(running) == 0 {
		if c.leftovers() {
			fmt.Printf("cluster is down but left state behind: run hack/cluster down (work dir %s)\n", c.work)
			return 1
		}
		fmt.Printf("cluster is down (work dir %s)\n", c.work)
		return 3
	}
	code := 0
	state := "up"
	if err := c.nodeReady(); err != nil {
		state, code = "up, node not Ready: "+err.Error(), 1
	}
	if len(stopped) > 0 {
		state, code = "BROKEN (some components are not running)", 1
	} else if _, err := os.Stat(c.readyMarker()); err != nil && code == 0 {
		state, code = "starting (hack/cluster up has not finished)", 1
	}
	fmt.Printf("cluster %s\n  work dir   %s\n  kubeconfig %s\n  kubectl    %s\n  logs       %s/<component>.log\n", state, c.work, c.kubeconfig(), c.path("bin", "kubectl"), c.path("logs"))
	fmt.Println(strings.Join(lines, "\n"))
	return code
}

func (c *config) logTail(name string, n int) string {
	data, _ := os.ReadFile(c.path("logs", name+".log"))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (c *config) kubectl(args ...string) error {
	cmd := exec.Command(c.path("bin", "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// apiGet fetches a path from the apiserver as the admin.
func (c *config) apiGet(path string) ([]byte, error) {
	caPEM, err := os.ReadFile(c.path("pki", "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(c.path("pki", "admin.crt"), c.path("pki", "admin.key"))
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d%s", apiPort, path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func (c *config) nodeReady() error {
	body, err := c.apiGet("/api/v1/nodes/" + nodeName)
	if err != nil {
		return err
	}
	var node struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string }
		}
	}
	if err := json.Unmarshal(body, &node); err != nil {
		return err
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == "Ready" {
			if cond.Status == "True" {
				return nil
			}
			return fmt.Errorf("node %s not Ready: %s: %s", nodeName, cond.Reason, cond.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", nodeName)
}

func httpOK(url string) error {
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// dnsAnswers asks the cluster DNS Service, from the host through
// kube-proxy's rules, for the apiserver's Service name.
func dnsAnswers() error {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(dnsServiceIP, "53"))
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "kubernetes.default.svc.cluster.local.")
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a == apiServiceIP {
			return nil
		}
	}
	return errors.New("kubernetes.default.svc.cluster.local resolved to " + strings.Join(addrs, ",") + ", want " + apiServiceIP)
}
