//go:build conformance

// Package conformance runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance) against Meridian's gateway on the
// cluster KUBECONFIG names. It is a module of its own so that the
// product's go.mod does not carry the suite's dependencies. See README.md.
package conformance

import (
	"os"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"
)

// TestConformance is conformance.RunConformance, except that the report
// lists its profiles by name: the suite ranges over a map, and the
// committed report's order changed from run to run.
func TestConformance(t *testing.T) {
	opts := conformance.DefaultOptions(t)
	output := opts.ReportOutputPath
	opts.ReportOutputPath = "" // written below, sorted
	if output != "" {
		if err := opts.Implementation.Validate(); err != nil {
			t.Fatalf("implementation details: %v", err)
		}
	}
	cSuite, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatalf("initializing the conformance suite: %v", err)
	}
	if output != "" {
		t.Cleanup(func() {
			report, err := cSuite.Report()
			if err != nil {
				t.Fatalf("generating the conformance report: %v", err)
			}
			slices.SortFunc(report.ProfileReports, func(a, b confv1.ProfileReport) int { return strings.Compare(a.Name, b.Name) })
			raw, err := yaml.Marshal(report)
			if err != nil {
				t.Fatalf("encoding the conformance report: %v", err)
			}
			if err := os.WriteFile(output, raw, 0o600); err != nil {
				t.Fatalf("writing the conformance report: %v", err)
			}
			t.Logf("Conformance report:\n%s", raw)
		})
	}
	cSuite.Setup(t, tests.ConformanceTests)
	if err := cSuite.Run(t, tests.ConformanceTests); err != nil {
		t.Fatal(err)
	}
}
