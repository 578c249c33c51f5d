// Package exetrim unmaps the pages of the running executable's read-only
// mappings (its code and read-only data) once the process has started, so
// that only the pages it touches from then on stay resident.
//
// The kernel maps a file-backed page with up to 15 of its neighbours when
// it faults it in (fault-around, 64 KiB), if they are in the page cache;
// a static Go binary is, right after it starts. Package initialisation and
// start-up (flags, configuration, TLS and gRPC set-up) touch code all over
// the text, so an idle meridian-proxy had 87% of its 6 MB of code and 74%
// of its read-only data resident: 10.7 of its 12.8 MB of RSS. Most of it
// never runs again. Trim drops those mappings (madvise MADV_DONTNEED on the
// mappings that are not writable: their pages stay in the page cache, so a
// later touch is a minor fault, which maps its neighbourhood again).
// Writable mappings (initialised data) are never touched: dropping them
// would throw away what the process wrote there.
package exetrim

import "os"

// disabled: MERIDIAN_EXE_TRIM=0 turns Trim into a no-op, to compare or to
// rule it out.
var disabled = os.Getenv("MERIDIAN_EXE_TRIM") == "0"

// Trim unmaps the executable's read-only mappings, and returns the
// process's file-backed resident bytes before and after (0, 0 where it does nothing:
// not Linux, or disabled).
func Trim() (before, after int64, err error) {
	if disabled {
		return 0, 0, nil
	}
	return trim()
}
