// Package e2e holds Meridian's end-to-end tests. They run against a real
// single-node Kubernetes cluster on this machine (hack/cluster up) and are
// built only with the e2e tag: `make e2e`, or
//
//	go test -tags e2e -count=1 ./test/e2e/
//
// See docs/development.md.
package e2e
