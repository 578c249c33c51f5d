package store

import (
	"strconv"
	"sync"
)

// TopicKind says what a Topic is about.
type TopicKind uint8

const (
	// TopicService is a Service and everything its compiled endpoints and
	// profile depend on (its slices, their pods, its profile, splits naming
	// it, its workloads, its namespace's labels and annotations).
	TopicService TopicKind = iota + 1
	// TopicGateway is a Gateway and what its listeners and routes depend
	// on. Defined for the gateway; no kind publishes it yet.
	TopicGateway
	// TopicRollout is a Rollout (RolloutTopic): a change of the Rollout
	// wakes it.
	TopicRollout
)

func (k TopicKind) String() string {
	switch k {
	case TopicService:
		return "Service"
	case TopicGateway:
		return "Gateway"
	case TopicRollout:
		return "Rollout"
	}
	return "TopicKind(" + strconv.Itoa(int(k)) + ")"
}

// Topic is what a watcher subscribes to and a write wakes: one object of
// one topic kind. A change wakes exactly the topics it affects.
type Topic struct {
	Kind TopicKind
	Key  Key
}

// ServiceTopic is the topic of service k.
func ServiceTopic(k Key) Topic { return Topic{Kind: TopicService, Key: k} }

func (t Topic) String() string { return t.Kind.String() + " " + t.Key.String() }

// affected collects the topics one write wakes.
type affected map[Topic]struct{}

func (a affected) add(t Topic) { a[t] = struct{}{} }

// service adds the topic of service k.
func (a affected) service(k Key) { a[ServiceTopic(k)] = struct{}{} }

// The sets are pooled: a write hands its set to the tables through an
// interface, which would otherwise move it to the heap on every write.
var affectedPool = sync.Pool{New: func() any { return affected{} }}

func getAffected() affected { return affectedPool.Get().(affected) }

func putAffected(a affected) {
	clear(a)
	affectedPool.Put(a)
}

// ServiceTopics returns the topics of services ks, in order.
func ServiceTopics(ks []Key) []Topic {
	ts := make([]Topic, len(ks))
	for i, k := range ks {
		ts[i] = ServiceTopic(k)
	}
	return ts
}
