package main

import (
	"strings"
	"testing"
)

// A negative hold or hold rate is refused by both modes, naming the flag,
// before anything is served.
func TestHoldFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--event-loop-hold=-1s"}, "--event-loop-hold -1s: 0 (never) or more"},
		{[]string{"--event-loop-hold-rate=-5"}, "--event-loop-hold-rate -5: wake-ups a second"},
	} {
		for mode, run := range map[string]func([]string) error{"sidecar": run, "gateway": runGateway} {
			err := run(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %v: %v, want an error with %q", mode, tc.args, err, tc.want)
			}
		}
	}
}
