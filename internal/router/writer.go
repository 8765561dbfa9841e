package router

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// ErrWriterClosed is returned by Store after the Writer stopped.
var ErrWriterClosed = errors.New("router: inbox writer stopped")

// WriterConfig configures a Writer.
type WriterConfig struct {
	Store    store.Store
	Registry *Registry
	Logger   *slog.Logger
	// MaxBatch bounds the entries committed in one transaction.
	MaxBatch int
	// OnCommit, if set, is called after every committed batch with the
	// number of entries (metrics).
	OnCommit func(entries int)
	// OnEarlyAcked, if set, is called with the number of early entries a
	// commit did not write because their recipients had acknowledged them
	// (see Early; metrics).
	OnEarlyAcked func(entries int)
	// Dispatch, if set, is called with the committed entries of recipients
	// that are not connected to this node (cross-node delivery, §9.4). It
	// runs on a goroutine of its own, one call at a time in commit order,
	// so that a slow or unreachable bus never delays commits and ACKs.
	Dispatch func(entries []store.InboxEntry)
	// DispatchQueue bounds the committed entries waiting for Dispatch
	// (default 65536). When it is full, the entries of a new commit are
	// not dispatched (an error is logged): they stay in the recipients'
	// inboxes and reach them at the next inbox catch-up (reconnect, or the
	// bus resubscription's catch-up after an outage).
	DispatchQueue int
	// DeleteLinger is how long acknowledged deletes (Delete) may wait for a
	// batch of stored entries to share its transaction before they are
	// committed on their own (default 20 ms; negative: no wait). Deletes
	// are not durable promises (see Delete), so waiting only widens the
	// window in which a crash or an inbox re-read redelivers an
	// acknowledged entry.
	DeleteLinger time.Duration
	// CommitLinger is how long a batch that already holds the entries of
	// several callers waits for more requests before its commit (default
	// 3 ms; negative: no wait). Its callers (the senders' ACKs) wait that
	// much longer; in exchange the commits are fewer and larger, and more
	// early deliveries are acknowledged before a commit takes them, so
	// they are never written (BENCHMARKS.md). A batch of one caller does
	// not wait: with nobody to join it, it would only slow that sender.
	CommitLinger time.Duration
}

// Defaults of WriterConfig.
const (
	defaultDispatchQueue = 65536
	defaultDeleteLinger  = 20 * time.Millisecond
	defaultCommitLinger  = 3 * time.Millisecond
	// dispatchDrain bounds how long Run, when stopping, keeps calling
	// Dispatch for entries still queued; the rest is dropped (logged).
	dispatchDrain = 5 * time.Second
)

// Writer group-commits inbox entries: concurrent Store calls are gathered
// into one transaction, so durability costs one disk sync per batch rather
// than per message. Deletes ride along in the same transactions. After the
// commit it hands the entries, in queue order, to the recipients' local
// connections, queues those of other nodes' recipients for Dispatch, then
// releases the callers.
type Writer struct {
	cfg  WriterConfig
	reqs chan *writeReq
	done chan struct{}

	// Entries waiting for Dispatch, in commit order (dispatchLoop).
	dmu      sync.Mutex
	dq       [][]store.InboxEntry
	dqLen    int // entries in dq plus the batch being dispatched
	dwake    chan struct{}
	dropped  int       // entries not dispatched since the last log
	droppedT time.Time // time of the last drop log
}

type writeReq struct {
	entries []store.InboxEntry
	// early[i], when set, is entries[i]'s early-delivery state (nil, or
	// as long as entries).
	early []*Early
	err   chan error // nil for deletes: nobody waits

	// delete request: queue ids of one recipient
	recipient string
	deletes   []int64
}

// NewWriter returns a Writer; its owner must call Run.
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2048
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DispatchQueue <= 0 {
		cfg.DispatchQueue = defaultDispatchQueue
	}
	if cfg.DeleteLinger == 0 {
		cfg.DeleteLinger = defaultDeleteLinger
	}
	if cfg.CommitLinger == 0 {
		cfg.CommitLinger = defaultCommitLinger
	}
	return &Writer{
		cfg:   cfg,
		reqs:  make(chan *writeReq, 1024),
		done:  make(chan struct{}),
		dwake: make(chan struct{}, 1),
	}
}

