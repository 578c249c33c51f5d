package hub

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// chans is a Notifier whose channels the test fills (a store write waking
// several topics does the same).
type chans map[store.Topic]chan struct{}

func (c chans) Watch(t store.Topic) (<-chan struct{}, func()) {
	if c[t] == nil {
		c[t] = make(chan struct{}, 1)
	}
	return c[t], func() {}
}

// One write that wakes two watched topics is one wake-up, not two: the
// computation after the first reads the store after both.
func TestWaitTakesEveryPendingWake(t *testing.T) {
	n := chans{}
	a := store.Topic{Kind: store.TopicService, Key: store.Key{Namespace: "ns", Name: "stable"}}
	b := store.Topic{Kind: store.TopicService, Key: store.Key{Namespace: "ns", Name: "canary"}}
	c := store.Topic{Kind: store.TopicService, Key: store.Key{Namespace: "ns", Name: "other"}}
	w := newWatchSet(n)
	w.set([]store.Topic{a, b, c})
	n[a] <- struct{}{}
	n[b] <- struct{}{}
	if !w.wait(context.Background(), nil) {
		t.Fatal("not woken")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w.wait(ctx, nil) {
		t.Fatal("woken again by a wake the first computation already covered")
	}
	// A change after the wake-up still wakes.
	n[c] <- struct{}{}
	if !w.wait(context.Background(), nil) {
		t.Fatal("a later change did not wake")
	}
}
