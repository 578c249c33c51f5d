// Command cluster runs a real single-node Kubernetes cluster on this machine
// for Meridian's end-to-end suite: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet and kube-proxy built from
// upstream sources (the modules in kube/ and coredns/), containerd, runc and
// the CNI plugins from Debian, and CoreDNS as a pod. Images are tarballs of
// static binaries built here and imported into containerd: nothing is pulled.
//
// It is run through hack/cluster, which builds it and sets
// MERIDIAN_CLUSTER_TOOLS to this directory:
//
//	hack/cluster up            start the node in the background (idempotent)
//	hack/cluster down          stop every process it started, remove its mounts
//	hack/cluster status        what runs, and whether the node is Ready
//	hack/cluster load-images   import images: REF=./go/package or image.tar
//	hack/cluster build         only build (or find cached) the binaries
//	hack/cluster env           shell exports for KUBECONFIG and kubectl
//	hack/cluster kubectl ...   kubectl against the cluster
//
// See docs/development.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

const usage = `usage: hack/cluster COMMAND

A real single-node Kubernetes cluster on this machine, for the e2e suite.

commands:
  up                     build (or reuse) the binaries and start the node in the
                         background; waits until the node is Ready and CoreDNS
                         answers. Says so and changes nothing when already up.
  down                   stop every process the cluster started, remove its
                         mounts, iptables rules and bridge; keeps the logs.
  status                 which components run, and whether the node is Ready.
                         Exit status 0 when up, 3 when down, 1 when broken.
  load-images [IMG...]   import images into the node's containerd. IMG is
                         REF=./path/to/main/package (built here, statically, into
                         an image holding that one binary) or a tarball path.
                         The cluster's own images are always (re)loaded.
  build                  only build (or find cached) the binaries, start nothing;
                         prints their directory (etcd and kube-apiserver there
                         serve envtest too: hack/kube-assets.sh). No root needed.
  env                    print shell exports: eval "$(hack/cluster env)"
  kubectl ARGS...        run kubectl against the cluster

environment:
  MERIDIAN_CLUSTER_DIR    work directory (default /var/lib/meridian-cluster)
  MERIDIAN_CLUSTER_CACHE  binary and image cache (default ~/.cache/meridian-cluster)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cfg, err := loadConfig()
	if err != nil {
		fail(err)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "up":
		err = cfg.withLock(func() error { return cfg.up() })
	case "down":
		err = cfg.withLock(func() error { return cfg.down() })
	case "status":
		os.Exit(cfg.status())
	case "load-images":
		err = cfg.withLock(func() error { return cfg.loadImages(args) })
	case "build":
		var b binaries
		if b, err = cfg.ensureBinaries(); err == nil {
			fmt.Println(b.dir)
		}
	case "env":
		fmt.Printf("export KUBECONFIG=%s\nexport PATH=%s:$PATH\n", cfg.kubeconfig(), cfg.path("bin"))
	case "kubectl":
		err = cfg.kubectlExec(args)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "hack/cluster: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "hack/cluster: %v\n", err)
	os.Exit(1)
}

// config holds where things live and which versions are built.
type config struct {
	work  string // MERIDIAN_CLUSTER_DIR: all state of one running node
	cache string // binaries and image tarballs, kept across up/down
	tools string // hack/cluster-tools

	kubeVersion    string // k8s.io/kubernetes, from kube/go.mod
	etcdVersion    string // go.etcd.io/etcd/server/v3, from kube/go.mod
	corednsVersion string // github.com/coredns/coredns, from coredns/go.mod
}

func loadConfig() (*config, error) {
	c := &config{
		work:  os.Getenv("MERIDIAN_CLUSTER_DIR"),
		cache: os.Getenv("MERIDIAN_CLUSTER_CACHE"),
		tools: os.Getenv("MERIDIAN_CLUSTER_TOOLS"),
	}
	if c.work == "" {
		c.work = "/var/lib/meridian-cluster"
	}
	if c.cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("no cache directory (set MERIDIAN_CLUSTER_CACHE): %v", err)
		}
		c.cache = filepath.Join(dir, "meridian-cluster")
	}
	if c.tools == "" {
		return nil, errors.New("MERIDIAN_CLUSTER_TOOLS is not set: run this through hack/cluster")
	}
	for _, p := range []*string{&c.work, &c.cache, &c.tools} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	var err error
	if c.kubeVersion, err = moduleVersion(filepath.Join(c.tools, "kube", "go.mod"), "k8s.io/kubernetes"); err != nil {
		return nil, err
	}
	if c.etcdVersion, err = moduleVersion(filepath.Join(c.tools, "kube", "go.mod"), "go.etcd.io/etcd/server/v3"); err != nil {
		return nil, err
	}
	if c.corednsVersion, err = moduleVersion(filepath.Join(c.tools, "coredns", "go.mod"), "github.com/coredns/coredns"); err != nil {
		return nil, err
	}
	return c, nil
}

// moduleVersion reads the version a go.mod requires of a module.
func moduleVersion(gomod, module string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == module && strings.HasPrefix(f[1], "v") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s does not require %s", gomod, module)
}

func (c *config) path(elem ...string) string {
	return filepath.Join(append([]string{c.work}, elem...)...)
}

func (c *config) kubeconfig() string { return c.path("kubeconfig") }

// withLock serialises commands that change the node.
func (c *config) withLock(f func() error) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (missing privilege: it starts containerd and the kubelet, mounts, and changes iptables rules and sysctls)")
	}
	if err := os.MkdirAll(c.work, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(c.path(".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fmt.Fprintf(os.Stderr, "hack/cluster: waiting for another hack/cluster command on %s\n", c.work)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			return err
		}
	}
	return f()
}

func (c *config) kubectlExec(args []string) error {
	kubectl := c.path("bin", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		return errors.New("the cluster is not up (no kubectl in the work directory): run hack/cluster up")
	}
	cmd := exec.Command(kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		return err
	}
	return nil
}
