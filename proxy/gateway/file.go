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
// the tests' source of snapshots). Unknown fields are an error.
func LoadFile(path string) (*gatewaypb.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseSnapshot(path, b)
}

func parseSnapshot(path string, b []byte) (*gatewaypb.Snapshot, error) {
	s := &gatewaypb.Snapshot{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// WatchFile applies the snapshot in path whenever it changes, looking
// every interval until ctx ends. Its first look applies what the file
// holds then (a no-op when the caller applied that version already: equal
// versions are equal snapshots). A file that cannot be parsed or applied
// is logged and refused (Diagnostics' refused snapshots); the current
// snapshot keeps serving.
//
// A look is a stat (modification time and size, following links, so a
// swapped symlink counts); the file is read only when that changed. A
// snapshot of 10,000 routes is some 2 MB of JSON: reading it at every look
// kept the gateway allocating ~2 MB/s while idle, which also kept
// memrelease from ever finding it quiet (bench/README.md, Edge gateway).
func (g *Gateway) WatchFile(ctx context.Context, path string, every time.Duration) {
	filewatch.Poll(ctx, every, fileStamp{}, func() (fileStamp, bool) {
		fi, err := os.Stat(path)
		if err != nil {
			return fileStamp{}, true // gone: its coming back is a change
		}
		return fileStamp{fi.ModTime().UnixNano(), fi.Size()}, true
	}, func(st fileStamp) fileStamp {
		if st == (fileStamp{}) {
			return st
		}
		s, err := LoadFile(path)
		if err != nil {
			g.refuse("", err)
			return st
		}
		g.Apply(s) // logs and records a refusal itself
		return st
	})
}

// fileStamp is what a look at the snapshot file compares.
type fileStamp struct{ mtime, size int64 }

// refuse records a snapshot that could not even be read.
func (g *Gateway) refuse(version string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rejected = append([]rejection{{Version: version, At: time.Now(), Error: err.Error()}}, g.rejected...)
	g.rejected = g.rejected[:min(len(g.rejected), 10)]
	g.log.Warn("gateway snapshot file rejected; the previous snapshot keeps serving", "err", err)
}
