// Command dstbench measures the destination API's propagation latency and
// memory: a controller process (this program re-executed with -serve,
// pinned to its own CPU) holds an in-process store of -services services
// with -endpoints endpoints each (plus their pods) and serves the
// destination API on loopback; this process opens one Get stream (and one
// GetProfile stream) per service, then changes EndpointSlices in the
// controller's store, as the Kubernetes source would, and measures the time
// from the write until every subscriber of the service has the new endpoint.
//
// Two patterns: -changes single-service changes one after another, and
// -broadcasts changes of every service at once (a node failure or a
// namespace-wide rollout). The controller's peak RSS (VmHWM) and CPU time
// come from /proc. Ends with one RESULT line.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/bench/sut"
)

var (
	serveMode   = flag.Bool("serve", false, "internal: run as the controller process")
	services    = flag.Int("services", 1000, "services in the store")
	endpoints   = flag.Int("endpoints", 10, "endpoints (pods) per service")
	streams     = flag.Int("streams", 1000, "Get streams; stream i follows service i mod -services")
	profiles    = flag.Bool("profiles", true, "also open one GetProfile stream per Get stream, as proxies do")
	conns       = flag.Int("conns", 50, "client connections the streams are spread over (proxies each have one)")
	changes     = flag.Int("changes", 200, "single-service changes, one after another")
	newStreams  = flag.Int("new-streams", 100, "Get streams opened one at a time at the end, for the first-answer latency")
	broadcasts  = flag.Int("broadcasts", 10, "changes of every service at once")
	gap         = flag.Duration("gap", 5*time.Millisecond, "pause between single-service changes")
	timeout     = flag.Duration("timeout", 10*time.Second, "give up on a change after this long")
	clientCPU   = flag.String("client-cpu", "0", "CPUs for the clients (this process); empty: no pinning")
	sutCPU      = flag.String("sut-cpu", "1", "CPUs for the controller process; empty: no pinning")
	seed        = flag.Uint64("seed", 1, "random seed (which services change)")
	targetP99ms = flag.Float64("target-p99-ms", 100, "p99 target for the summary")
	cpuProfile  = flag.String("cpuprofile", "", "write the controller's CPU profile here")
	memProfile  = flag.String("memprofile", "", "write the controller's heap profile (at the end) here")
	targetRSSMB = flag.Float64("target-rss-mb", 200, "RSS target for the summary")
)

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if *serveMode {
		if err := serve(os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := sut.PinSelf(*clientCPU); err != nil {
		log.Fatal(err)
	}
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// event is one subscriber seeing one generation's marker endpoint.
type event struct {
	stream int
	gen    int
	at     time.Time
}

// controller is the child process and its command pipe.
type controller struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	status chan string
}

func startController() (*controller, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	argv := []string{self, "-serve",
		"-services", strconv.Itoa(*services), "-endpoints", strconv.Itoa(*endpoints),
		"-cpuprofile", *cpuProfile, "-memprofile", *memProfile}
	if *sutCPU != "" && runtime.NumCPU() > 1 {
		argv = append([]string{"taskset", "-c", *sutCPU}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	c := &controller{cmd: cmd, in: in, out: bufio.NewScanner(outPipe), status: make(chan string, 1)}
	if !c.out.Scan() {
		return nil, "", fmt.Errorf("controller exited before listening")
	}
	addr, ok := strings.CutPrefix(c.out.Text(), "LISTEN ")
	if !ok {
		return nil, "", fmt.Errorf("controller said %q", c.out.Text())
	}
	go func() {
		for c.out.Scan() {
			if s, ok := strings.CutPrefix(c.out.Text(), "STATUS "); ok {
				c.status <- s
			}
		}
	}()
	return c, addr, nil
}

func (c *controller) send(line string) error {
	_, err := io.WriteString(c.in, line+"\n")
	return err
}

// procStatus is the controller's /proc figures.
type procStatus struct {
	HWM, RSS   int64 // bytes
	CPU        float64
	Goroutines int
	HeapInuse  int64
	StackInuse int64
	HeapIdle   int64 // idle heap not yet returned to the OS
}

func (c *controller) stat() (procStatus, error) {
	if err := c.send("status"); err != nil {
		return procStatus{}, err
	}
	var s procStatus
	select {
	case line := <-c.status:
		_, err := fmt.Sscanf(line, "%d %d %g %d %d %d %d", &s.HWM, &s.RSS, &s.CPU, &s.Goroutines, &s.HeapInuse, &s.StackInuse, &s.HeapIdle)
		return s, err
	case <-time.After(10 * time.Second):
		return s, fmt.Errorf("controller did not answer status")
	}
}

func authority(svc int) string {
	return fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:80", svc, svc%10)
}

// markerGen decodes a generation marker address (100.64.x.y).
func markerGen(ip string) (int, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return 0, false
	}
	b := a.As4()
	if b[0] != 100 || b[1] < 64 || b[1] > 127 {
		return 0, false
	}
	return int(b[1]-64)<<16 | int(b[2])<<8 | int(b[3]), true
}

func run() error {
	if *streams < *services {
		return fmt.Errorf("-streams must be at least -services")
	}
	sut.QuietGC()
	log.Printf("starting the controller: %d services × %d endpoints", *services, *endpoints)
	ctl, addr, err := startController()
	if err != nil {
		return err
	}
	defer func() {
		_ = ctl.send("quit")
		_ = ctl.in.Close()
		done := make(chan struct{})
		go func() { _ = ctl.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = ctl.cmd.Process.Kill()
		}
	}()
	base, err := ctl.stat()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := make([]*grpc.ClientConn, *conns)
	for i := range cc {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer c.Close()
		cc[i] = c
	}

	events := make(chan event, *streams*4)
	firstLat := make([]time.Duration, *streams)
	var ready sync.WaitGroup
	ready.Add(*streams)
	errc := make(chan error, *streams*2)
	start := time.Now()
	for i := range *streams {
		svc := i % *services
		client := pb.NewDestinationClient(cc[i%len(cc)])
		go func() {
			t0 := time.Now()
			s, err := client.Get(ctx, &pb.GetDestination{Authority: authority(svc)})
			if err != nil {
				errc <- err
				ready.Done()
				return
			}
			first := true
			for {
				u, err := s.Recv()
				if err != nil {
					if ctx.Err() == nil {
						errc <- fmt.Errorf("stream %d: %w", i, err)
					}
					if first {
						ready.Done()
					}
					return
				}
				now := time.Now()
				if first {
					firstLat[i] = now.Sub(t0)
					first = false
					ready.Done()
				}
				for _, a := range u.GetAdd().GetAddrs() {
					if g, ok := markerGen(a.GetAddr().GetIp()); ok {
						events <- event{stream: i, gen: g, at: now}
					}
				}
			}
		}()
		if *profiles {
			go func() {
				s, err := client.GetProfile(ctx, &pb.GetDestination{Authority: authority(svc)})
				if err != nil {
					errc <- err
					return
				}
				for {
					if _, err := s.Recv(); err != nil {
						if ctx.Err() == nil {
							errc <- fmt.Errorf("profile stream %d: %w", i, err)
						}
						return
					}
				}
			}()
		}
	}
	ready.Wait()
	subscribe := time.Since(start)
	select {
	case err := <-errc:
		return err
	default:
	}
	log.Printf("%d Get streams answered in %v", *streams, subscribe)
	subscribed, err := ctl.stat()
	if err != nil {
		return err
	}

	// Subscribers per service.
	subs := make([][]int, *services)
	for i := range *streams {
		subs[i%*services] = append(subs[i%*services], i)
	}
	gen := 0
	// wait collects the events of generation g until want streams have it;
	// it returns each stream's latency from t0.
	wait := func(g int, want int, t0 time.Time) ([]time.Duration, error) {
		lat := make([]time.Duration, 0, want)
		seen := map[int]bool{}
		deadline := time.NewTimer(*timeout)
		defer deadline.Stop()
		for len(lat) < want {
			select {
			case e := <-events:
				if e.gen != g || seen[e.stream] {
					continue
				}
				seen[e.stream] = true
				lat = append(lat, e.at.Sub(t0))
			case err := <-errc:
				return nil, err
			case <-deadline.C:
				return nil, fmt.Errorf("generation %d: %d of %d subscribers after %v", g, len(lat), want, *timeout)
			}
		}
		return lat, nil
	}

	rng := rand.New(rand.NewPCG(*seed, 2))
	var single []time.Duration // until every subscriber of the service has it
	for range *changes {
		gen++
		svc := rng.IntN(*services)
		t0 := time.Now()
		if err := ctl.send(fmt.Sprintf("change %d %d", svc, gen)); err != nil {
			return err
		}
		lat, err := wait(gen, len(subs[svc]), t0)
		if err != nil {
			return err
		}
		single = append(single, slices.Max(lat))
		time.Sleep(*gap)
	}
	var bcastAll, bcastEach []time.Duration
	for range *broadcasts {
		gen++
		t0 := time.Now()
		if err := ctl.send(fmt.Sprintf("all %d", gen)); err != nil {
			return err
		}
		lat, err := wait(gen, *streams, t0)
		if err != nil {
			return err
		}
		bcastEach = append(bcastEach, lat...)
		bcastAll = append(bcastAll, slices.Max(lat))
		time.Sleep(100 * time.Millisecond)
	}
	// A proxy starting while the controller is busy with everyone else's
	// streams: Get streams opened one at a time, time to the first answer.
	var steady []time.Duration
	for i := range *newStreams {
		sctx, scancel := context.WithCancel(ctx)
		client := pb.NewDestinationClient(cc[i%len(cc)])
		t0 := time.Now()
		s, err := client.Get(sctx, &pb.GetDestination{Authority: authority(rng.IntN(*services))})
		if err == nil {
			_, err = s.Recv()
		}
		steady = append(steady, time.Since(t0))
		scancel()
		if err != nil {
			return fmt.Errorf("new stream %d: %w", i, err)
		}
	}
	final, err := ctl.stat()
	if err != nil {
		return err
	}
	if *cpuProfile != "" || *memProfile != "" {
		if err := ctl.send("profile"); err != nil {
			return err
		}
		if _, err := ctl.stat(); err != nil { // the profiles are written once it answers
			return err
		}
	}

	report(subscribe, firstLat, steady, single, bcastEach, bcastAll, base, subscribed, final)
	return nil
}

// pct is the nearest-rank percentile.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func report(subscribe time.Duration, first, steady, single, each, all []time.Duration, base, subscribed, final procStatus) {
	nprof := 0
	if *profiles {
		nprof = *streams
	}
	fmt.Printf("\n## Destination API propagation\n\n")
	fmt.Printf("%d services × %d endpoints (%d pods), %d Get + %d GetProfile streams over %d connections; controller on CPU %q, clients on CPU %q, GOMAXPROCS per the mask.\n\n",
		*services, *endpoints, *services**endpoints, *streams, nprof, *conns, *sutCPU, *clientCPU)
	fmt.Printf("| measurement | n | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n")
	row := func(name string, d []time.Duration) {
		fmt.Printf("| %s | %d | %s | %s | %s |\n", name, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(pct(d, 100)))
	}
	row("first answer of a Get, all streams opened at once", first)
	row("first answer of a Get opened alone (the others subscribed)", steady)
	row("one service's slice changes → all its subscribers have it", single)
	row("every service changes at once → each subscriber has it", each)
	row("every service changes at once → the last subscriber has it", all)
	fmt.Printf("\nAll %d streams subscribed in %s ms.\n\n", *streams, ms(subscribe))
	fmt.Printf("| controller | RSS MiB | peak RSS (VmHWM) MiB | heap in use MiB | idle heap kept MiB | stacks MiB | goroutines | CPU s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	st := func(name string, s procStatus) {
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %d | %.2f |\n", name, sut.MB(s.RSS), sut.MB(s.HWM), sut.MB(s.HeapInuse), sut.MB(s.HeapIdle), sut.MB(s.StackInuse), s.Goroutines, s.CPU)
	}
	st("store filled, no streams", base)
	st("streams subscribed", subscribed)
	st("after all changes", final)

	p99 := pct(single, 99)
	ok := float64(p99)/float64(time.Millisecond) < *targetP99ms && float64(final.HWM)/(1<<20) < *targetRSSMB
	fmt.Printf("\nTargets: single-change p99 < %.0f ms, controller RSS < %.0f MB: %v\n\n", *targetP99ms, *targetRSSMB, map[bool]string{true: "met", false: "NOT met"}[ok])
	kv := []string{
		"services=" + strconv.Itoa(*services),
		"endpoints=" + strconv.Itoa(*endpoints),
		"streams=" + strconv.Itoa(*streams+nprof),
		"first_p99_ms=" + ms(pct(steady, 99)),
		"herd_first_p99_ms=" + ms(pct(first, 99)),
		"change_p50_ms=" + ms(pct(single, 50)),
		"change_p99_ms=" + ms(p99),
		"broadcast_each_p50_ms=" + ms(pct(each, 50)),
		"broadcast_each_p99_ms=" + ms(pct(each, 99)),
		"broadcast_all_p50_ms=" + ms(pct(all, 50)),
		"rss_mb=" + sut.MB(final.RSS),
		"peak_rss_mb=" + sut.MB(final.HWM),
		fmt.Sprintf("cpu_s=%.2f", final.CPU),
		fmt.Sprintf("targets_met=%v", ok),
	}
	fmt.Println("RESULT " + strings.Join(kv, " "))
}
