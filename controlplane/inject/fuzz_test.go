package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/ports"
)

// FuzzPodAnnotations: the config annotations are written by whoever may
// edit a workload, and the injector runs inside the API server's admission
// path. No value may crash it; a refused value is named in the error (each
// line names its annotation); an accepted pod gets flags that the init
// container and the proxy parse back without error.
func FuzzPodAnnotations(f *testing.F) {
	f.Add("25,4000-4010", "3306", "mysql,8080", "100m", "1", "64Mi", "1Gi", "debug", "10000", "all-authenticated")
	f.Add("", "", "", "", "", "", "", "", "", "")
	f.Add("70000", "10-5", "redis", "-1", "x", "1Zi", "0", "loud", "0", "nobody")
	f.Add("1-65535", "1-65535", "1-65535", "2", "1", "2Gi", "1Gi", "info", "-3", "deny")
	f.Fuzz(func(t *testing.T, skipIn, skipOut, opaque, cpuReq, cpuLim, memReq, memLim, logLevel, inFlight, policy string) {
		ann := map[string]string{names.AnnotationInject: names.InjectEnabled}
		for k, v := range map[string]string{
			names.AnnotationSkipInboundPorts: skipIn, names.AnnotationSkipOutboundPorts: skipOut,
			names.AnnotationOpaquePorts: opaque, names.AnnotationProxyCPURequest: cpuReq,
			names.AnnotationProxyCPULimit: cpuLim, names.AnnotationProxyMemoryRequest: memReq,
			names.AnnotationProxyMemoryLimit: memLim, names.AnnotationProxyLogLevel: logLevel,
			names.AnnotationProxyMaxInFlight: inFlight, names.AnnotationDefaultInbound: policy,
		} {
			if v != "" {
				ann[k] = v
			}
		}
		meta, spec := testPod(ann)
		changed, _, err := Pod(meta, spec, nil, testConfig())
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.Contains(line, "config.meridian.io/") {
					t.Fatalf("error line names no annotation: %q (of %v)", line, err)
				}
			}
			return
		}
		if !changed {
			t.Fatal("an enabled pod was not injected")
		}
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			for _, a := range append(append([]string{}, c.Command...), c.Args...) {
				flag, v, _ := strings.Cut(a, "=")
				switch flag {
				case "--skip-inbound-ports", "--skip-outbound-ports":
					if _, err := ports.ParseRanges(v); err != nil {
						t.Fatalf("%s %s refuses what the injector wrote: %v", c.Name, a, err)
					}
				case "--opaque-ports":
					if _, err := ports.Parse(v); err != nil {
						t.Fatalf("%s %s refuses what the injector wrote: %v", c.Name, a, err)
					}
				}
			}
		}
	})
}
