// Package check is `meridian check`: named groups of health checks run
// before an install (can this user install Meridian on this cluster?) and
// after it (is the control plane, identity, the proxy injector and the data
// plane healthy?), a runner that retries failing checks for a while, and the
// table and JSON outputs.
//
// A Check is data plus a function; the Runner only sequences them, so that it
// is tested without a cluster. The checks themselves (kube.go, crds.go,
// controlplane.go, identity.go, webhook.go, dataplane.go) talk to the API
// server through the clients in State.
package check

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Result is the outcome of one check, spelled as in the JSON output.
type Result string

// The outcomes of a check.
const (
	Success Result = "success"
	Warning Result = "warning"
	Error   Result = "error"
)

// Check is one health check.
type Check struct {
	// Group is the category the check is printed under, e.g. "kubernetes-api".
	Group string
	// Description says what holds when the check passes, e.g.
	// "can query the Kubernetes API".
	Description string
	// Hint says how to fix a failure; printed after "see:".
	Hint string
	// Fatal: when the check fails, no later check runs (the API server is
	// unreachable, the control plane namespace is missing, ...).
	Fatal bool
	// Warning: a failure is a warning, which does not fail the run. A check
	// that is not a Warning check can still warn by returning Warn(err).
	Warning bool
	// Retry: under Runner.Wait, a failure is retried until the check passes
	// or the wait is over. Meant for conditions that become true by
	// themselves after an install (pods becoming ready, the controller
	// writing the webhook's caBundle), not for ones that never will; a
	// check that can tell returns Final(err) for those.
	Retry bool
	// Run performs the check: nil is success. Checks may record what they
	// learn in the State for later checks.
	Run func(ctx context.Context, s *State) error
}

// CheckResult is the outcome of one check.
type CheckResult struct {
	Group       string
	Description string
	Hint        string // set when Result is not Success
	Err         error  // set when Result is not Success
	Result      Result
	Retries     int // how many times the check was re-run
}

// Report is the outcome of a run.
type Report struct {
	Results []CheckResult
	// Stopped names the fatal check whose failure stopped the run, or is
	// empty.
	Stopped string
}

// Success reports whether no check failed (warnings allowed).
func (r *Report) Success() bool {
	for _, c := range r.Results {
		if c.Result == Error {
			return false
		}
	}
	return true
}

// Observer is told of each check's progress as the runner makes it, for
// output that streams (the table).
type Observer interface {
	// Waiting is called once per check, when it first fails and the runner
	// is going to retry it.
	Waiting(c *Check, err error, until time.Time)
	// Done is called with every check's final result.
	Done(r CheckResult)
}

// Runner runs checks in order.
type Runner struct {
	// Wait is how long, from the start of Run, failing Retry checks are
	// re-run before they are given up on. Zero disables retries.
	Wait time.Duration
	// Interval is the pause between two attempts of a check (default 1s).
	Interval time.Duration
	// Timeout bounds one attempt of one check (default 30s).
	Timeout time.Duration
	// Observer, if set, is told of the progress.
	Observer Observer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ErrSkip, returned (or wrapped) by a check, leaves the check out of the
// report: it has nothing to say because an earlier check of its group failed
// (the certificates cannot be checked when their Secret is missing).
var ErrSkip = errors.New("check skipped")

// Skip returns an error wrapping ErrSkip that says why.
func Skip(reason string) error { return fmt.Errorf("%w: %s", ErrSkip, reason) }

type warning struct{ err error }

func (w warning) Error() string { return w.err.Error() }
func (w warning) Unwrap() error { return w.err }

// Warn marks err as a warning: the check is reported with the warning
// result (and not retried) even if it is not a Warning check.
func Warn(err error) error {
	if err == nil {
		return nil
	}
	return warning{err}
}

// Warnf is Warn(fmt.Errorf(format, args...)).
func Warnf(format string, args ...any) error { return Warn(fmt.Errorf(format, args...)) }

type final struct{ err error }

func (f final) Error() string { return f.err.Error() }
func (f final) Unwrap() error { return f.err }

// Final marks err as one that waiting cannot fix (the controller has
// judged the object as it is now and rejected it; only an edit of it will
// change that): a Retry check returning it fails at once under Runner.Wait
// instead of blocking until the wait is over.
func Final(err error) error {
	if err == nil {
		return nil
	}
	return final{err}
}

// Run runs the checks in order and reports their results. A failing Fatal
// check stops the run; ctx's end stops it too (the check running then fails).
func (r *Runner) Run(ctx context.Context, checks []Check, s *State) *Report {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	interval := r.Interval
	if interval <= 0 {
		interval = time.Second
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	var deadline time.Time
	if r.Wait > 0 {
		deadline = now().Add(r.Wait)
	}
	rep := &Report{}
	for i := range checks {
		c := &checks[i]
		res, ok := r.runOne(ctx, c, s, deadline, interval, timeout, now)
		if !ok {
			continue // skipped
		}
		rep.Results = append(rep.Results, res)
		if r.Observer != nil {
			r.Observer.Done(res)
		}
		if res.Result == Error && (c.Fatal || ctx.Err() != nil) {
			rep.Stopped = c.Description
			break
		}
	}
	return rep
}

// runOne runs one check, retrying it while it fails and may be retried. The
// bool is false when the check skipped itself.
func (r *Runner) runOne(ctx context.Context, c *Check, s *State, deadline time.Time, interval, timeout time.Duration, now func() time.Time) (CheckResult, bool) {
	res := CheckResult{Group: c.Group, Description: c.Description}
	waited := false
	for {
		err := attempt(ctx, c, s, timeout)
		switch {
		case err == nil:
			res.Result = Success
			return res, true
		case errors.Is(err, ErrSkip):
			return res, false
		}
		var w warning
		if c.Warning || errors.As(err, &w) {
			res.Result, res.Err, res.Hint = Warning, err, c.Hint
			return res, true
		}
		res.Result, res.Err, res.Hint = Error, err, c.Hint
		var f final
		if !c.Retry || deadline.IsZero() || ctx.Err() != nil || errors.As(err, &f) {
			return res, true
		}
		left := deadline.Sub(now())
		if left <= 0 {
			return res, true
		}
		if !waited {
			waited = true
			if r.Observer != nil {
				r.Observer.Waiting(c, err, deadline)
			}
		}
		t := time.NewTimer(min(interval, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, true
		case <-t.C:
		}
		res.Retries++
	}
}

// attempt runs c once, bounded by timeout, turning a panic into an error so
// that one broken check does not take the others down.
func attempt(ctx context.Context, c *Check, s *State, timeout time.Duration) (err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	if c.Run == nil {
		return errors.New("check has no Run function")
	}
	return c.Run(ctx, s)
}
