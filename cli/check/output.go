package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// The marks of the table output, as linkerd prints them.
const (
	markSuccess = "√"
	markWarning = "‼"
	markError   = "×"
)

// Table streams results as a table: a header per group, a line per check
// with its mark, and under a failure or a warning the error (indented) and a
// "see:" line with the hint. It is an Observer; call Summary at the end.
type Table struct {
	W     io.Writer
	group string
	Now   func() time.Time // default time.Now
}

// Waiting prints one line when a check starts being retried.
func (t *Table) Waiting(c *Check, err error, until time.Time) {
	t.header(c.Group)
	fmt.Fprintln(t.W, waitingLine(c, err, until, t.Now))
}

func waitingLine(c *Check, err error, until time.Time, now func() time.Time) string {
	if now == nil {
		now = time.Now
	}
	left := until.Sub(now()).Round(time.Second)
	return fmt.Sprintf("… waiting up to %s for %q: %s", left, c.Description, firstLine(err.Error()))
}

// WaitNotices is an Observer that prints only the "waiting" lines: with the
// JSON output, which comes at the end, it tells on stderr why nothing has
// come yet.
type WaitNotices struct {
	W   io.Writer
	Now func() time.Time // default time.Now
}

// Waiting prints the line the table would.
func (n WaitNotices) Waiting(c *Check, err error, until time.Time) {
	fmt.Fprintln(n.W, waitingLine(c, err, until, n.Now))
}

// Done prints nothing.
func (WaitNotices) Done(CheckResult) {}

// Done prints a check's result.
func (t *Table) Done(r CheckResult) {
	t.header(r.Group)
	mark := markSuccess
	switch r.Result {
	case Warning:
		mark = markWarning
	case Error:
		mark = markError
	}
	fmt.Fprintf(t.W, "%s %s\n", mark, r.Description)
	if r.Result == Success {
		return
	}
	if r.Err != nil {
		for _, l := range strings.Split(strings.TrimRight(r.Err.Error(), "\n"), "\n") {
			fmt.Fprintf(t.W, "    %s\n", l)
		}
	}
	if r.Hint != "" {
		fmt.Fprintf(t.W, "    see: %s\n", r.Hint)
	}
}

func (t *Table) header(g string) {
	if g == t.group {
		return
	}
	if t.group != "" {
		fmt.Fprintln(t.W)
	}
	t.group = g
	fmt.Fprintf(t.W, "%s\n%s\n", g, strings.Repeat("-", len(g)))
}

// Summary prints the closing line of the table.
func (t *Table) Summary(rep *Report) {
	if t.group != "" {
		fmt.Fprintln(t.W)
	}
	if rep.Stopped != "" {
		fmt.Fprintf(t.W, "Later checks did not run: %q must pass first.\n", rep.Stopped)
	}
	mark := markSuccess
	if !rep.Success() {
		mark = markError
	}
	fmt.Fprintf(t.W, "Status check results are %s\n", mark)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// JSONReport is the document `meridian check -o json` prints, in the shape
// of `linkerd check -o json`.
type JSONReport struct {
	Success    bool           `json:"success"`
	Categories []JSONCategory `json:"categories"`
}

// JSONCategory is one group of checks.
type JSONCategory struct {
	Name   string      `json:"categoryName"`
	Checks []JSONCheck `json:"checks"`
}

// JSONCheck is one check's result. Hint and Error are set only when the
// result is not success.
type JSONCheck struct {
	Description string `json:"description"`
	Hint        string `json:"hint,omitempty"`
	Error       string `json:"error,omitempty"`
	Result      Result `json:"result"`
}

// JSON converts a report to its JSON document.
func (r *Report) JSON() JSONReport {
	out := JSONReport{Success: r.Success(), Categories: []JSONCategory{}}
	for _, res := range r.Results {
		n := len(out.Categories)
		if n == 0 || out.Categories[n-1].Name != res.Group {
			out.Categories = append(out.Categories, JSONCategory{Name: res.Group, Checks: []JSONCheck{}})
			n++
		}
		jc := JSONCheck{Description: res.Description, Result: res.Result}
		if res.Result != Success {
			jc.Hint = res.Hint
			if res.Err != nil {
				jc.Error = res.Err.Error()
			}
		}
		out.Categories[n-1].Checks = append(out.Categories[n-1].Checks, jc)
	}
	return out
}

// WriteJSON writes the report's JSON document, indented, to w.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r.JSON())
}
