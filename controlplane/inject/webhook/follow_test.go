package webhook

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A follower (a replica that is not the leader) never writes: it waits for
// the leader's Secret, serves it, takes the leader's renewals, and serves a
// certificate that is due for renewal rather than nothing.
func TestCertsFollowerLoadsAndNeverWrites(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(webhookConfig(1))
	follower := keeper(cs)
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T) // what the leader does first
		wantErr error
	}{
		{name: "no secret yet", prepare: func(*testing.T) {}, wantErr: ErrNoSecret},
		{name: "the leader's secret", prepare: func(t *testing.T) {
			if err := keeper(cs).Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "a secret due for renewal is still served", prepare: func(t *testing.T) {
			old := keeper(cs)
			old.Now = func() time.Time { return time.Now().Add(-355 * 24 * time.Hour) } // expires in 10 days
			if err := cs.CoreV1().Secrets(testNS).Delete(ctx, testSecret, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := old.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "the leader's renewal", prepare: func(t *testing.T) {
			if err := keeper(cs).Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "a secret that does not parse", prepare: func(t *testing.T) {
			sec, _ := cs.CoreV1().Secrets(testNS).Get(ctx, testSecret, metav1.GetOptions{})
			sec.Data["tls.key"] = []byte("garbage")
			if _, err := cs.CoreV1().Secrets(testNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, wantErr: ErrNoSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.prepare(t)
			before := writes(cs)
			served, _ := follower.GetCertificate(nil)
			err := follower.Load(ctx)
			if n := writes(cs); n != before {
				t.Fatalf("Load wrote %d times", n-before)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Load: %v, want %v", err, tc.wantErr)
				}
				if now, _ := follower.GetCertificate(nil); now != served {
					t.Fatal("a failed Load changed the certificate served")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sec, _ := cs.CoreV1().Secrets(testNS).Get(ctx, testSecret, metav1.GetOptions{})
			crt, err := follower.GetCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(crt.Leaf.Raw, certsOf(t, sec.Data["tls.crt"])[0].Raw) || !bytes.Equal(follower.CABundle(), sec.Data["ca.crt"]) {
				t.Fatal("the follower does not serve the Secret's certificate")
			}
		})
	}
}

// Follow keeps trying every second while it has no certificate (the API
// server may already send it admission requests), so that it serves within
// a second of the leader making the Secret, however late; it stops with its
// context.
func TestCertsFollow(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cs := fake.NewClientset(webhookConfig(1))
	follower := keeper(cs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); follower.Follow(ctx, time.Hour) }()
	time.Sleep(3500 * time.Millisecond) // a doubling backoff would next look at 7s
	if err := keeper(cs).Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	made := time.Now()
	deadline := made.Add(2 * time.Second)
	for {
		if _, err := follower.GetCertificate(nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower did not load the leader's certificate within 2s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}