// Store durably stores the entries (assigning their QueueID in place) and
// delivers them to connected recipients. It returns after the commit.
func (w *Writer) Store(ctx context.Context, entries []store.InboxEntry) error {
	return w.StoreEarly(ctx, entries, nil)
}

// StoreEarly is Store for entries some of which were already handed to
// their recipients' connections (early[i] non-nil, see Early): an entry
// acknowledged before its commit takes it is not written, and one
// acknowledged while its commit runs is deleted right after (and handed
// only to Early.To). Every other written entry is still handed to the
// recipient's connection after the commit (DeliverInbox), which
// recognises what it already has. It returns after the commit; entries
// not written keep QueueID 0.
func (w *Writer) StoreEarly(ctx context.Context, entries []store.InboxEntry, early []*Early) error {
	if len(entries) == 0 {
		return nil
	}
	if early != nil && len(early) != len(entries) {
		return errors.New("router: StoreEarly needs one early state per entry")
	}
	req := &writeReq{entries: entries, early: early, err: make(chan error, 1)}
	select {
	case w.reqs <- req:
	case <-w.done:
		return ErrWriterClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.err:
		return err
	case <-w.done:
		// Run may have finished this request just before stopping.
		select {
		case err := <-req.err:
			return err
		default:
			return ErrWriterClosed
		}
	}
}

// Delete removes acknowledged inbox entries of one recipient. It does not
// wait for the commit: deletes ride along with the next batch of stored
// entries, or are committed on their own after DeleteLinger (a delete lost
// in a crash only causes a redelivery, which at-least-once allows).
func (w *Writer) Delete(recipient string, queueIDs []int64) {
	if len(queueIDs) == 0 {
		return
	}
	select {
	case w.reqs <- &writeReq{recipient: recipient, deletes: queueIDs}:
	case <-w.done:
	}
}

// Run commits batches until ctx ends. Requests already taken (deletes
// waiting for a batch included) are finished before it returns, and so are
// the Dispatch calls of committed entries (for at most dispatchDrain after
// ctx ended, plus the call in progress).
func (w *Writer) Run(ctx context.Context) {
	stopDispatch := make(chan struct{})
	dispatchDone := make(chan struct{})
	if w.cfg.Dispatch != nil {
		go w.dispatchLoop(stopDispatch, dispatchDone)
	} else {
		close(dispatchDone)
	}
	defer func() {
		// Release waiting callers first, then let Dispatch finish.
		close(w.done)
		close(stopDispatch)
		<-dispatchDone
	}()

	// held: delete-only requests waiting (up to DeleteLinger) for stored
	// entries to share a transaction with.
	var (
		held  []*writeReq
		heldN int
		timer *time.Timer
		tc    <-chan time.Time
	)
	stopTimer := func() {
		if tc != nil {
			timer.Stop()
			tc = nil
		}
	}
	armTimer := func() {
		if tc == nil {
			if timer == nil {
				timer = time.NewTimer(w.cfg.DeleteLinger)
			} else {
				timer.Reset(w.cfg.DeleteLinger)
			}
			tc = timer.C
		}
	}
	// hold keeps deletes a commit left over (early entries acknowledged
	// while it ran) for the next transaction.
	hold := func(carry []*writeReq) {
		for _, r := range carry {
			held = append(held, r)
			heldN += len(r.deletes)
		}
		if len(carry) > 0 && ctx.Err() == nil {
			armTimer()
		}
	}
	for {
		var first *writeReq
		select {
		case first = <-w.reqs:
		case <-tc:
			tc = nil
			carry := w.commit(held, heldN)
			held, heldN = nil, 0
			hold(carry)
			continue
		case <-ctx.Done():
			stopTimer()
			for len(held) > 0 {
				carry := w.commit(held, heldN)
				held, heldN = nil, 0
				hold(carry)
			}
			return
		}
		batch := append(held, first)
		n := heldN + len(first.entries) + len(first.deletes)
		held, heldN = nil, 0
		entries := len(first.entries)
		// gather adds the queued requests to the batch; with a non-nil
		// until it waits for more until until fires (or ctx ends).
		gather := func(until <-chan time.Time) {
			for n < w.cfg.MaxBatch {
				var r *writeReq
				if until == nil {
					select {
					case r = <-w.reqs:
					default:
						return
					}
				} else {
					select {
					case r = <-w.reqs:
					case <-until:
						return
					case <-ctx.Done():
						return
					}
				}
				batch = append(batch, r)
				n += len(r.entries) + len(r.deletes)
				entries += len(r.entries)
			}
		}
		gather(nil)
		if entries == 0 && w.cfg.DeleteLinger > 0 && n < w.cfg.MaxBatch {
			held, heldN = batch, n
			armTimer()
			continue
		}
		if w.cfg.CommitLinger > 0 && n < w.cfg.MaxBatch && writers(batch) > 1 {
			// Several callers are writing: wait a little for more (see
			// WriterConfig.CommitLinger). A lone caller is committed at
			// once: nobody would join, and it would only wait.
			lt := time.NewTimer(w.cfg.CommitLinger)
			gather(lt.C)
			lt.Stop()
		}
		stopTimer()
		hold(w.commit(batch, n))
	}
}

