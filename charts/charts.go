// Package charts embeds Meridian's Helm charts, so that `meridian install`
// renders exactly the chart that `helm install ./charts/meridian` installs.
package charts

import "embed"

// FS holds the meridian chart under "meridian/" (Chart.yaml, values.yaml,
// values.schema.json, templates/, crds/), dotfiles included.
//
//go:embed all:meridian
var FS embed.FS

// Meridian is the directory of the meridian chart in FS.
const Meridian = "meridian"
