package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
)

// A bad file in the store directory neither stops the controller from
// starting nor hides: the valid files serve, and the rejected one shows in
// the metrics and on /store until it is fixed.
func TestControllerLocalStartsWithABadFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	// The good file's objects, as many as controllerYAML holds.
	good := strings.Count(controllerYAML, "\nkind:")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: demo}\nspec: {clusterIP: [}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			TrustDomain: "example.org", DefaultNamespace: "demo", ShutdownGrace: time.Second,
		}, func(d, a string) { addrs <- [2]string{d, a} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("controller did not stop")
		}
	})
	var dstAddr, adminAddr string
	select {
	case a := <-addrs:
		dstAddr, adminAddr = a[0], a[1]
	case err := <-done:
		t.Fatalf("controller exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not start")
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventually("ready", func() bool { code, _ := get("/ready"); return code == http.StatusOK })

	// The good file serves.
	conn, err := grpc.NewClient(dstAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	g, err := pb.NewDestinationClient(conn).Get(sctx, &pb.GetDestination{Authority: "web:80"})
	if err != nil {
		t.Fatal(err)
	}
	if u, err := g.Recv(); err != nil || u.GetAdd() == nil || len(u.GetAdd().Addrs) != 1 {
		t.Fatalf("web:80 = %v, %v; want its endpoint", u, err)
	}

	// The bad one is reported, with its file and line.
	if _, m := get("/metrics"); !strings.Contains(m, `meridian_store_rejected_files{file="`+bad+`"} 1`) || !strings.Contains(m, fmt.Sprintf("meridian_store_objects %d", good)) {
		t.Fatalf("/metrics lacks the rejected file or the objects:\n%s", grep(m, "meridian_store"))
	}
	_, body := get("/store")
	var rep StoreReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/store: %v: %s", err, body)
	}
	if rep.Rejected != 1 || len(rep.Files) != 2 || rep.Files[0].File != bad || !strings.HasPrefix(rep.Files[0].Error, bad+":4: invalid YAML") || rep.Files[1].Objects != good {
		t.Fatalf("/store = %s", body)
	}

	// Fixed, it is applied and no longer reported.
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: demo}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually("fix applied", func() bool {
		_, m := get("/metrics")
		return !strings.Contains(m, "meridian_store_rejected_files") && strings.Contains(m, fmt.Sprintf("meridian_store_objects %d", good+1))
	})
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