// writers counts the requests with entries (callers waiting for a commit).
func writers(batch []*writeReq) int {
	n := 0
	for _, r := range batch {
		if len(r.entries) > 0 {
			n++
		}
	}
	return n
}

// recipientDeletes is the queue ids to delete of one recipient.
type recipientDeletes struct {
	recipient string
	ids       []int64
}

// mergeDeletes coalesces the batch's deletes into one list per recipient,
// in order of first appearance.
func mergeDeletes(batch []*writeReq) []recipientDeletes {
	var out []recipientDeletes
	var idx map[string]int
	for _, r := range batch {
		if len(r.deletes) == 0 {
			continue
		}
		if idx == nil {
			idx = make(map[string]int)
		}
		i, ok := idx[r.recipient]
		if !ok {
			i = len(out)
			idx[r.recipient] = i
			out = append(out, recipientDeletes{recipient: r.recipient})
		}
		out[i].ids = append(out[i].ids, r.deletes...)
	}
	return out
}

// commit writes one batch and releases its callers. It returns the
// deletes of early entries acknowledged while it ran, for a later
// transaction.
func (w *Writer) commit(batch []*writeReq, n int) (carry []*writeReq) {
	// The commit must not be abandoned half-way when the server stops:
	// in-flight writes finish (§6.13), bounded by this timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// all holds the entries to write; from[i] is where all[i] came from.
	type origin struct {
		r *writeReq
		j int
	}
	all := make([]store.InboxEntry, 0, n)
	from := make([]origin, 0, n)
	skipped := 0
	for _, r := range batch {
		for j := range r.entries {
			if r.early != nil && r.early[j] != nil && !r.early[j].claim() {
				skipped++ // acknowledged before this commit: not written
				continue
			}
			all = append(all, r.entries[j])
			from = append(from, origin{r, j})
		}
	}
	deletes := mergeDeletes(batch)
	err := w.cfg.Store.Tx(ctx, func(q store.Queries) error {
		for _, d := range deletes {
			if err := q.DeleteInbox(ctx, d.recipient, d.ids); err != nil {
				return err
			}
		}
		if len(all) == 0 {
			return nil
		}
		ids, err := q.EnqueueInbox(ctx, all)
		if err != nil {
			return err
		}
		for i := range all {
			all[i].QueueID = ids[i]
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		// One bad request must not fail the others: retry one by one.
		for _, r := range batch {
			carry = append(carry, w.commit([]*writeReq{r}, len(r.entries)+len(r.deletes))...)
		}
		return carry
	}
	if err != nil {
		w.cfg.Logger.Error("inbox write failed", "entries", len(all), "deletes", len(batch[0].deletes), "err", err)
		for _, o := range from {
			if h := early(o.r, o.j); h != nil {
				h.failed()
			}
		}
		if batch[0].err != nil {
			batch[0].err <- err
		}
		return nil
	}
	// Copy the assigned ids back into the callers' slices; entries
	// acknowledged while the commit ran are deleted by a later
	// transaction and not handed to anyone.
	var deliver []store.InboxEntry // nil: all of them
	var ackedBy map[Peer][]store.InboxEntry
	for i, o := range from {
		o.r.entries[o.j].QueueID = all[i].QueueID
		if h := early(o.r, o.j); h != nil && h.stored(all[i].QueueID) {
			if deliver == nil {
				deliver = append(make([]store.InboxEntry, 0, len(all)), all[:i]...)
			}
			carry = append(carry, &writeReq{recipient: all[i].Recipient, deletes: []int64{all[i].QueueID}})
			if h.To != nil {
				if ackedBy == nil {
					ackedBy = make(map[Peer][]store.InboxEntry)
				}
				ackedBy[h.To] = append(ackedBy[h.To], all[i])
			}
			continue
		}
		if deliver != nil {
			deliver = append(deliver, all[i])
		}
	}
	if deliver == nil {
		deliver = all
	}
	if len(all) > 0 && w.cfg.OnCommit != nil {
		w.cfg.OnCommit(len(all))
	}
	if skipped > 0 && w.cfg.OnEarlyAcked != nil {
		w.cfg.OnEarlyAcked(skipped)
	}
	if len(deliver) > 0 {
		w.dispatch(deliver)
	}
	for p, es := range ackedBy {
		p.DeliverInbox(es)
	}
	for _, r := range batch {
		if r.err != nil {
			r.err <- nil
		}
	}
	return carry
}

// early returns the early-delivery state of r.entries[j], or nil.
func early(r *writeReq, j int) *Early {
	if r.early == nil {
		return nil
	}
	return r.early[j]
}

// dispatch hands committed entries to local connections, grouped per
// recipient in queue order, and queues the others for Dispatch.
func (w *Writer) dispatch(all []store.InboxEntry) {
	byRecipient := make(map[string][]store.InboxEntry)
	var order []string
	for _, e := range all {
		if _, ok := byRecipient[e.Recipient]; !ok {
			order = append(order, e.Recipient)
		}
		byRecipient[e.Recipient] = append(byRecipient[e.Recipient], e)
	}
	var remote []store.InboxEntry
	for _, dev := range order {
		if p := w.cfg.Registry.Lookup(dev); p != nil {
			p.DeliverInbox(byRecipient[dev])
		} else if w.cfg.Dispatch != nil {
			remote = append(remote, byRecipient[dev]...)
		}
	}
	if len(remote) > 0 {
		w.queueRemote(remote)
	}
}

// queueRemote queues entries for dispatchLoop without ever blocking.
func (w *Writer) queueRemote(entries []store.InboxEntry) {
	w.dmu.Lock()
	if w.dqLen+len(entries) > w.cfg.DispatchQueue {
		w.dropped += len(entries)
		if now := time.Now(); now.Sub(w.droppedT) >= time.Second {
			w.cfg.Logger.Error("cross-node dispatch queue full: entries not dispatched (they wait in the inbox)",
				"entries", w.dropped, "queued", w.dqLen)
			w.dropped, w.droppedT = 0, now
		}
		w.dmu.Unlock()
		return
	}
	w.dq = append(w.dq, entries)
	w.dqLen += len(entries)
	w.dmu.Unlock()
	select {
	case w.dwake <- struct{}{}:
	default:
	}
}

// popRemote takes the oldest queued batch.
func (w *Writer) popRemote() ([]store.InboxEntry, bool) {
	w.dmu.Lock()
	defer w.dmu.Unlock()
	if len(w.dq) == 0 {
		return nil, false
	}
	b := w.dq[0]
	w.dq[0] = nil
	w.dq = w.dq[1:]
	if len(w.dq) == 0 {
		w.dq = nil // let the backing array go
	}
	return b, true
}

// dispatchLoop calls Dispatch for the queued batches, one at a time in
// commit order, until stop is closed and the queue is empty (or
// dispatchDrain has passed since stop).
func (w *Writer) dispatchLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var drainBy time.Time // set when stop is closed
	for {
		b, ok := w.popRemote()
		if ok {
			if !drainBy.IsZero() && time.Now().After(drainBy) {
				w.dmu.Lock()
				left := w.dqLen
				w.dq, w.dqLen = nil, 0
				w.dmu.Unlock()
				w.cfg.Logger.Error("writer stopping: cross-node dispatch abandoned (entries wait in the inbox)", "entries", left)
				return
			}
			w.cfg.Dispatch(b)
			w.dmu.Lock()
			w.dqLen -= len(b)
			w.dmu.Unlock()
			continue
		}
		if !drainBy.IsZero() {
			return
		}
		select {
		case <-w.dwake:
		case <-stop:
			drainBy = time.Now().Add(dispatchDrain)
		}
	}
}
