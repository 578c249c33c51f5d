package h2server

import (
	"os"
	"runtime"
)

func runtimeGoexit()             { runtime.Goexit() }
func errDeadlineExceeded() error { return os.ErrDeadlineExceeded }
