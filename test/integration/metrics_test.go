package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

func scrape(t *testing.T, p *sidecar.Proxy) string {
	t.Helper()
	_, _, admin := p.Addrs()
	resp, err := http.Get("http://" + admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
