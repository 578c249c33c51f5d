// Package charts embeds Meridian's Helm charts, so that `meridian install`
// renders exactly the chart that `helm install ./charts/meridian` installs,
// and the Gateway API's experimental-channel CRDs, which `meridian install
// --crds --gateway-api-channel=experimental` prints.
package charts

import "embed"

// FS holds the meridian chart under "meridian/" (Chart.yaml, values.yaml,
// values.schema.json, templates/, crds/), dotfiles included, and the
// Gateway API's experimental-channel CRDs under
// "gateway-api-experimental/": outside the chart, so that Helm, which
// installs every file of a chart's crds/, installs only the standard
// channel's (crds/gateway-api/). hack/gengatewaycrds.sh copies both
// channels from the sigs.k8s.io/gateway-api module.
//
//go:embed all:meridian gateway-api-experimental
var FS embed.FS

// Meridian is the directory of the meridian chart in FS.
const Meridian = "meridian"

// GatewayAPIExperimental is the directory of the Gateway API's
// experimental-channel CRDs in FS.
const GatewayAPIExperimental = "gateway-api-experimental"
