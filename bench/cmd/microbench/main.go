// Command microbench runs the forwarding-path micro-benchmark
// (BenchmarkMeshedRequest in proxy/sidecar) with a fixed -benchtime, count
// times, passes the output through (and saves it for benchstat), and ends
// with one RESULT line: for each case, the median ns/op, cpu-ns/op, B/op
// and allocs/op over the runs. It exits non-zero when the benchmark fails or
// reports no result.
//
//	go run ./bench/cmd/microbench                         # what `make bench` runs
//	go run ./bench/cmd/microbench -count 10 -out new.txt  # then: benchstat old.txt new.txt
//	go run ./bench/cmd/microbench -parse old.txt          # the RESULT line of saved output
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

func main() {
	var (
		goCmd     = flag.String("go", "go", "the go command")
		pkg       = flag.String("pkg", "./proxy/sidecar", "package holding the benchmark")
		bench     = flag.String("bench", "^BenchmarkMeshedRequest$", "go test -bench regexp")
		benchtime = flag.String("benchtime", "2000x", "go test -benchtime: a fixed count, so that every run does the same work")
		count     = flag.Int("count", 5, "runs of every case, of which the RESULT line takes the median")
		out       = flag.String("out", "", "also write go test's output to this file (for benchstat)")
		parse     = flag.String("parse", "", "read saved go test -bench output from this file ('-': stdin) instead of running it")
	)
	flag.Parse()
	if *count < 1 {
		fmt.Fprintf(os.Stderr, "microbench: -count %d: must be at least 1\n", *count)
		os.Exit(2)
	}
	if err := run(*goCmd, *pkg, *bench, *benchtime, *count, *out, *parse); err != nil {
		fmt.Fprintln(os.Stderr, "microbench:", err)
		os.Exit(1)
	}
}

func run(goCmd, pkg, bench, benchtime string, count int, out, parse string) error {
	var sink io.Writer = os.Stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		sink = io.MultiWriter(os.Stdout, f)
	}
	if parse != "" {
		in := os.Stdin
		if parse != "-" {
			f, err := os.Open(parse)
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		res, err := collect(in, io.Discard)
		if err != nil {
			return err
		}
		return printResult(os.Stdout, res, nil)
	}

	// One test binary, run count times with -test.count 1: each run goes
	// through every case in turn, so a burst of other work on the machine
	// lands on one run of several cases rather than on every run of one
	// (go test -count repeats each case back to back).
	dir, err := os.MkdirTemp("", "microbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bench.test")
	if err := command("", goCmd, "test", "-c", "-o", bin, pkg).Run(); err != nil {
		return fmt.Errorf("go test -c %s: %w", pkg, err)
	}
	pkgDir, err := command("", goCmd, "list", "-f", "{{.Dir}}", pkg).Output()
	if err != nil {
		return fmt.Errorf("go list %s: %w", pkg, err)
	}
	all := &results{runs: map[string][]figures{}}
	for i := range count {
		// As go test does: the package's directory is the working directory.
		cmd := command(strings.TrimSpace(string(pkgDir)), bin, "-test.run", "^$", "-test.bench", bench,
			"-test.benchmem", "-test.benchtime", benchtime, "-test.count", "1")
		fmt.Fprintf(os.Stderr, "run %d/%d: %s\n", i+1, count, strings.Join(cmd.Args, " "))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		res, perr := collect(stdout, sink)
		io.Copy(io.Discard, stdout) // after a parse error: let the run end
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s (package %s): %w", bench, pkg, err)
		}
		if perr != nil {
			return fmt.Errorf("%s (package %s): %w", bench, pkg, perr)
		}
		all.add(res)
	}
	return printResult(os.Stdout, all, []string{"benchtime=" + benchtime, "count=" + strconv.Itoa(count)})
}

// command is name with args in dir, its errors on ours.
func command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	return cmd
}

// results are the runs of each case, in the order the cases first appeared.
type results struct {
	order []string
	runs  map[string][]figures
}

func (r *results) add(o *results) {
	for _, name := range o.order {
		if _, seen := r.runs[name]; !seen {
			r.order = append(r.order, name)
		}
		r.runs[name] = append(r.runs[name], o.runs[name]...)
	}
}

// figures are one result line: value per unit ("ns/op", "B/op", "allocs/op").
type figures map[string]float64

// collect copies r to w and gathers its benchmark result lines. It fails
// when r holds none.
func collect(r io.Reader, w io.Writer) (*results, error) {
	res := &results{runs: map[string][]figures{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		name, values, ok := parseLine(line)
		if !ok {
			continue
		}
		if _, seen := res.runs[name]; !seen {
			res.order = append(res.order, name)
		}
		res.runs[name] = append(res.runs[name], values)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res.order) == 0 {
		return nil, fmt.Errorf("no benchmark result in the output")
	}
	return res, nil
}

// parseLine reads one result line of the standard benchmark format
// ("BenchmarkX/a=b-2  2000  12345 ns/op  678 B/op  9 allocs/op"),
// returning the name without its -GOMAXPROCS suffix.
func parseLine(line string) (string, figures, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return "", nil, false
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return "", nil, false
	}
	name := f[0]
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i]
		}
	}
	values := figures{}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return "", nil, false
		}
		values[f[i+1]] = v
	}
	return name, values, true
}

// units are the RESULT line's figures per case: unit, key suffix, and
// whether every case must have it.
var units = []struct {
	unit, suffix string
	required     bool
}{{"ns/op", "ns", true}, {"cpu-ns/op", "cpu_ns", false}, {"B/op", "bytes", true}, {"allocs/op", "allocs", true}}

// printResult writes one RESULT line to w: extra, then <case>_ns,
// <case>_cpu_ns (when reported), <case>_bytes and <case>_allocs per case,
// each the median over the case's runs.
func printResult(w io.Writer, res *results, extra []string) error {
	kv := slices.Clone(extra)
	for _, name := range res.order {
		key := caseKey(name)
		for _, u := range units {
			var vs []float64
			for _, r := range res.runs[name] {
				if v, ok := r[u.unit]; ok {
					vs = append(vs, v)
				}
			}
			if len(vs) == 0 && !u.required {
				continue
			}
			if len(vs) == 0 {
				return fmt.Errorf("benchmark %s: no %s figure (run with -benchmem or b.ReportAllocs)", name, u.unit)
			}
			kv = append(kv, fmt.Sprintf("%s_%s=%.0f", key, u.suffix, median(vs)))
		}
	}
	_, err := fmt.Fprintln(w, "RESULT "+strings.Join(kv, " "))
	return err
}

// caseKey turns a sub-benchmark's name into a RESULT key: the values of
// its key=value parts (other parts as they are), the top-level name
// dropped, joined with "_" ("BenchmarkMeshedRequest/proto=http1-get/tls=plain"
// → "http1_get_plain"). A benchmark without sub-benchmarks keeps its name.
func caseKey(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) > 1 {
		parts = parts[1:]
	}
	for i, p := range parts {
		if _, v, ok := strings.Cut(p, "="); ok {
			parts[i] = v
		}
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, strings.Join(parts, "_"))
}

func median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}
