package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// debianPackages maps each program the node runs to the Debian package that
// ships it; `up` installs the missing ones.
var debianPackages = []struct{ path, pkg, why string }{
	{"/usr/bin/containerd", "containerd", "the container runtime"},
	{"/usr/bin/ctr", "containerd", "importing images"},
	{"/usr/bin/containerd-shim-runc-v2", "containerd", "the container runtime"},
	{"/usr/sbin/runc", "runc", "the OCI runtime"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins", "the pod network"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins", "pod addresses"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins", "the pod network"},
	{"/usr/sbin/iptables", "iptables", "kube-proxy and the traffic guard"},
	{"/usr/sbin/ip6tables", "iptables", "the traffic guard"},
	{"/usr/sbin/conntrack", "conntrack", "kube-proxy"},
	{"/usr/sbin/ip", "iproute2", "the pod bridge"},
	{"/usr/bin/mount", "mount", "the kubelet"},
}

// preflight checks what `up` needs of the machine and installs the missing
// Debian packages. Each failure names the missing privilege or package.
func (c *config) preflight() error {
	caps, err := effectiveCaps()
	if err != nil {
		return err
	}
	for _, cp := range []struct {
		bit  uint
		name string
		why  string
	}{
		{21, "CAP_SYS_ADMIN", "mounts and namespaces for containers"},
		{12, "CAP_NET_ADMIN", "the pod bridge and iptables rules"},
		{1, "CAP_DAC_OVERRIDE", "the kubelet's files"},
		{5, "CAP_KILL", "stopping the node"},
	} {
		if caps&(1<<cp.bit) == 0 {
			return fmt.Errorf("missing privilege %s (needed for %s)", cp.name, cp.why)
		}
	}
	// cgroup v1 controllers the kubelet and runc use.
	for _, ctrl := range []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer"} {
		if _, err := cgroupV1Dir(ctrl); err != nil {
			return err
		}
	}
	var missing []string
	seen := map[string]bool{}
	for _, p := range debianPackages {
		if _, err := os.Stat(p.path); err != nil && !seen[p.pkg] {
			seen[p.pkg] = true
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) > 0 {
		fmt.Printf("installing Debian packages: %s\n", strings.Join(missing, " "))
		if err := aptInstall(missing); err != nil {
			return err
		}
		for _, p := range debianPackages {
			if _, err := os.Stat(p.path); err != nil {
				return fmt.Errorf("missing %s (Debian package %s, needed for %s) after installing it", p.path, p.pkg, p.why)
			}
		}
	}
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		exec.Command("modprobe", "br_netfilter").Run()
		if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
			return errors.New("missing kernel module br_netfilter (kube-proxy needs bridged pod traffic to pass through iptables); modprobe br_netfilter failed")
		}
	}
	if !hasFilesystem("overlay") {
		exec.Command("modprobe", "overlay").Run()
		if !hasFilesystem("overlay") {
			return errors.New("missing kernel module overlay (containerd's overlayfs snapshotter); modprobe overlay failed")
		}
	}
	for _, port := range nodePorts {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return fmt.Errorf("port %d is in use (the node needs it): %v", port, err)
		}
		l.Close()
	}
	return nil
}

