package tlsid

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"time"
)

// Handler serves the identity on a proxy's admin server (GET /identity,
// the sidecar's and the gateway's): its SPIFFE ID, expiry, and the
// certificate chain in PEM, which `meridian identity` and `meridian viz`
// read.
func Handler(id *Identity) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chain := id.Chain()
		if len(chain) == 0 {
			http.Error(w, "no certificate yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "# SPIFFE ID: %s\n# Not before: %s\n# Not after:  %s\n# Renewals: %d\n",
			id.ID(), chain[0].NotBefore.UTC().Format(time.RFC3339), chain[0].NotAfter.UTC().Format(time.RFC3339), id.Renewals())
		for _, c := range chain {
			fmt.Fprintf(w, "# Subject: %q Issuer: %q\n", c.Subject.String(), c.Issuer.String())
			pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	})
}
