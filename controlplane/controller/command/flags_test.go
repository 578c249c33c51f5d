package command

import "testing"

// --destination-addr has no fixed default: the controller picks loopback in
// local mode (the flag's old default, :8086, exposed local mode's API on
// every interface) and :8086 in kube mode (the chart sets it explicitly).
func TestControllerDestinationAddrDefault(t *testing.T) {
	f := New("controller", "dev").Flags().Lookup("destination-addr")
	if f == nil || f.DefValue != "" {
		t.Fatalf("--destination-addr default %q, want empty (chosen by mode)", f.DefValue)
	}
}
