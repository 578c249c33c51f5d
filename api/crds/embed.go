// Package crds holds Meridian's CustomResourceDefinitions, the YAML files
// hack/gencrd.sh writes beside this file, embedded so that the CLI carries
// the CRDs of its own version (`meridian check` compares the cluster's with
// them).
package crds

import "embed"

// FS holds every *.yaml file of this directory, one CRD per file.
//
//go:embed *.yaml
var FS embed.FS
