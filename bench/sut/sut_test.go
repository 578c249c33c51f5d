package sut

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/bench/backend"
	"github.com/meridian-mesh/meridian/bench/loadgen"
)

var sink uint64

func TestProcStats(t *testing.T) {
	// A shell that burns a little CPU, then waits.
	// About 0.3 s of CPU on an idle core; on a loaded machine it gets its
	// tick later, so the reading is polled (bounded) rather than taken once.
	p, err := Start("busy", "", t.TempDir(), "sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Second)
	cpu, err := p.CPUSeconds()
	for deadline := time.Now().Add(20 * time.Second); err == nil && cpu <= 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		cpu, err = p.CPUSeconds()
	}
	if err != nil || cpu <= 0 {
		t.Fatalf("cpu %v, %v", cpu, err)
	}
	st, err := p.Status()
	if err != nil || st.RSS <= 0 || st.PeakRSS < st.RSS || st.Threads < 1 || st.FDs < 3 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if err := p.ResetPeak(); err != nil {
		t.Logf("clear_refs not supported here: %v", err)
	}
	// The test process may not have used one clock tick (10 ms) yet: work
	// until it has, bounded, so the reading must grow with work.
	self, err := SelfCPUSeconds()
	for deadline, x := time.Now().Add(5*time.Second), uint64(1); err == nil && self <= 0 && time.Now().Before(deadline); {
		for i := 0; i < 1e6; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink = x
		self, err = SelfCPUSeconds()
	}
	if err != nil || self <= 0 {
		t.Fatalf("self cpu %v, %v", self, err)
	}
	if busy, err := MachineBusySeconds(); err != nil || busy <= 0 {
		t.Fatalf("machine busy %v, %v", busy, err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if exited, _ := p.Exited(); !exited {
		t.Fatal("not exited after Stop")
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP go_goroutines x\ngo_goroutines 17\ngo_goroutines_total 99\n"+
			"request_total{direction=\"outbound\"} 3\nrequest_total{direction=\"inbound\",x=\"}\"} 4\n")
	}))
	defer srv.Close()
	for metric, want := range map[string]float64{"go_goroutines": 17, "request_total": 7} {
		v, ok, err := Scrape(context.Background(), srv.URL, metric)
		if err != nil || !ok || v != want {
			t.Errorf("%s = %v %v %v, want %v", metric, v, ok, err, want)
		}
	}
	if _, ok, _ := Scrape(context.Background(), srv.URL, "absent"); ok {
		t.Error("absent metric found")
	}
}

// The peer chains start and carry both protocols end to end.
func TestPeerChains(t *testing.T) {
	hb, err := backend.StartHTTP("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	gb, err := backend.StartGRPC("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer gb.Close()
	for _, kind := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(kind); err != nil {
			t.Logf("%s not installed; skipped", kind)
			continue
		}
		for _, proto := range []Protocol{HTTP1, GRPC} {
			t.Run(kind+"/"+string(proto), func(t *testing.T) {
				server, b := hb.Addr, hb
				if proto == GRPC {
					server, b = gb.Addr, gb
				}
				c, err := Peer(kind, proto, server, "", t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := c.Stop(); err != nil {
						t.Error(err)
					}
				}()
				var do func(context.Context) error
				if proto == GRPC {
					cc, err := loadgen.GRPCConn(c.Entry, Authority)
					if err != nil {
						t.Fatal(err)
					}
					defer cc.Close()
					do = loadgen.GRPCHealth(cc)
				} else {
					do = loadgen.HTTPGet(loadgen.HTTPClient(8), "http://"+c.Entry+"/", Authority)
				}
				before := b.Count()
				res, err := loadgen.Run(context.Background(), loadgen.Options{Rate: 200, Duration: 250 * time.Millisecond}, do)
				if err != nil {
					t.Fatal(err)
				}
				if res.Errors != 0 || res.OK != 50 || b.Count()-before != 50 {
					t.Fatalf("ok=%d errors=%d (%s), backend saw %d", res.OK, res.Errors, res.ErrorString(), b.Count()-before)
				}
			})
		}
	}
}

