package session

import (
	"testing"

	"github.com/commucat/commucat/internal/store"
)

func qids(es []inboxItem) []int64 {
	out := make([]int64, len(es))
	for i, e := range es {
		out[i] = e.QueueID
	}
	return out
}

// With several nodes an entry can commit after entries with higher queue
// ids were delivered. The notification re-reads from just below it, and
// only the missing entry is queued again (multi-node bug: it used to be
// skipped until the device reconnected).
func TestOutboundRescanBelowLast(t *testing.T) {
	o := newOutbound()
	// Initial catch-up: an empty inbox.
	if _, need, cur := o.takeRound(true); !need || cur != 0 {
		t.Fatalf("initial read: need=%v cursor=%d", need, cur)
	}
	o.readDone(nil, false)
	// Node-local commit of 101 is handed over directly.
	o.pushInbox([]store.InboxEntry{{QueueID: 101}})
	b, need, _ := o.takeRound(true)
	if need || len(b.inbox) != 1 || b.inbox[0].QueueID != 101 {
		t.Fatalf("direct hand-over: need=%v inbox=%v", need, qids(b.inbox))
	}
	// Another node committed 100 and says so.
	o.requestCatchupFrom(99)
	_, need, cur := o.takeRound(true)
	if !need || cur != 99 {
		t.Fatalf("after the notification: need=%v cursor=%d, want a read after 99", need, cur)
	}
	// The store holds 100 and 101 (not yet acknowledged).
	o.readDone([]store.InboxEntry{{QueueID: 100}, {QueueID: 101}}, false)
	b, need, _ = o.takeRound(true)
	if need || len(b.inbox) != 1 || b.inbox[0].QueueID != 100 {
		t.Fatalf("re-read: need=%v inbox=%v, want [100] once", need, qids(b.inbox))
	}
	// A later ordinary hand-over still works, and repeats are dropped.
	o.pushInbox([]store.InboxEntry{{QueueID: 101}, {QueueID: 102}})
	b, _, _ = o.takeRound(true)
	if len(b.inbox) != 1 || b.inbox[0].QueueID != 102 {
		t.Fatalf("hand-over after re-read: %v", qids(b.inbox))
	}
}

// A re-read requested while a read is running is not lost when that read
// ends; a full re-read page continues after its last entry.
func TestOutboundRescanDuringRead(t *testing.T) {
	o := newOutbound()
	o.takeRound(true)
	o.readDone(nil, false)
	o.pushInbox([]store.InboxEntry{{QueueID: 50}, {QueueID: 60}})
	o.takeRound(true)
	o.requestCatchupFrom(55) // a read after 55 starts
	if _, need, cur := o.takeRound(true); !need || cur != 55 {
		t.Fatalf("cursor %d need %v", cur, need)
	}
	o.requestCatchupFrom(40) // arrives during that read
	o.readDone([]store.InboxEntry{{QueueID: 60}}, false)
	if _, need, cur := o.takeRound(true); !need || cur != 40 {
		t.Fatalf("the request during the read was lost: need=%v cursor=%d", need, cur)
	}
	// A full page: the next read continues after it.
	o.readDone([]store.InboxEntry{{QueueID: 45}, {QueueID: 50}}, true)
	b, need, cur := o.takeRound(true)
	if len(b.inbox) != 1 || b.inbox[0].QueueID != 45 || !need || cur != 50 {
		t.Fatalf("full page: inbox=%v need=%v cursor=%d", qids(b.inbox), need, cur)
	}
	o.readDone([]store.InboxEntry{{QueueID: 58}, {QueueID: 60}}, false)
	b, need, _ = o.takeRound(true)
	if len(b.inbox) != 1 || b.inbox[0].QueueID != 58 || need {
		t.Fatalf("last page: inbox=%v need=%v", qids(b.inbox), need)
	}
}
