// Command testsummary runs a `go test -json` command, prints its output as
// `go test -v` would, and ends with the failures again: for each failed
// test, the first line of each of its log entries (t.Log, t.Error, t.Fatal)
// and any panic. A failed end-to-end test dumps hundreds of lines of logs
// (controllers, objects) after its error, and a CI page that shows only
// the tail of the output lost the error among them.
//
//	testsummary go test -json -tags e2e ./test/e2e/...
//
// It exits with the command's status, or 1 if a test failed though the
// command exited 0.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testsummary go test -json [flags] [packages]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	s := newSummary()
	failed := s.read(out, os.Stdout)
	s.write(os.Stdout)
	code := 0
	if err := cmd.Wait(); err != nil {
		code = 1
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
	}
	if code == 0 && failed {
		code = 1
	}
	os.Exit(code)
}

// event is test2json's TestEvent (go doc cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// entry is the first line of a t.Log/t.Error entry: indented, file:line.
var entry = regexp.MustCompile(`^\s+[\w.-]+\.go:\d+: `)

// maxLine keeps a line that holds a whole JSON dump short.
const maxLine = 400

type key struct{ pkg, test string }

type failure struct {
	key
	took float64 // seconds
}

type summary struct {
	lines  map[key][]string
	failed []failure
}

func newSummary() *summary {
	return &summary{lines: map[key][]string{}}
}

// read copies the output of the events in r to w and keeps what write
// prints; it reports whether a test or a package failed.
func (s *summary) read(r io.Reader, w io.Writer) bool {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	bad := false
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			// Not an event (a build error before -json took over): as is.
			fmt.Fprintln(w, sc.Text())
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output", "build-output":
			io.WriteString(w, e.Output)
			line := strings.TrimRight(e.Output, "\n")
			if entry.MatchString(line) || strings.HasPrefix(line, "panic: ") {
				if len(line) > maxLine {
					line = line[:maxLine] + " …"
				}
				s.lines[k] = append(s.lines[k], line)
			}
		case "fail", "build-fail":
			bad = true
			s.failed = append(s.failed, failure{k, e.Elapsed})
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(w, "testsummary: reading the test events:", err)
		bad = true
	}
	return bad
}

// write prints the failures again, in the order they ended (a subtest
// before its parent).
func (s *summary) write(w io.Writer) {
	if len(s.failed) == 0 {
		return
	}
	fmt.Fprintln(w, "\n=== The failures again (the first line of each of their log entries; the whole output is above):")
	for _, f := range s.failed {
		name := f.test
		if name == "" {
			if f.pkg == "" { // a build's failure: its output is above
				continue
			}
			name = "package " + f.pkg
		}
		fmt.Fprintf(w, "--- FAIL: %s (%.2fs)\n", name, f.took)
		for _, l := range s.lines[f.key] {
			fmt.Fprintln(w, l)
		}
	}
}