// The meridian chain, when a built proxy is given:
//
//	go build -o /tmp/meridian-proxy ./cmd/meridian-proxy
//	MERIDIAN_PROXY=/tmp/meridian-proxy go test ./bench/sut -run Meridian
func TestMeridianChain(t *testing.T) {
	bin := os.Getenv("MERIDIAN_PROXY")
	if bin == "" {
		// Built here, so that the unit suite runs the chains too.
		bin = filepath.Join(t.TempDir(), "meridian-proxy")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/meridian-mesh/meridian/cmd/meridian-proxy").CombinedOutput()
		if err != nil {
			t.Fatalf("building meridian-proxy: %v\n%s", err, out)
		}
	}
	hb, err := backend.StartHTTP("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	gb, err := backend.StartGRPC("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer gb.Close()
	for _, tc := range []struct {
		proto Protocol
		hint  string
	}{{HTTP1, ""}, {HTTP1, HintH2}, {GRPC, ""}} {
		proto := tc.proto
		t.Run(string(proto)+tc.hint, func(t *testing.T) {
			server, b := hb.Addr, hb
			if proto == GRPC {
				server, b = gb.Addr, gb
			}
			c, err := Meridian(bin, proto, server, "", t.TempDir(), tc.hint)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.Stop(); err != nil {
					t.Error(err)
				}
			}()
			do := loadgen.HTTPGet(loadgen.HTTPClient(8), "http://"+c.Entry+"/", Authority)
			if proto == GRPC {
				cc, err := loadgen.GRPCConn(c.Entry, Authority)
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
				do = loadgen.GRPCHealth(cc)
			}
			before := b.Count()
			res, err := loadgen.Run(context.Background(), loadgen.Options{Rate: 200, Duration: 250 * time.Millisecond}, do)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.OK != 50 || b.Count()-before != 50 {
				t.Fatalf("ok=%d errors=%d (%s), backend saw %d", res.OK, res.Errors, res.ErrorString(), b.Count()-before)
			}
		})
	}
}

func TestLimitCPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a CPU cgroup needs root (the benchmarks run as root)")
	}
	p, err := Start("spin", "", t.TempDir(), "sh", "-c", "while :; do :; done")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Second)
	if err := p.LimitCPU(0.25); err != nil {
		t.Fatal(err)
	}
	dir := p.cgroup
	// A spinning process uses what it is given: no more than its share
	// (plus a tick of /proc's resolution), and the kernel says it held
	// it back.
	cpu0, _ := p.CPUSeconds()
	t0 := time.Now()
	time.Sleep(2 * time.Second)
	cpu1, _ := p.CPUSeconds()
	share := (cpu1 - cpu0) / time.Since(t0).Seconds()
	if share > 0.25+0.05 {
		t.Errorf("a spinning process limited to 0.25 of a CPU used %.2f", share)
	}
	if th := p.Throttled(); th <= 0 {
		t.Errorf("throttled %v s, want > 0", th)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still there after Stop: %v", dir, err)
	}
	if err := (&Proc{Name: "x"}).LimitCPU(1.5); err == nil {
		t.Error("a share above 1 was taken")
	}
}

// CPUTicks reads the CPUs a list names: a range and a list of the same
// CPUs agree, each CPU is part of all of them, and a busy loop counts as
// busy.
func TestCPUTicks(t *testing.T) {
	n := runtime.NumCPU()
	last := strconv.Itoa(n - 1)
	busyAll, totalAll := CPUTicks("")
	_, totalR := CPUTicks("0-" + last)
	_, total0 := CPUTicks("0")
	if totalAll <= 0 || busyAll > totalAll || total0 <= 0 || total0 > totalR {
		t.Fatalf("all CPUs %v busy of %v, 0-%s %v, CPU 0 %v", busyAll, totalAll, last, totalR, total0)
	}
	// The machine's line and the range sum the same CPUs: a few ticks
	// apart at most between the reads.
	if d := totalAll - totalR; d < -float64(10*n) || d > float64(10*n) {
		t.Errorf("all CPUs %v ticks, 0-%s %v", totalAll, last, totalR)
	}
	b0, _ := CPUTicks("")
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	if b1, _ := CPUTicks(""); b1-b0 < 10 { // 200 ms busy: 20 ticks at 100 Hz
		t.Errorf("a 200 ms busy loop counted %v busy ticks", b1-b0)
	}
}
