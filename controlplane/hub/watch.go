package hub

import (
	"context"
	"reflect"
	"time"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// watchSet follows the store's change notifications for a changing set of
// topics (the services an answer depends on). The store's channels coalesce (at most one pending wake each),
// so however many changes happen while a stream is busy (say, blocked
// sending to a slow client), the stream recomputes the latest state once.
// Nothing queues per change, and no goroutine runs per watch.
type watchSet struct {
	n    store.Notifier
	subs map[store.Topic]sub
	keys []store.Topic // in the order given, for a stable select
}

type sub struct {
	ch     <-chan struct{}
	cancel func()
}

func newWatchSet(n store.Notifier) *watchSet {
	return &watchSet{n: n, subs: map[store.Topic]sub{}}
}

// set makes keys the watched topics. It reports whether a key was added:
// a change may have happened between the caller's read of the store and the
// new subscription, so the caller must read again.
func (w *watchSet) set(keys []store.Topic) (added bool) {
	want := make(map[store.Topic]bool, len(keys))
	w.keys = w.keys[:0]
	for _, k := range keys {
		if want[k] {
			continue
		}
		want[k] = true
		w.keys = append(w.keys, k)
		if _, ok := w.subs[k]; ok {
			continue
		}
		added = true
		ch, cancel := w.n.Watch(k)
		w.subs[k] = sub{ch: ch, cancel: cancel}
	}
	for k, s := range w.subs {
		if !want[k] {
			s.cancel()
			delete(w.subs, k)
		}
	}
	return added
}

// wait blocks until a watched topic changes (true), poll delivers (true;
// nil never does), or ctx ends (false). On true the other topics' pending
// wakes are taken too: the computation that follows reads the store after
// them, so one store write that wakes two topics (a Rollout's status: the
// stable and the canary Service) costs one computation, not two.
func (w *watchSet) wait(ctx context.Context, poll <-chan time.Time) bool {
	if !w.block(ctx, poll) {
		return false
	}
	for _, k := range w.keys {
		select {
		case <-w.subs[k].ch:
		default:
		}
	}
	return true
}

func (w *watchSet) block(ctx context.Context, poll <-chan time.Time) bool {
	switch len(w.keys) {
	case 0:
		select {
		case <-ctx.Done():
			return false
		case <-poll:
			return true
		}
	case 1:
		select {
		case <-ctx.Done():
			return false
		case <-poll:
			return true
		case <-w.subs[w.keys[0]].ch:
			return true
		}
	}
	cases := make([]reflect.SelectCase, 0, 2+len(w.keys))
	cases = append(cases,
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(poll)})
	for _, k := range w.keys {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w.subs[k].ch)})
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen != 0
}

func (w *watchSet) close() {
	for k, s := range w.subs {
		s.cancel()
		delete(w.subs, k)
	}
	w.keys = nil
}
