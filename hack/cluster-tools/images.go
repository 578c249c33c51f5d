package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Images are docker-archive tarballs written with go-containerregistry: one
// layer holding a static binary, /etc/passwd, /etc/group and /tmp, on an
// empty base. Nothing is downloaded. They are cached under
// <cache>/images/ and imported into the node's containerd with
// `ctr -n k8s.io images import`; manifests use imagePullPolicy IfNotPresent.

const imageFormat = "meridian-image-v1" // bump to rebuild every cached tarball

// imageTarball writes (or reuses) the tarball of an image that runs binary.
func (c *config) imageTarball(ref, binary string) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %v", ref, err)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	stamp := imageFormat + " " + runtime.GOARCH + " " + tag.String() + " " + hex.EncodeToString(sum[:])
	dir := filepath.Join(c.cache, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	safe := strings.NewReplacer("/", "_", ":", "_").Replace(tag.String())
	out := filepath.Join(dir, safe+".tar")
	if have, err := os.ReadFile(out + ".stamp"); err == nil && string(have) == stamp {
		if _, err := os.Stat(out); err == nil {
			return out, nil
		}
	}
	exe := "/" + filepath.Base(binary)
	layerTar, err := imageLayer(exe, bin)
	if err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created.Time = time.Unix(0, 0).UTC()
	cf.Config.Entrypoint = []string{exe}
	cf.Config.Env = []string{"PATH=/"}
	cf.Config.WorkingDir = "/"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return "", err
	}
	if err := tarball.WriteToFile(out+".tmp", tag, img); err != nil {
		return "", fmt.Errorf("writing image %s: %v", ref, err)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return "", err
	}
	return out, os.WriteFile(out+".stamp", []byte(stamp), 0o644)
}

// imageLayer is the one layer of an image: the binary plus the few files a
// program expects (a user database and a writable /tmp).
func imageLayer(exe string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := []struct {
		name string
		mode int64
	}{{"etc/", 0o755}, {"tmp/", 0o1777}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")},
		{strings.TrimPrefix(exe, "/"), 0o755, bin},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// importImage loads a tarball into the node's containerd, in the k8s.io
// namespace the CRI plugin reads.
func (c *config) importImage(tarPath string) error {
	out, err := exec.Command("ctr", "--address", c.containerdSocket(), "-n", "k8s.io", "images", "import", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %v: %s", tarPath, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// systemImages writes the tarballs of the images the node itself runs.
func (c *config) systemImages(b binaries) ([]string, error) {
	var tars []string
	for _, im := range []struct{ ref, bin string }{
		{pauseImage, b.pause},
		{corednsImage(c.corednsVersion), b.coredns},
	} {
		t, err := c.imageTarball(im.ref, im.bin)
		if err != nil {
			return nil, err
		}
		tars = append(tars, t)
	}
	return tars, nil
}

// loadImages (re)loads the node's own images and the ones named: a tarball
// path, or REF=PACKAGE to build the Go main package PACKAGE (relative to the
// current directory, in whatever module holds it) statically into an image
// REF whose entrypoint is that binary.
func (c *config) loadImages(args []string) error {
	if !c.recorded("containerd").alive() {
		return errors.New("the cluster is not up (containerd is not running): run hack/cluster up")
	}
	b, err := c.ensureBinaries()
	if err != nil {
		return err
	}
	tars, err := c.systemImages(b)
	if err != nil {
		return err
	}
	var refs []string
	for _, a := range args {
		ref, pkg, ok := strings.Cut(a, "=")
		if !ok {
			if _, err := os.Stat(a); err != nil {
				return fmt.Errorf("load-images %s: neither REF=PACKAGE nor a tarball: %v", a, err)
			}
			tars = append(tars, a)
			refs = append(refs, a)
			continue
		}
		t, err := c.buildGoImage(ref, pkg)
		if err != nil {
			return err
		}
		tars = append(tars, t)
		refs = append(refs, ref)
	}
	for _, t := range tars {
		if err := c.importImage(t); err != nil {
			return err
		}
	}
	if len(refs) > 0 {
		fmt.Printf("loaded %s\n", strings.Join(refs, ", "))
	}
	return nil
}

// buildGoImage builds the Go main package pkg (a path relative to the current
// directory) with CGO_ENABLED=0 and packs it as image ref. grpcnotrace drops
// grpc-go's request tracing (golang.org/x/net/trace, html/template), which
// no Meridian binary serves: the proxy's idle RSS is 1.5 MB smaller.
func (c *config) buildGoImage(ref, pkg string) (string, error) {
	dir, err := os.MkdirTemp("", "meridian-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	binName := path.Base(strings.TrimSuffix(filepath.ToSlash(pkg), "/"))
	if binName == "." || binName == "" {
		wd, _ := os.Getwd()
		binName = filepath.Base(wd)
	}
	bin := filepath.Join(dir, binName)
	cmd := exec.Command(goTool(), "build", "-p", "2", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s for image %s: %v", pkg, ref, err)
	}
	return c.imageTarball(ref, bin)
}
