package main

import (
	"flag"
	"io"
	"slices"
	"testing"

	"github.com/meridian-mesh/meridian/internal/ports"
)

// Static mode gets the controller's default opaque ports (it had none);
// with a control plane only an explicit --opaque-ports applies; an empty
// value turns the list off.
func TestOpaquePortsFlag(t *testing.T) {
	def, _ := ports.Parse(ports.DefaultOpaque)
	for _, tc := range []struct {
		args         []string
		controlPlane bool
		want         []uint16
	}{
		{nil, false, def},
		{nil, true, nil},
		{[]string{"--opaque-ports=3306"}, false, []uint16{3306}},
		{[]string{"--opaque-ports=3306,5432"}, true, []uint16{3306, 5432}},
		{[]string{"--opaque-ports="}, false, nil},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		v := fs.String("opaque-ports", ports.DefaultOpaque, "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		got, err := opaquePortsFlag(fs, *v, tc.controlPlane)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%v (control plane %v): %v, %v; want %v", tc.args, tc.controlPlane, got, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	v := fs.String("opaque-ports", "", "")
	fs.Parse([]string{"--opaque-ports=0"})
	if _, err := opaquePortsFlag(fs, *v, false); err == nil {
		t.Error("--opaque-ports=0 accepted")
	}
}