func aptInstall(pkgs []string) error {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing Debian packages %s and no apt-get to install them", strings.Join(pkgs, " "))
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	update := exec.Command("apt-get", "update", "-qq")
	update.Env = env
	if out, err := update.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update (to install %s): %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	install := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
	install.Env = env
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("could not install Debian packages %s: apt-get install: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

func hasFilesystem(fs string) bool {
	data, _ := os.ReadFile("/proc/filesystems")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}

// cgroupV1Dir finds the mount point of a cgroup v1 controller.
func cgroupV1Dir(ctrl string) (string, error) {
	for _, m := range mounts() {
		if m.fstype != "cgroup" {
			continue
		}
		for _, o := range strings.Split(m.opts, ",") {
			if o == ctrl {
				return m.point, nil
			}
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "", fmt.Errorf("no cgroup v1 %s controller: this recipe is for cgroup v1 hosts (found the unified cgroup v2 hierarchy only)", ctrl)
	}
	return "", fmt.Errorf("missing cgroup v1 controller %s (not mounted under /sys/fs/cgroup)", ctrl)
}

type mount struct{ point, fstype, opts string }

func mounts() []mount {
	data, _ := os.ReadFile("/proc/self/mounts")
	var ms []mount
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 {
			ms = append(ms, mount{point: unescapeMount(f[1]), fstype: f[2], opts: f[3]})
		}
	}
	return ms
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	var out []string
	for _, m := range mounts() {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unmountAll unmounts everything below dir (kubelet volumes, pod network
// namespaces, container root filesystems, shm), lazily if it is busy.
func unmountAll(dir string) error {
	for pass := 0; pass < 5; pass++ {
		ms := mountsUnder(dir)
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			if err := syscall.Unmount(m, 0); err != nil {
				syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
	}
	if ms := mountsUnder(dir); len(ms) > 0 {
		return fmt.Errorf("could not unmount %s", strings.Join(ms, ", "))
	}
	return nil
}

// Sysctls the node needs. `up` records the values it found and `down`
// restores them.
var nodeSysctls = map[string]string{
	"net/ipv4/ip_forward":                 "1",
	"net/bridge/bridge-nf-call-iptables":  "1",
	"net/bridge/bridge-nf-call-ip6tables": "1",
}

func (c *config) setSysctls() error {
	saved := map[string]string{}
	if data, err := os.ReadFile(c.path("host-sysctls.json")); err == nil {
		json.Unmarshal(data, &saved) // a previous up's originals win
	}
	for k, v := range nodeSysctls {
		p := filepath.Join("/proc/sys", k)
		old, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("sysctl %s: %v", k, err)
		}
		if _, ok := saved[k]; !ok {
			saved[k] = strings.TrimSpace(string(old))
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s=%s (missing privilege? /proc/sys must be writable): %v", k, v, err)
		}
	}
	data, _ := json.Marshal(saved)
	return os.WriteFile(c.path("host-sysctls.json"), data, 0o644)
}

func (c *config) restoreSysctls() {
	data, err := os.ReadFile(c.path("host-sysctls.json"))
	if err != nil {
		return
	}
	saved := map[string]string{}
	json.Unmarshal(data, &saved)
	for k, v := range saved {
		os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
	}
	os.Remove(c.path("host-sysctls.json"))
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupBridge creates the pod bridge with the node's address before anything
// starts, so the apiserver can advertise it and the kubelet can serve on it.
// The CNI bridge plugin finds it in place.
func setupBridge() error {
	if _, err := net.InterfaceByName(bridgeName); err != nil {
		if err := run("ip", "link", "add", bridgeName, "type", "bridge"); err != nil {
			return err
		}
	}
	// No IPv6 on the bridge: the pod network is IPv4 only.
	os.WriteFile("/proc/sys/net/ipv6/conf/"+bridgeName+"/disable_ipv6", []byte("1"), 0o644)
	out, _ := exec.Command("ip", "-4", "addr", "show", "dev", bridgeName).Output()
	if !strings.Contains(string(out), " "+nodeIP+"/16 ") {
		if err := run("ip", "addr", "add", nodeIP+"/16", "dev", bridgeName); err != nil {
			return err
		}
	}
	if err := run("ip", "link", "set", bridgeName, "up"); err != nil {
		return err
	}
	// Service addresses are reached over the bridge too, from the node's
	// address: the host's own connections to a Service (DNAT'ed by
	// kube-proxy) then come from 198.19.0.1, so the replies pass the guard,
	// and a Service address that nothing answers for never goes to the
	// default route.
	return run("ip", "route", "replace", serviceCIDR, "dev", bridgeName, "src", nodeIP)
}

func deleteBridge() {
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		run("ip", "link", "del", bridgeName)
	}
}

// The guard: packets from the pod bridge may reach only pods, services and
// the node itself (198.18.0.0/15) or loopback; everything else is dropped.
// It sits in the mangle table, after kube-proxy's DNAT and before any
// filter rule (kube-proxy's included) could accept a packet, and kube-proxy
// never touches mangle's built-in chains.
const guardChain = "MERIDIAN-GUARD"

func setupGuard() error {
	removeGuard()
	rules := [][]string{
		{"-t", "mangle", "-N", guardChain},
		{"-t", "mangle", "-A", guardChain, "-d", clusterCIDR, "-j", "RETURN"},
		{"-t", "mangle", "-A", guardChain, "-d", "127.0.0.0/8", "-j", "RETURN"},
		{"-t", "mangle", "-A", guardChain, "-m", "comment", "--comment", "meridian-cluster: pod traffic stays on this machine", "-j", "DROP"},
		{"-t", "mangle", "-I", "FORWARD", "1", "-i", bridgeName, "-j", guardChain},
		{"-t", "mangle", "-I", "INPUT", "1", "-i", bridgeName, "-j", guardChain},
	}
	for _, r := range rules {
		if err := run("iptables", r...); err != nil {
			return fmt.Errorf("installing the traffic guard: %v", err)
		}
	}
	// IPv6: the pod network has none; drop whatever a pod sends.
	for _, r := range [][]string{
		{"-t", "mangle", "-N", guardChain},
		{"-t", "mangle", "-A", guardChain, "-j", "DROP"},
		{"-t", "mangle", "-I", "FORWARD", "1", "-i", bridgeName, "-j", guardChain},
		{"-t", "mangle", "-I", "INPUT", "1", "-i", bridgeName, "-j", guardChain},
	} {
		if err := run("ip6tables", r...); err != nil {
			return fmt.Errorf("installing the IPv6 traffic guard: %v", err)
		}
	}
	return nil
}

func removeGuard() {
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"FORWARD", "INPUT"} {
			for exec.Command(ipt, "-t", "mangle", "-D", chain, "-i", bridgeName, "-j", guardChain).Run() == nil {
			}
		}
		exec.Command(ipt, "-t", "mangle", "-F", guardChain).Run()
		exec.Command(ipt, "-t", "mangle", "-X", guardChain).Run()
	}
}

// removeKubeIptables removes every chain named KUBE-* (kube-proxy's and the
// kubelet's: KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, ...) and
// the rules of the built-in chains that jump to them, for IPv4 and IPv6.
func removeKubeIptables() {
	for _, ipt := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(ipt + "-save").Output()
		if err != nil {
			continue
		}
		table := ""
		var jumps [][]string
		chains := map[string][]string{}
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, ":KUBE-"):
				name := strings.Fields(line[1:])[0]
				chains[table] = append(chains[table], name)
			case strings.HasPrefix(line, "-A ") && strings.Contains(line, " -j KUBE-") && !strings.HasPrefix(line, "-A KUBE-"):
				// iptables-save quotes comments; the rule is deleted by
				// its chain and position-independent spec.
				jumps = append(jumps, append([]string{"-t", table, "-D"}, splitRule(line[3:])...))
			}
		}
		for _, j := range jumps {
			exec.Command(ipt, j...).Run()
		}
		for table, names := range chains {
			for _, n := range names {
				exec.Command(ipt, "-t", table, "-F", n).Run()
			}
			for _, n := range names {
				exec.Command(ipt, "-t", table, "-X", n).Run()
			}
		}
	}
}

// splitRule splits an iptables-save rule into arguments, honouring quotes.
func splitRule(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			inQuote = !inQuote
			have = true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

func guardInstalled() bool {
	return exec.Command("iptables", "-t", "mangle", "-C", "FORWARD", "-i", bridgeName, "-j", guardChain).Run() == nil
}

// removeKubeCgroups removes the cgroups the kubelet created (kubepods and
// below) from every hierarchy, v1 and the hybrid host's unified one, once
// nothing runs in them.
func removeKubeCgroups() {
	for _, m := range mounts() {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		root := filepath.Join(m.point, "kubepods")
		if _, err := os.Stat(root); err != nil {
			continue
		}
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			syscall.Rmdir(d)
		}
	}
}

// kubePodPIDs lists the processes in the kubelet's pod cgroups.
func kubePodPIDs() []int {
	dir, err := cgroupV1Dir("pids")
	if err != nil {
		return nil
	}
	var pids []int
	filepath.WalkDir(filepath.Join(dir, "kubepods"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}
