package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/bench/sut"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/internal/names"
)

// serve is the controller process: a store filled as the Kubernetes source
// would fill it, the destination server on loopback, and a command loop on
// in: "change SVC GEN", "all GEN", "status", "quit".
func serve(in io.Reader, out io.Writer) error {
	st := store.New()
	for i := range *services {
		for _, o := range serviceObjects(i) {
			if err := st.Upsert(o); err != nil {
				return err
			}
		}
		if err := st.Upsert(slice(i, 0)); err != nil {
			return err
		}
	}
	runtime.GC()

	srv := destination.New(st, st, destination.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	pb.RegisterDestinationServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, "LISTEN %s\n", lis.Addr())
	w.Flush()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "change": // change SVC GEN
			svc, _ := strconv.Atoi(f[1])
			gen, _ := strconv.Atoi(f[2])
			if err := st.Upsert(slice(svc, gen)); err != nil {
				return err
			}
		case "all": // all GEN
			gen, _ := strconv.Atoi(f[1])
			for svc := range *services {
				if err := st.Upsert(slice(svc, gen)); err != nil {
					return err
				}
			}
		case "status":
			hwm, rss, err := memStatus()
			if err != nil {
				return err
			}
			cpu, _ := sut.SelfCPUSeconds()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(w, "STATUS %d %d %g %d %d %d %d\n", hwm, rss, cpu, runtime.NumGoroutine(), ms.HeapInuse, ms.StackInuse, ms.HeapIdle-ms.HeapReleased)
			w.Flush()
		case "profile":
			if err := writeProfiles(); err != nil {
				return err
			}
		case "quit":
			return nil
		}
	}
	return sc.Err()
}

// writeProfiles ends the CPU profile and writes the heap profile, when
// asked for.
func writeProfiles() error {
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC()
		return pprof.WriteHeapProfile(f)
	}
	return nil
}

// memStatus reads VmHWM and VmRSS (bytes) from /proc/self/status.
func memStatus() (hwm, rss int64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			hwm = n * 1024
		case "VmRSS":
			rss = n * 1024
		}
	}
	return hwm, rss, nil
}

func ns(svc int) string { return "ns-" + strconv.Itoa(svc%10) }

func name(svc int) string { return "svc-" + strconv.Itoa(svc) }

// podIP is endpoint e of service svc: 10.x.y.(e+1).
func podIP(svc, e int) string {
	return fmt.Sprintf("10.%d.%d.%d", 1+svc/250, svc%250, e+1)
}

func podName(svc, e int) string { return fmt.Sprintf("%s-%d", name(svc), e) }

// serviceObjects are a service, its namespace's objects and its pods (meshed,
// as injected pods are).
func serviceObjects(svc int) []k8sruntime.Object {
	objs := []k8sruntime.Object{&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns(svc), Name: name(svc), ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{
			ClusterIP: fmt.Sprintf("10.96.%d.%d", svc/250, svc%250+1),
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}}
	for e := range *endpoints {
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: ns(svc), Name: podName(svc, e), ResourceVersion: "1",
				Labels:      map[string]string{"app": name(svc), "pod-template-hash": "5d9f7c"},
				Annotations: map[string]string{names.AnnotationProxyVersion: "dev"},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name(svc) + "-5d9f7c", Controller: ptr(true),
				}},
			},
			Spec: corev1.PodSpec{
				ServiceAccountName: name(svc),
				Containers: []corev1.Container{
					{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
					{Name: "meridian-proxy"},
				},
			},
			Status: corev1.PodStatus{PodIP: podIP(svc, e)},
		})
	}
	return objs
}

// slice is service svc's EndpointSlice at generation gen: endpoint 0 of a
// generation above 0 has the marker address 100.64.x.y encoding gen, so
// subscribers can tell which write they are seeing.
func slice(svc, gen int) *discoveryv1.EndpointSlice {
	pn, port, tcp := "http", int32(8080), corev1.ProtocolTCP
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns(svc), Name: name(svc) + "-abcde", ResourceVersion: strconv.Itoa(gen + 1),
			Labels: map[string]string{discoveryv1.LabelServiceName: name(svc)},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &tcp}},
	}
	zone := "zone-a"
	for e := range *endpoints {
		ip := podIP(svc, e)
		if e == 0 && gen > 0 {
			ip = fmt.Sprintf("100.%d.%d.%d", 64+(gen>>16)&63, (gen>>8)&255, gen&255)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns(svc), Name: podName(svc, e)},
			Zone:       &zone,
		})
	}
	return sl
}

func ptr[T any](v T) *T { return &v }
