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

// WatchFile applies the snapshot in path whenever its contents change,
// looking every interval until ctx ends. Its first look applies what the
// file holds then (a no-op when the caller applied that version already:
// equal versions are equal snapshots). A file that cannot be parsed or
// applied is logged and refused (Diagnostics' refused snapshots); the
// current snapshot keeps serving.
func (g *Gateway) WatchFile(ctx context.Context, path string, every time.Duration) {
	filewatch.Poll(ctx, every, "", func() (string, bool) {
		return filewatch.Contents(path), true
	}, func(contents string) string {
		s, err := parseSnapshot(path, []byte(contents[:len(contents)-1])) // Contents ends each file with NUL
		if err != nil {
			g.refuse("", err)
			return contents
		}
		g.Apply(s) // logs and records a refusal itself
		return contents
	})
}

// refuse records a snapshot that could not even be read.
func (g *Gateway) refuse(version string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rejected = append([]rejection{{Version: version, At: time.Now(), Error: err.Error()}}, g.rejected...)
	g.rejected = g.rejected[:min(len(g.rejected), 10)]
	g.log.Warn("gateway snapshot file rejected; the previous snapshot keeps serving", "err", err)
}
