package session

import (
	"context"
	"sync"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/store"
)

// Queue bounds of one connection.
const (
	maxControlBacklog = 256  // replies and server pushes awaiting the sender
	maxLiveQueue      = 256  // live frames (typing, presence, calls); more are dropped
	maxPendingInbox   = 1024 // inbox entries handed over but not yet written
	maxInflight       = 1024 // ack mode: written but unacknowledged inbox deliveries (§6.7)
	inboxPage         = 256  // redelivery page size (§6.7)
	// maxEarly bounds the early deliveries remembered for de-duplication
	// (outbound.early); beyond it, settled ones are forgotten and new early
	// deliveries are refused until there is room.
	maxEarly = 2 * (maxPendingInbox + maxInflight)
)

// inboxItem is an inbox entry waiting for the sender. early is set for an
// entry handed over before its commit (QueueID still 0).
type inboxItem struct {
	store.InboxEntry
	early *router.Early
}

// inflightRef is an inbox delivery awaiting the client's ACK: the queue id
// of a committed entry, or the early-delivery state (and envelope id) of
// an entry handed over before its commit.
type inflightRef struct {
	qid   int64
	early *router.Early
	env   string
}

// outFrame is a frame waiting for the sender.
type outFrame struct {
	t       ccp.FrameType
	ch      uint32
	payload []byte
	// closeAfter ends the connection once the frame is written
	// (unsolicited ERRORs: Replaced, Device Revoked, ...).
	closeAfter bool
	reason     EndReason
	// accepted is when the frame was accepted from its sender (delivery
	// latency metric); zero for replies.
	accepted time.Time
	// slot: the frame holds a control backlog slot (pushControl).
	slot bool
	// commit: the reply waits for this inbox write; when it failed the
	// frame becomes an ERROR with failPayload.
	commit      *commit
	failPayload []byte
}

// commit is the outcome of a pipelined inbox write (conn.storeAsync).
type commit struct {
	done chan struct{}
	err  error // set before done is closed
}

func newCommit() *commit { return &commit{done: make(chan struct{})} }

func (c *commit) finish(err error) {
	c.err = err
	close(c.done)
}

func (c *commit) ready() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// outbound is the send side of a connection: bounded queues filled by the
// reader goroutine and by other connections, drained by the one sender
// goroutine, which assigns server sequences in write order (§6.2).
type outbound struct {
	mu      sync.Mutex
	control []outFrame
	live    []outFrame
	// inbox holds committed entries handed over by the writer or read
	// back, in the order they arrived (ascending within one source), and
	// entries delivered early (pushEarly).
	inbox []inboxItem
	// early maps the envelope id of an entry delivered early to its state
	// until its committed copy shows up (hand-over or catch-up read),
	// which is then skipped (§6.7 early delivery; see pushEarly).
	early map[string]*router.Early
	// last is the highest queue id written or queued in inbox.
	last int64
	// sent remembers the queue ids queued on this connection (the most
	// recent sentRingSize), so that a re-read below last (rescan) skips
	// what was delivered. With several nodes, queue ids need not commit in
	// id order: an entry committed by another node can have a lower id
	// than entries this connection already delivered.
	sent sentSet
	// rescan >= 0: the next catch-up read starts after this queue id
	// instead of after last; -1: none pending. rescanGen counts the
	// requests that moved it; readRescan and readGen describe the read in
	// progress (whether it was a re-read, and the generation it started
	// at), so that a request arriving during a read is not lost.
	rescan     int64
	rescanGen  uint64
	readRescan bool
	readGen    uint64
	// catchup: entries may exist in the store that are neither written nor
	// queued; the sender reads them (pages after last). dirty: a handover
	// was dropped during a read, so read again before leaving catch-up.
	catchup, dirty bool
	// initial: the first redelivery after the handshake is not complete;
	// live frames wait (§6.7: redelivery comes before any live frame).
	initial bool
	// inflight maps the server sequence of an inbox delivery to its entry
	// until the client acknowledges it (ack mode).
	inflight map[uint32]inflightRef
	closed   bool

	// notify is called after frames were queued or the queue closed: it
	// starts the sender when none runs (kickSender). nil in unit tests.
	notify func()
	// slots bounds the control backlog: the reader goroutine takes a slot
	// per reply and blocks when the client does not read its replies.
	slots chan struct{}

	droppedLive int
}

func newOutbound() *outbound {
	return &outbound{
		catchup:  true,
		initial:  true,
		rescan:   -1,
		inflight: make(map[uint32]inflightRef),
		slots:    make(chan struct{}, maxControlBacklog),
	}
}

func (o *outbound) signal() {
	if o.notify != nil {
		o.notify()
	}
}

// pushControl queues a reply or push that must not be dropped. It blocks
// while the backlog is full; false when the connection is closing.
func (o *outbound) pushControl(ctx context.Context, f outFrame) bool {
	select {
	case o.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	f.slot = true
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		<-o.slots
		return false
	}
	o.control = append(o.control, f)
	o.mu.Unlock()
	o.signal()
	return true
}

