//go:build conformance

// Package conformance runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance) against Meridian's gateway on the
// cluster KUBECONFIG names. It is a module of its own so that the
// product's go.mod does not carry the suite's dependencies. See README.md.
package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestConformance(t *testing.T) {
	conformance.RunConformance(t)
}
