package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The binaries of one node. The Kubernetes components and etcd are built
// together from kube/, CoreDNS from coredns/, pause from images/pause.
var kubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl", "etcd"}

// binaries is where each binary of the node lives in the cache.
type binaries struct {
	dir     string // kubernetes-<version>/: kubeBinaries
	coredns string
	pause   string
}

func (b binaries) kube(name string) string { return filepath.Join(b.dir, name) }

// ensureBinaries builds whatever is missing from the cache, or stale. The
// cache is keyed by version (one directory per Kubernetes, etcd and CoreDNS
// version) and a stamp inside it records a hash of the recipe (go.mod,
// go.sum, the mains, the Go version, the flags), so a change to any of them
// rebuilds and a warm run costs nothing.
func (c *config) ensureBinaries() (binaries, error) {
	// One build at a time per cache (up, load-images, build, and
	// hack/kube-assets.sh may run at once).
	if err := os.MkdirAll(c.cache, 0o755); err != nil {
		return binaries{}, err
	}
	lock, err := os.OpenFile(filepath.Join(c.cache, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return binaries{}, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return binaries{}, err
	}
	b := binaries{dir: filepath.Join(c.cache, "kubernetes-"+c.kubeVersion+"-etcd-"+c.etcdVersion)}
	major, minor := kubeMajorMinor(c.kubeVersion)
	ldflags := strings.Join([]string{"-s", "-w",
		"-X", "k8s.io/component-base/version.gitVersion=" + c.kubeVersion,
		"-X", "k8s.io/component-base/version.gitMajor=" + major,
		"-X", "k8s.io/component-base/version.gitMinor=" + minor,
		"-X", "k8s.io/component-base/version.gitTreeState=clean",
		"-X", "k8s.io/client-go/pkg/version.gitVersion=" + c.kubeVersion,
		"-X", "k8s.io/client-go/pkg/version.gitMajor=" + major,
		"-X", "k8s.io/client-go/pkg/version.gitMinor=" + minor,
	}, " ")
	if err := c.build(fmt.Sprintf("Kubernetes %s and etcd %s (cold: about 7 minutes on 2 idle cores, 25 when they are busy)", c.kubeVersion, c.etcdVersion),
		filepath.Join(c.tools, "kube"), ldflags, b.dir, kubeBinaries, "./..."); err != nil {
		return b, err
	}
	dir := filepath.Join(c.cache, "coredns-"+c.corednsVersion)
	b.coredns = filepath.Join(dir, "coredns")
	if err := c.build("CoreDNS "+c.corednsVersion+" (cold: about 4 minutes)", filepath.Join(c.tools, "coredns"),
		"-s -w -X github.com/coredns/coredns/coremain.GitCommit="+c.corednsVersion, dir, []string{"coredns"}, "."); err != nil {
		return b, err
	}
	dir = filepath.Join(c.cache, "pause")
	b.pause = filepath.Join(dir, "pause")
	if err := c.build("pause", filepath.Join(c.tools, "images", "pause"), "-s -w", dir, []string{"pause"}, "."); err != nil {
		return b, err
	}
	return b, nil
}

// build runs `go build` for pkgs in moddir into dir unless dir holds every
// one of names under the same recipe stamp.
func (c *config) build(what, moddir, ldflags, dir string, names []string, pkgs ...string) error {
	stamp, err := recipeStamp(moddir, ldflags)
	if err != nil {
		return err
	}
	if have, err := os.ReadFile(filepath.Join(dir, ".stamp")); err == nil && string(have) == stamp {
		complete := true
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
				complete = false
			}
		}
		if complete {
			return nil
		}
	}
	fmt.Printf("building %s into %s\n", what, dir)
	start := time.Now()
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-p", "2", "-trimpath", "-ldflags", ldflags, "-o", tmp + "/"}, pkgs...)
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = moddir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s: go %s (in %s): %v", what, strings.Join(args, " "), moddir, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".stamp"), []byte(stamp), 0o644); err != nil {
		return err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	fmt.Printf("built %s in %s\n", filepath.Base(dir), time.Since(start).Round(time.Second))
	return nil
}

// recipeStamp hashes everything a build depends on besides the module cache:
// the Go sources and go.mod/go.sum under moddir, the flags and the Go version.
func recipeStamp(moddir, ldflags string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "go=%s\nldflags=%s\n", goVersion(), ldflags)
	var files []string
	err := filepath.WalkDir(moddir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != moddir {
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(moddir, f)
		fmt.Fprintf(h, "%s %x\n", rel, sha256.Sum256(data))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

var goVersionCache string

func goVersion() string {
	if goVersionCache == "" {
		out, err := exec.Command(goTool(), "env", "GOVERSION").Output()
		if err != nil {
			goVersionCache = runtime.Version()
		} else {
			goVersionCache = strings.TrimSpace(string(out))
		}
	}
	return goVersionCache
}

// kubeMajorMinor splits "v1.34.4" into "1" and "34".
func kubeMajorMinor(v string) (string, string) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return "", ""
	}
	return parts[0], parts[1]
}
