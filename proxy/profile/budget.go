package profile

import (
	"sync"
	"time"
)

// Budget is a retry budget shaped like tower's (and so Linkerd's): every
// original request deposits Ratio of a token, every retry withdraws one
// whole token, deposits expire after TTL, and MinPerSecond×TTL tokens are
// always in reserve so that low-traffic services can still retry.
//
// Deposits are kept in one-second slots over the TTL window, so memory is
// fixed and expiry is exact to a second.
type Budget struct {
	spec  BudgetSpec
	now   func() time.Time
	mu    sync.Mutex
	slots []slot
}

// Tokens are counted in thousandths so that ratios like 0.2 add up exactly.
const milli = 1000

type slot struct {
	sec       int64
	deposits  int64 // milli-tokens
	withdraws int64 // milli-tokens
}

// NewBudget returns a budget; now may be nil (time.Now).
func NewBudget(spec BudgetSpec, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	if spec.TTL < time.Second {
		spec.TTL = time.Second
	}
	return &Budget{spec: spec, now: now, slots: make([]slot, int(spec.TTL/time.Second))}
}

func (b *Budget) slot(sec int64) *slot {
	s := &b.slots[int(sec%int64(len(b.slots)))]
	if s.sec != sec {
		*s = slot{sec: sec}
	}
	return s
}

// Deposit records an original request.
func (b *Budget) Deposit() {
	b.mu.Lock()
	b.slot(b.now().Unix()).deposits += int64(b.spec.Ratio*milli + 0.5)
	b.mu.Unlock()
}

// Withdraw takes a token for one retry; false means the budget is spent.
func (b *Budget) Withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now().Unix()
	oldest := now - int64(len(b.slots)) + 1
	avail := int64(b.spec.MinPerSecond) * int64(len(b.slots)) * milli
	for i := range b.slots {
		if s := &b.slots[i]; s.sec >= oldest {
			avail += s.deposits - s.withdraws
		}
	}
	if avail < milli {
		return false
	}
	b.slot(now).withdraws += milli
	return true
}
