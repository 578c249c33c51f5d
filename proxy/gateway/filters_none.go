//go:build !gatewayfilters

package gateway

import (
	"fmt"
	"net/http"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// filter, in a build without the filter middlewares (filters.go, built
// with the tag gatewayfilters once proxy/middleware/{headers,redirect,
// rewrite,mirror,cors} exist), refuses every filter: a snapshot is never
// served with a filter silently left out.
func (b *builder) filter(_ *rule, f *gatewaypb.Filter) (func(http.Handler) http.Handler, error) {
	return nil, fmt.Errorf("%T: this build of the proxy has no filters (build tag gatewayfilters)", f.GetFilter())
}
