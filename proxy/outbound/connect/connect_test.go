package connect

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
)

func TestUnavailableReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{balance.ErrNoEndpoints, "no_endpoints"},
		{fmt.Errorf("wrapped: %w", balance.ErrNoEndpoints), "no_endpoints"},
		{balance.ErrUnavailable, "unavailable"},
		{errors.New("anything else"), "unavailable"},
	} {
		if got := UnavailableReason(tc.err); got != tc.want {
			t.Errorf("UnavailableReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	// The metrics' label values, byte for byte.
	if ReasonNoEndpoints != "no_endpoints" || ReasonUnavailable != "unavailable" || ReasonConnect != "connect" {
		t.Errorf("reasons changed: %q %q %q", ReasonNoEndpoints, ReasonUnavailable, ReasonConnect)
	}
}

// balancer is a round-robin balancer over addrs whose value is the address.
func balancer(t *testing.T, addrs ...string) *balance.Balancer[string] {
	t.Helper()
	b := balance.New(balance.Options[string]{
		Strategy: balance.RoundRobin,
		New:      func(s balance.Spec) string { return s.Addr },
		// A long backoff: an endpoint that failed is not picked again in a test.
		BackoffMin: time.Hour, BackoffMax: time.Hour,
	})
	specs := make([]balance.Spec, len(addrs))
	for i, a := range addrs {
		specs[i] = balance.Spec{Addr: a}
	}
	b.Update(specs)
	t.Cleanup(b.Close)
	return b
}

func TestLoop(t *testing.T) {
	errOther := errors.New("reset after the request was sent")
	for _, tc := range []struct {
		name  string
		addrs []string
		down  map[string]bool // connecting to these fails
		other map[string]bool // these fail with an error that is not a DialError
		final map[string]bool // connecting to these fails, marked Final
		// want: the address that answered; else the error's shape.
		want        string
		wantTries   int
		wantReason  string // an *UnavailableError with this reason
		wantLast    bool   // ... after a connect failure
		wantDialErr bool   // the last *DialError
		wantErr     error
	}{
		{name: "first endpoint answers", addrs: []string{"a"}, want: "a", wantTries: 1},
		{name: "moves on after a connect failure", addrs: []string{"a", "b"}, down: map[string]bool{"a": true}, want: "b", wantTries: 2},
		{name: "no endpoints", addrs: nil, wantTries: 0, wantReason: "no_endpoints"},
		{name: "the only endpoint fails, then is in backoff", addrs: []string{"a"}, down: map[string]bool{"a": true},
			wantTries: 1, wantReason: "unavailable", wantLast: true, wantDialErr: true},
		{name: "every try fails", addrs: []string{"a", "b", "c", "d"}, down: map[string]bool{"a": true, "b": true, "c": true, "d": true},
			wantTries: MaxAttempts, wantDialErr: true},
		{name: "a final connect failure is returned, not retried", addrs: []string{"a", "b"}, final: map[string]bool{"a": true},
			wantTries: 1, wantDialErr: true},
		{name: "another failure is not retried", addrs: []string{"a", "b"}, other: map[string]bool{"a": true},
			wantTries: 1, wantErr: errOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := balancer(t, tc.addrs...)
			tries := 0
			got, err := Loop(b, func(ep *balance.Endpoint[string]) (string, error) {
				tries++
				switch {
				case tc.down[ep.Value()]:
					ep.Fail()
					return "", &DialError{Addr: ep.Addr(), Err: errors.New("connection refused")}
				case tc.other[ep.Value()]:
					return "", errOther
				case tc.final[ep.Value()]:
					ep.Fail()
					return "", Final(&DialError{Addr: ep.Addr(), Err: errors.New("connection reset")})
				}
				return ep.Value(), nil
			})
			if tries != tc.wantTries {
				t.Errorf("%d tries, want %d", tries, tc.wantTries)
			}
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("Loop = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Loop = %q, want an error", got)
			}
			var ue *UnavailableError
			if tc.wantReason != "" {
				if !errors.As(err, &ue) || ue.Reason != tc.wantReason {
					t.Fatalf("Loop error %v, want an UnavailableError with reason %q", err, tc.wantReason)
				}
				if (ue.Last != nil) != tc.wantLast {
					t.Errorf("UnavailableError.Last = %v, want set: %v", ue.Last, tc.wantLast)
				}
			} else if errors.As(err, &ue) {
				t.Errorf("Loop error %v is an UnavailableError", err)
			}
			var de *DialError
			if _, final := err.(*finalError); final {
				t.Errorf("Loop returned the Final mark itself: %v", err)
			}
			if errors.As(err, &de) != tc.wantDialErr {
				t.Errorf("Loop error %v: a DialError: %v, want %v", err, !tc.wantDialErr, tc.wantDialErr)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Loop error %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestUnavailableErrorUnwraps(t *testing.T) {
	last := &DialError{Addr: "10.0.0.1:80", Err: errors.New("connection refused")}
	err := error(&UnavailableError{Reason: ReasonUnavailable, Err: balance.ErrUnavailable, Last: last})
	if !errors.Is(err, balance.ErrUnavailable) {
		t.Errorf("%v does not wrap the Pick error", err)
	}
	var de *DialError
	if !errors.As(err, &de) || de != last {
		t.Errorf("%v does not wrap the connect failure", err)
	}
	want := "unavailable: all endpoints unavailable (after connect 10.0.0.1:80: connection refused)"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}