// pushUrgent queues an unsolicited frame without blocking (kicks), beyond
// the backlog bound.
func (o *outbound) pushUrgent(f outFrame) {
	o.mu.Lock()
	if !o.closed {
		o.control = append(o.control, f)
	}
	o.mu.Unlock()
	o.signal()
}

// pushLive queues a live frame; false when it was dropped.
func (o *outbound) pushLive(f outFrame) bool {
	o.mu.Lock()
	if o.closed || len(o.live) >= maxLiveQueue {
		o.droppedLive++
		o.mu.Unlock()
		return false
	}
	o.live = append(o.live, f)
	o.mu.Unlock()
	o.signal()
	return true
}

// pushInbox takes committed entries for this device in queue order.
func (o *outbound) pushInbox(entries []store.InboxEntry) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	if o.catchup {
		o.dirty = true
		o.mu.Unlock()
		o.signal()
		return
	}
	for _, e := range entries {
		if o.earlyCommitted(e) || o.sent.has(e.QueueID) {
			continue
		}
		if len(o.inbox) >= maxPendingInbox {
			// Re-read from before the first entry not taken.
			o.catchup, o.dirty = true, true
			o.rescanFrom(e.QueueID - 1)
			break
		}
		o.queue(e)
	}
	o.mu.Unlock()
	o.signal()
}

// pushEarly hands over an entry before its commit (§6.7 early delivery).
// It is taken only in ack mode, after the initial redelivery, outside
// catch-up and with room in the queue, so that it lands behind every
// committed entry this connection still has to deliver; false: the caller
// lets the entry take the normal path (hand-over after the commit). The
// committed copy that arrives later is recognised by its envelope id and
// skipped (earlyCommitted).
func (o *outbound) pushEarly(e store.InboxEntry, h *router.Early) bool {
	o.mu.Lock()
	if o.closed || o.initial || o.catchup || len(o.inbox) >= maxPendingInbox {
		o.mu.Unlock()
		return false
	}
	if len(o.early) >= maxEarly {
		for env, x := range o.early {
			if x.Settled() {
				delete(o.early, env)
			}
		}
		if len(o.early) >= maxEarly {
			o.mu.Unlock()
			return false
		}
	}
	if o.early == nil {
		o.early = make(map[string]*router.Early)
	}
	o.early[e.EnvelopeID] = h
	o.inbox = append(o.inbox, inboxItem{InboxEntry: e, early: h})
	o.mu.Unlock()
	o.signal()
	return true
}

// earlyCommitted reports whether e is the committed copy of an entry
// delivered early, and then records its queue id as sent (the caller
// holds mu).
func (o *outbound) earlyCommitted(e store.InboxEntry) bool {
	if _, ok := o.early[e.EnvelopeID]; !ok {
		return false
	}
	delete(o.early, e.EnvelopeID)
	if len(o.early) == 0 {
		o.early = nil
	}
	o.sent.add(e.QueueID)
	o.last = max(o.last, e.QueueID)
	return true
}

// requestCatchup makes the sender re-read the inbox after last.
func (o *outbound) requestCatchup() {
	o.mu.Lock()
	o.catchup, o.dirty = true, true
	o.mu.Unlock()
	o.signal()
}

// requestCatchupFrom makes the sender re-read the inbox from the entry
// after queue id after (a cross-node notification whose entry is not at
// hand, and may lie below last).
func (o *outbound) requestCatchupFrom(after int64) {
	o.mu.Lock()
	o.catchup, o.dirty = true, true
	o.rescanFrom(after)
	o.mu.Unlock()
	o.signal()
}

// rescanFrom makes the next read start after queue id after when that is
// below last (the caller holds mu).
func (o *outbound) rescanFrom(after int64) {
	after = max(after, 0)
	if after >= o.last {
		return
	}
	if o.rescan < 0 || after < o.rescan {
		o.rescan = after
		o.rescanGen++
	}
}

// queue appends e to the inbox queue (the caller holds mu and checked
// that e was not sent).
func (o *outbound) queue(e store.InboxEntry) {
	o.inbox = append(o.inbox, inboxItem{InboxEntry: e})
	o.sent.add(e.QueueID)
	o.last = max(o.last, e.QueueID)
}

// beginRead returns where the catch-up read about to start begins: after
// rescan when one is pending, else after last.
func (o *outbound) beginRead() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.readRescan, o.readGen = o.rescan >= 0, o.rescanGen
	if o.readRescan {
		return o.rescan
	}
	return o.last
}

