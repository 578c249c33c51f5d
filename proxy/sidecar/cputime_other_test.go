//go:build !unix

package sidecar

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
