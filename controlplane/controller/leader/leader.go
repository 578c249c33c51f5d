// Package leader runs the writers of a replicated controller on one replica
// at a time: an Elector campaigns for a coordination.k8s.io Lease (client-go's
// leaderelection) and, while it holds it, runs its writers. Readers do not go
// through it: they run on every replica.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"

	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
)

// Defaults of Elector's durations: controller-runtime's and kube-controller-manager's.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Elector is a Runnable that runs Writers only while it holds the Lease
// Namespace/Name.
//
// Invariants:
//   - Writers run under a context that ends when the lease is lost or Start's
//     context ends, and the lease is given up (ReleaseOnCancel) only after
//     they have returned, so that two replicas never write at once because
//     of a release; a lease lost to a missed renewal leaves the writers
//     LeaseDuration-RenewDeadline to stop before another replica may take it.
//   - Losing the lease stops the writers, not the process: the Elector
//     campaigns again, and the readers beside it keep serving.
//   - Start returns only when the writers have stopped and the campaign has
//     ended: nothing it started outlives it.
type Elector struct {
	Client    coordinationv1client.LeasesGetter
	Namespace string // the Lease's (the controller's namespace)
	Name      string // the Lease's
	// Identity is this replica's holderIdentity; empty: the host name (the
	// pod's name) and a random suffix, unique across restarts.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's; zero:
	// the defaults above.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Writers                                   runnable.Runnable
	Log                                       *slog.Logger
	// Leading, when set, is told when this replica starts (true) and stops
	// (false) running the writers.
	Leading func(bool)
}

// DefaultIdentity is <hostname>_<8 random hex digits>.
func DefaultIdentity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "meridian-controller"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "_" + hex.EncodeToString(b)
}

func (e *Elector) config() (leaderelection.LeaderElectionConfig, error) {
	if e.Client == nil || e.Writers == nil {
		return leaderelection.LeaderElectionConfig{}, errors.New("leader: needs a client and writers")
	}
	if e.Namespace == "" || e.Name == "" {
		return leaderelection.LeaderElectionConfig{}, fmt.Errorf("leader: the Lease needs a namespace and a name (have %q/%q)", e.Namespace, e.Name)
	}
	or := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	id := e.Identity
	if id == "" {
		id = DefaultIdentity()
	}
	return leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
			Client:     e.Client,
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		Name:            e.Namespace + "/" + e.Name,
		LeaseDuration:   or(e.LeaseDuration, DefaultLeaseDuration),
		RenewDeadline:   or(e.RenewDeadline, DefaultRenewDeadline),
		RetryPeriod:     or(e.RetryPeriod, DefaultRetryPeriod),
		ReleaseOnCancel: true,
	}, nil
}

// Check reports whether the Elector is usable (durations included), so that
// a bad flag fails at start rather than when the campaign begins.
func (e *Elector) Check() error {
	cfg, err := e.config()
	if err != nil {
		return err
	}
	cfg.Callbacks = leaderelection.LeaderCallbacks{OnStartedLeading: func(context.Context) {}, OnStoppedLeading: func() {}}
	_, err = leaderelection.NewLeaderElector(cfg)
	return err
}

// Start campaigns until ctx ends, running the writers in each term it
// wins. It returns the writers' error, if they fail; nil when ctx ends.
func (e *Elector) Start(ctx context.Context) error {
	cfg, err := e.config()
	if err != nil {
		return err
	}
	log := e.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for ctx.Err() == nil {
		if err := e.term(ctx, cfg, log); err != nil {
			return err
		}
	}
	return nil
}

// term runs one campaign: it waits for the lease, runs the writers while it
// holds it, and returns once they have stopped and the lease is released or
// lost.
func (e *Elector) term(ctx context.Context, cfg leaderelection.LeaderElectionConfig, log *slog.Logger) error {
	// The elector's own context ends only after the writers have returned:
	// ending it is what releases the lease.
	ectx, endCampaign := context.WithCancel(context.WithoutCancel(ctx))
	leading := make(chan context.Context, 1)
	cfg.Callbacks = leaderelection.LeaderCallbacks{
		// client-go calls this in a goroutine of its own that it does not
		// wait for: hand the term's context over and return at once, so
		// the writers run here, where they are waited for.
		OnStartedLeading: func(lctx context.Context) { leading <- lctx },
		OnStoppedLeading: func() {},
	}
	le, err := leaderelection.NewLeaderElector(cfg)
	if err != nil {
		endCampaign()
		return fmt.Errorf("leader election: %w", err)
	}
	electorDone := make(chan struct{})
	go func() { defer close(electorDone); le.Run(ectx) }()
	elected := false
	defer func() {
		endCampaign()
		<-electorDone
		if elected {
			e.release(cfg)
		}
	}()

	var lctx context.Context
	select {
	case <-ctx.Done():
		return nil
	case <-electorDone:
		return nil // not expected before ectx ends; campaign again
	case lctx = <-leading:
	}
	if ctx.Err() != nil {
		return nil
	}
	elected = true
	id := cfg.Lock.Identity()
	log.Info("leader: elected: starting the writers", "lease", cfg.Name, "identity", id)
	if e.Leading != nil {
		e.Leading(true)
		defer e.Leading(false)
	}
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	unlink := context.AfterFunc(lctx, stopWriters)
	defer unlink()
	err = e.Writers.Start(wctx)
	if err == nil {
		<-wctx.Done() // writers with nothing left to do: keep the lease until the term ends
	}
	switch {
	case err != nil:
		log.Error("leader: writers failed; giving the lease up", "lease", cfg.Name, "identity", id, "err", err)
	case ctx.Err() != nil:
		log.Info("leader: stopping: writers stopped, releasing the lease", "lease", cfg.Name, "identity", id)
	default:
		log.Warn("leader: lost the lease: writers stopped; campaigning again", "lease", cfg.Name, "identity", id)
	}
	return err
}

// release gives the lease up if this replica still holds it, as client-go's
// ReleaseOnCancel does, but from a fresh read and again on a conflict:
// client-go releases with the record it last saw, and a renewal that reached
// the API server while its caller gave up (a loaded API server) leaves that
// record stale, so its release failed with a conflict and the other replica
// waited out the whole lease duration.
func (e *Elector) release(cfg leaderelection.LeaderElectionConfig) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.RenewDeadline)
	defer cancel()
	id := cfg.Lock.Identity()
	leases := e.Client.Leases(e.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := leases.Get(ctx, e.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != id {
			return nil // released already, or another replica's now
		}
		// What client-go's release writes: no holder, a 1 s lease, now.
		none, one, now := "", int32(1), metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &none, &one
		l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil && e.Log != nil {
		e.Log.Warn("leader: could not release the lease; the other replica takes it when it expires", "lease", cfg.Name, "identity", id, "err", err)
	}
}