// acked removes an inbox delivery from the in-flight set and returns the
// queue id to delete; false when there is none (not an inbox delivery, or
// an early one whose row is not written or is deleted by the Writer).
func (o *outbound) acked(seq uint32) (int64, bool) {
	o.mu.Lock()
	ref, ok := o.inflight[seq]
	if !ok {
		o.mu.Unlock()
		return 0, false
	}
	delete(o.inflight, seq)
	qid := ref.qid
	if ref.early != nil {
		var stored bool
		qid, stored = ref.early.Ack()
		if !stored {
			qid = 0
		}
		if ref.early.Unwritten() && o.early[ref.env] == ref.early {
			// No committed copy will ever come. (One acknowledged while
			// its commit ran stays until the Writer hands the committed
			// copy back to this connection alone, Early.To: a catch-up
			// read may meet the row before the Writer's delete commits
			// and must skip it.)
			delete(o.early, ref.env)
		}
	}
	o.mu.Unlock()
	o.signal()
	return qid, qid != 0
}

// batch is what the sender takes from the queues in one round.
type batch struct {
	control []outFrame
	live    []outFrame
	inbox   []inboxItem
}

func (b *batch) empty() bool { return len(b.control) == 0 && len(b.live) == 0 && len(b.inbox) == 0 }

// take removes what can be written now. ackMode limits inbox deliveries to
// the in-flight window.
func (o *outbound) take(ackMode bool, maxFrames int) (b batch, needRead bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	// Replies leave in order: the first one still waiting for its commit
	// holds back the rest.
	n := 0
	for n < len(o.control) && n < maxFrames {
		f := &o.control[n]
		if f.commit != nil {
			if !f.commit.ready() {
				break
			}
			if f.commit.err != nil {
				f.t, f.payload = ccp.Error, f.failPayload
			}
			f.commit = nil
		}
		n++
	}
	b.control = append(b.control, o.control[:n]...)
	o.control = o.control[n:]
	if len(o.control) == 0 {
		o.control = o.control[:0:0]
	}
	room := maxFrames - n
	if !o.initial && room > 0 {
		k := min(len(o.live), room)
		b.live = append(b.live, o.live[:k]...)
		o.live = o.live[k:]
		if len(o.live) == 0 {
			o.live = o.live[:0:0]
		}
		room -= k
	}
	if ackMode {
		room = min(room, maxInflight-len(o.inflight))
	}
	if room > 0 && len(o.inbox) > 0 {
		k := min(len(o.inbox), room)
		b.inbox = append(b.inbox, o.inbox[:k]...)
		o.inbox = o.inbox[k:]
		if len(o.inbox) == 0 {
			o.inbox = o.inbox[:0:0]
		}
	}
	inboxRoom := maxPendingInbox - len(o.inbox)
	if ackMode {
		inboxRoom = min(inboxRoom, maxInflight-len(o.inflight)-len(b.inbox))
	}
	needRead = o.catchup && !o.closed && len(o.inbox) == 0 && inboxRoom > 0
	if needRead {
		o.dirty = false
	}
	return b, needRead
}

// readDone records the result of a catch-up read: the entries are queued
// (ascending, after last); when the read returned fewer than asked and no
// handover was dropped meanwhile, catch-up ends. It reports whether the
// initial redelivery just finished.
func (o *outbound) readDone(entries []store.InboxEntry, full bool) (initialDone bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	rescanning := o.readRescan
	o.readRescan = false
	for _, e := range entries {
		if o.earlyCommitted(e) || o.sent.has(e.QueueID) || (!rescanning && e.QueueID <= o.last) {
			continue
		}
		o.queue(e)
	}
	if rescanning && o.rescanGen == o.readGen {
		if full {
			// Continue the re-read after this page.
			o.rescan = entries[len(entries)-1].QueueID
			return false
		}
		// The re-read reached the end of the inbox, past last too.
		o.rescan = -1
	}
	// A re-read requested during this read is still pending (rescan >= 0,
	// dirty): catch-up goes on.
	if !full && !o.dirty {
		o.catchup = false
		if o.initial && len(o.inbox) == 0 {
			o.initial = false
			return true
		}
	}
	return false
}

// inboxDrained ends the initial phase once catch-up is over and every
// redelivered entry was written.
func (o *outbound) inboxDrained() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.initial && !o.catchup && len(o.inbox) == 0 {
		o.initial = false
		return true
	}
	return false
}

// close stops accepting frames; the sender drains the control queue and
// exits.
func (o *outbound) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
}

// sentRingSize bounds the remembered queue ids; it exceeds what can be
// queued and in flight at once (maxPendingInbox + maxInflight), so an
// entry still in the store that this connection delivered is remembered.
const sentRingSize = 4 * (maxPendingInbox + maxInflight)

// sentSet is a set of the most recent sentRingSize queue ids.
type sentSet struct {
	ids  map[int64]struct{}
	ring []int64
	next int
}

func (s *sentSet) has(id int64) bool {
	_, ok := s.ids[id]
	return ok
}

func (s *sentSet) add(id int64) {
	if s.ids == nil {
		s.ids = make(map[int64]struct{}, 64)
		s.ring = make([]int64, 0, 64)
	}
	if _, ok := s.ids[id]; ok {
		return
	}
	if len(s.ring) < sentRingSize {
		s.ring = append(s.ring, id)
	} else {
		delete(s.ids, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % sentRingSize
	}
	s.ids[id] = struct{}{}
}
