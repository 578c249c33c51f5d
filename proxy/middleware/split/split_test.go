package split_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/middleware/split"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

type backends map[string]*httpproxy.Target

func (b backends) Backend(_ context.Context, authority string) (*httpproxy.Target, error) {
	if t, ok := b[authority]; ok {
		return t, nil
	}
	return nil, errors.New("not found")
}

// The backend a request goes to: a split's, by weight, or the apex when
// there is no split or its backend cannot be resolved.
func TestSplit(t *testing.T) {
	canary := &httpproxy.Target{Authority: "web-canary.test:80"}
	for _, c := range []struct {
		name   string
		splits []profile.Split // nil: no profile
		want   string          // the backend's authority
	}{
		{name: "no profile", want: "web.test:80"},
		{name: "no split", splits: []profile.Split{}, want: "web.test:80"},
		{name: "all to the canary", splits: []profile.Split{{Authority: "web-canary.test:80", Weight: 1}, {Authority: "web.test:80", Weight: 0}}, want: "web-canary.test:80"},
		{name: "every weight 0", splits: []profile.Split{{Authority: "web-canary.test:80", Weight: 0}}, want: "web.test:80"},
		{name: "a broken backend: the apex", splits: []profile.Split{{Authority: "gone.test:80", Weight: 1}}, want: "web.test:80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var prof *profile.Profile
			if c.splits != nil {
				prof = &profile.Profile{Splits: c.splits}
			}
			apex := &httpproxy.Target{Authority: "web.test:80"}
			if prof != nil {
				apex.Profile = func() *profile.Profile { return prof }
			}
			var got *httpproxy.Exchange
			h := httpproxytest.Routed("outbound", apex)(split.New(split.Options{Direction: "outbound", Backends: backends{"web-canary.test:80": canary}, Log: httpproxytest.Log()})(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got, _ = httpproxy.ExchangeFor(w, r, "outbound") })))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://web.test/", nil))
			if got == nil {
				t.Fatal("next not called")
			}
			if got.Backend.Authority != c.want || got.Target != apex || got.Labels.Authority != "web.test:80" {
				t.Errorf("backend %s, target %s, authority label %s; want backend %s, the apex's target and label",
					got.Backend.Authority, got.Target.Authority, got.Labels.Authority, c.want)
			}
		})
	}
}
