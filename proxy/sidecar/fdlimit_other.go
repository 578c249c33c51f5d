//go:build !linux && !darwin

package sidecar

func fdLimit() (uint64, bool) { return 0, false }
