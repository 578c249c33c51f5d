package gateway

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/internal/filewatch"
)

// LoadFile reads a snapshot from a file in protojson (the local mode's and
// the tests' source of snapshots). Unknown fields are an error. The stamp
// is what the file looked like before it was read: WatchFile starts from
// it, so that a change made while it was read is not missed, and an
// unchanged file is not read again.
func LoadFile(path string) (*gatewaypb.Snapshot, FileStamp, error) {
	st, _ := filewatch.Stat(path)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, FileStamp{}, err
	}
	s, err := parseSnapshot(path, b)
	if err != nil {
		return nil, FileStamp{}, err
	}
	return s, FileStamp{st}, nil
}

func parseSnapshot(path string, b []byte) (*gatewaypb.Snapshot, error) {
	s := &gatewaypb.Snapshot{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// WatchFile applies the snapshot in path whenever it changes from since
// (LoadFile's stamp of what the caller applied), looking every interval
// until ctx ends. A file that cannot be parsed or applied is logged and
// refused (Diagnostics' refused snapshots); the current snapshot keeps
// serving.
//
// A look is a stat (modification time and size, following links, so a
// swapped symlink counts); the file is read only when that changed. A
// snapshot of 10,000 routes is some 2 MB of JSON whose parse allocates
// some 30 MB: reading it at every look kept the gateway allocating while
// idle, which also kept memrelease from ever finding it quiet
// (bench/README.md, Edge gateway), and reading it at the first look
// raised the start's memory high-water mark by a third.
func (g *Gateway) WatchFile(ctx context.Context, path string, since FileStamp, every time.Duration) {
	filewatch.Poll(ctx, every, since, func() (FileStamp, bool) {
		st, _ := filewatch.Stat(path)
		return FileStamp{st}, true
	}, func(st FileStamp) FileStamp {
		if st == (FileStamp{}) {
			return st // gone: its coming back is a change
		}
		s, _, err := LoadFile(path)
		if err != nil {
			g.refuse("", err)
			return st
		}
		g.Apply(s) // logs and records a refusal itself
		return st
	})
}

// FileStamp is what a look at the snapshot file compares (its
// modification time, size and inode); zero when it cannot be stat'ed.
type FileStamp struct{ st filewatch.Stamp }

// refuse records a snapshot that could not even be read.
func (g *Gateway) refuse(version string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rejected = append([]rejection{{Version: version, At: time.Now(), Error: err.Error()}}, g.rejected...)
	g.rejected = g.rejected[:min(len(g.rejected), 10)]
	g.log.Warn("gateway snapshot file rejected; the previous snapshot keeps serving", "err", err)
}
