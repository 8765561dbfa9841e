package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/store"
)

// fakeStore implements the part of store.Store the Writer uses.
type fakeStore struct {
	store.Store // nil: any other method panics

	mu          sync.Mutex
	txs         int
	txDeletes   []int // deletes (ids) per transaction
	txEntries   []int // entries per transaction
	deleteCalls int
	deleted     map[string][]int64
	nextID      int64
	failEnv     string // EnqueueInbox fails when an entry has this envelope id
	// onEnqueue, if set, runs inside EnqueueInbox (the commit in progress).
	onEnqueue func()
}

func newFakeStore() *fakeStore { return &fakeStore{deleted: make(map[string][]int64)} }

type fakeTx struct {
	store.Queries
	f                *fakeStore
	deletes, entries int
	ids              int64
}

func (f *fakeStore) Tx(ctx context.Context, fn func(q store.Queries) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := &fakeTx{f: f, ids: f.nextID}
	if err := fn(q); err != nil {
		return err
	}
	f.nextID = q.ids
	f.txs++
	f.txDeletes = append(f.txDeletes, q.deletes)
	f.txEntries = append(f.txEntries, q.entries)
	return nil
}

func (q *fakeTx) DeleteInbox(ctx context.Context, recipient string, ids []int64) error {
	q.f.deleteCalls++
	q.deletes += len(ids)
	q.f.deleted[recipient] = append(q.f.deleted[recipient], ids...)
	return nil
}

func (q *fakeTx) EnqueueInbox(ctx context.Context, entries []store.InboxEntry) ([]int64, error) {
	if q.f.onEnqueue != nil {
		q.f.onEnqueue()
	}
	out := make([]int64, len(entries))
	for i, e := range entries {
		if q.f.failEnv != "" && e.EnvelopeID == q.f.failEnv {
			return nil, errors.New("bad entry")
		}
		q.ids++
		out[i] = q.ids
	}
	q.entries += len(entries)
	return out, nil
}

func (f *fakeStore) stats() (txs, deleteCalls int, deleted map[string][]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := make(map[string][]int64, len(f.deleted))
	for k, v := range f.deleted {
		d[k] = slices.Clone(v)
	}
	return f.txs, f.deleteCalls, d
}

// fakePeer records inbox deliveries.
type fakePeer struct {
	id  string
	mu  sync.Mutex
	got []int64
}

func (p *fakePeer) DeviceID() string                               { return p.id }
func (p *fakePeer) SessionID() string                              { return "s-" + p.id }
func (p *fakePeer) DeliverLive(ccp.FrameType, uint32, []byte) bool { return true }
func (p *fakePeer) RequestCatchup(int64)                           {}
func (p *fakePeer) Kick(KickReason)                                {}
func (p *fakePeer) WantsPresence() bool                            { return false }
func (p *fakePeer) DeliverInbox(entries []store.InboxEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		p.got = append(p.got, e.QueueID)
	}
}

func entry(recipient string, n int) store.InboxEntry {
	return store.InboxEntry{EnvelopeID: fmt.Sprintf("env-%s-%d", recipient, n), Recipient: recipient, Sender: "s", Channel: 1}
}

// startWriter runs w until the test ends (or stop is called) and returns
// stop, which cancels Run and waits for it.
func startWriter(t *testing.T, w *Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitTaken waits until Run has taken every queued request.
func waitTaken(t *testing.T, w *Writer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(w.reqs) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run does not take requests")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // past the gather loop
}

func TestWriterStoreAssignsIDsAndDeliversLocally(t *testing.T) {
	fs := newFakeStore()
	reg := NewRegistry()
	p := &fakePeer{id: "d1"}
	reg.Register(p)
	w := NewWriter(WriterConfig{Store: fs, Registry: reg})
	startWriter(t, w)

	es := []store.InboxEntry{entry("d1", 1), entry("d1", 2)}
	if err := w.Store(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	if es[0].QueueID == 0 || es[1].QueueID <= es[0].QueueID {
		t.Fatalf("queue ids %d, %d", es[0].QueueID, es[1].QueueID)
	}
	p.mu.Lock()
	got := slices.Clone(p.got)
	p.mu.Unlock()
	if !slices.Equal(got, []int64{es[0].QueueID, es[1].QueueID}) {
		t.Fatalf("delivered %v", got)
	}
}

// A Dispatch that blocks (a bus that does not answer) must not delay
// commits, and Run must wait for the calls in progress when it stops.
func TestWriterSlowDispatchDoesNotDelayStore(t *testing.T) {
	fs := newFakeStore()
	release := make(chan struct{})
	var (
		mu         sync.Mutex
		dispatched []int64
		finished   atomic.Bool
	)
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), Dispatch: func(es []store.InboxEntry) {
		<-release
		mu.Lock()
		for _, e := range es {
			dispatched = append(dispatched, e.QueueID)
		}
		mu.Unlock()
		finished.Store(true)
	}})
	stop := startWriter(t, w)

	const n = 50
	var want []int64
	start := time.Now()
	for i := range n {
		es := []store.InboxEntry{entry("remote", i)}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := w.Store(ctx, es)
		cancel()
		if err != nil {
			t.Fatalf("Store %d with Dispatch blocked: %v", i, err)
		}
		want = append(want, es[0].QueueID)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stores took %v", d)
	}
	close(release)
	stop()
	if !finished.Load() {
		t.Fatal("Run returned before Dispatch finished")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(dispatched, want) {
		t.Fatalf("dispatched %v, want %v (commit order)", dispatched, want)
	}
}

func TestWriterDispatchQueueBounded(t *testing.T) {
	fs := newFakeStore()
	release := make(chan struct{})
	var calls atomic.Int64
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), DispatchQueue: 3, Dispatch: func(es []store.InboxEntry) {
		<-release
		calls.Add(int64(len(es)))
	}})
	stop := startWriter(t, w)
	for i := range 10 {
		if err := w.Store(t.Context(), []store.InboxEntry{entry("remote", i)}); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	stop()
	// One batch in Dispatch (counted in the bound) plus two queued at most.
	if c := calls.Load(); c < 1 || c > 3 {
		t.Fatalf("dispatched %d entries with a queue of 3", c)
	}
}

// Deletes of one recipient are coalesced and ride along with the next
// stored batch instead of committing on their own.
func TestWriterDeletesRideAlong(t *testing.T) {
	fs := newFakeStore()
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), DeleteLinger: time.Hour})
	startWriter(t, w)
	w.Delete("d1", []int64{1, 2})
	w.Delete("d2", []int64{7})
	w.Delete("d1", []int64{3})
	// Let Run take the deletes (they are held, not committed).
	waitTaken(t, w)
	if txs, _, _ := fs.stats(); txs != 0 {
		t.Fatalf("%d transactions for deletes alone, want them held", txs)
	}
	if err := w.Store(t.Context(), []store.InboxEntry{entry("d3", 1)}); err != nil {
		t.Fatal(err)
	}
	txs, calls, deleted := fs.stats()
	if txs != 1 {
		t.Fatalf("%d transactions, want 1", txs)
	}
	if calls != 2 {
		t.Fatalf("%d DeleteInbox calls, want 2 (one per recipient)", calls)
	}
	if !slices.Equal(deleted["d1"], []int64{1, 2, 3}) || !slices.Equal(deleted["d2"], []int64{7}) {
		t.Fatalf("deleted %v", deleted)
	}
}

func TestWriterDeleteLingerCommits(t *testing.T) {
	fs := newFakeStore()
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), DeleteLinger: 10 * time.Millisecond})
	startWriter(t, w)
	w.Delete("d1", []int64{1})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, d := fs.stats(); slices.Equal(d["d1"], []int64{1}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("held delete never committed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The timer is re-armed for later deletes.
	w.Delete("d1", []int64{2})
	for {
		if _, _, d := fs.stats(); slices.Equal(d["d1"], []int64{1, 2}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second held delete never committed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWriterStopCommitsHeldDeletes(t *testing.T) {
	fs := newFakeStore()
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), DeleteLinger: time.Hour})
	stop := startWriter(t, w)
	w.Delete("d1", []int64{4, 5})
	waitTaken(t, w)
	stop()
	if _, _, d := fs.stats(); !slices.Equal(d["d1"], []int64{4, 5}) {
		t.Fatalf("deleted %v after stop", d)
	}
	if err := w.Store(t.Context(), []store.InboxEntry{entry("d1", 1)}); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Store after stop: %v", err)
	}
}

func TestWriterNoLinger(t *testing.T) {
	fs := newFakeStore()
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), DeleteLinger: -1})
	startWriter(t, w)
	w.Delete("d1", []int64{1})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if txs, _, _ := fs.stats(); txs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("delete not committed")
		}
		time.Sleep(time.Millisecond)
	}
}

// A failing request does not fail the others of its batch.
func TestWriterBadRequestIsolated(t *testing.T) {
	fs := newFakeStore()
	fs.failEnv = entry("d1", 99).EnvelopeID
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry()})
	startWriter(t, w)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			e := entry("d1", i)
			if i == 7 {
				e = entry("d1", 99)
			}
			errs[i] = w.Store(t.Context(), []store.InboxEntry{e})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 7) != (err != nil) {
			t.Errorf("request %d: %v", i, err)
		}
	}
}

// Concurrent stores, deletes and a cancelled Run leave no goroutine behind
// and lose no committed entry's dispatch.
func TestWriterConcurrentStop(t *testing.T) {
	fs := newFakeStore()
	var dispatched atomic.Int64
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), Dispatch: func(es []store.InboxEntry) {
		time.Sleep(time.Millisecond)
		dispatched.Add(int64(len(es)))
	}})
	stop := startWriter(t, w)
	var stored atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if w.Store(context.Background(), []store.InboxEntry{entry(fmt.Sprint("r", g), i)}) == nil {
					stored.Add(1)
				}
				w.Delete(fmt.Sprint("r", g), []int64{int64(i + 1)})
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	stop()
	wg.Wait()
	if d, s := dispatched.Load(), stored.Load(); d != s {
		t.Fatalf("dispatched %d of %d stored entries", d, s)
	}
}

// The early-delivery state machine: whoever comes first, the recipient's
// ACK or the commit, decides; exactly one party deletes a written row.
func TestEarlyStates(t *testing.T) {
	// ACK first: never written.
	var e Early
	if qid, stored := e.Ack(); stored || qid != 0 {
		t.Fatalf("pending Ack = %d, %v", qid, stored)
	}
	if e.claim() || !e.Settled() || !e.Unwritten() {
		t.Fatal("an acknowledged entry was claimed, or is not settled and unwritten")
	}
	// Commit first, ACK after: the caller deletes.
	var f Early
	if !f.claim() || f.Settled() {
		t.Fatal("claim failed, or a claimed entry is settled")
	}
	if !f.claim() {
		t.Fatal("a retry could not keep its claim")
	}
	if f.stored(42) {
		t.Fatal("stored reports an ACK that did not happen")
	}
	if qid, stored := f.Ack(); !stored || qid != 42 {
		t.Fatalf("Ack after the commit = %d, %v, want 42, true", qid, stored)
	}
	// ACK while the commit runs: the writer deletes, the caller does not.
	var g Early
	g.claim()
	if qid, stored := g.Ack(); stored || qid != 0 {
		t.Fatalf("Ack during the commit = %d, %v", qid, stored)
	}
	if g.Unwritten() {
		t.Fatal("an entry acknowledged during its commit reports unwritten")
	}
	if !g.stored(7) || !g.Settled() {
		t.Fatal("stored does not report the ACK during the commit")
	}
	// Failed commit: nothing to delete.
	var h Early
	h.claim()
	h.failed()
	if qid, stored := h.Ack(); stored || qid != 0 || !h.Settled() {
		t.Fatalf("Ack after a failed commit = %d, %v", qid, stored)
	}
}

// StoreEarly: an entry acknowledged before the commit is not written and
// not handed over; one acknowledged during the commit is written, not
// handed over, and deleted by a later transaction; the others are written
// and handed over (the recipient's connection recognises its early ones).
func TestWriterStoreEarly(t *testing.T) {
	fs := newFakeStore()
	reg := NewRegistry()
	p := &fakePeer{id: "d1"}
	reg.Register(p)
	var skipped atomic.Int64
	w := NewWriter(WriterConfig{Store: fs, Registry: reg, DeleteLinger: 5 * time.Millisecond,
		OnEarlyAcked: func(n int) { skipped.Add(int64(n)) }})
	startWriter(t, w)

	es := []store.InboxEntry{entry("d1", 1), entry("d1", 2), entry("d1", 3), entry("d1", 4)}
	acker := &fakePeer{id: "d1"} // the connection d1 acknowledged on, no longer registered
	before, during, after := new(Early), &Early{To: acker}, new(Early)
	early := []*Early{before, during, nil, after}
	before.Ack()
	fs.onEnqueue = func() { during.Ack() }
	if err := w.StoreEarly(t.Context(), es, early); err != nil {
		t.Fatal(err)
	}
	if es[0].QueueID != 0 {
		t.Errorf("the entry acknowledged before the commit got queue id %d", es[0].QueueID)
	}
	if es[1].QueueID == 0 || es[2].QueueID == 0 || es[3].QueueID == 0 {
		t.Fatalf("queue ids %d %d %d", es[1].QueueID, es[2].QueueID, es[3].QueueID)
	}
	if got := skipped.Load(); got != 1 {
		t.Errorf("OnEarlyAcked counted %d, want 1", got)
	}
	p.mu.Lock()
	got := slices.Clone(p.got)
	p.mu.Unlock()
	if !slices.Equal(got, []int64{es[2].QueueID, es[3].QueueID}) {
		t.Errorf("handed over %v, want %v", got, []int64{es[2].QueueID, es[3].QueueID})
	}
	acker.mu.Lock()
	gotAcker := slices.Clone(acker.got)
	acker.mu.Unlock()
	if !slices.Equal(gotAcker, []int64{es[1].QueueID}) {
		t.Errorf("handed to the acknowledging connection %v, want %v", gotAcker, []int64{es[1].QueueID})
	}
	if qid, stored := after.Ack(); !stored || qid != es[3].QueueID {
		t.Errorf("Ack after the commit = %d, %v", qid, stored)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, d := fs.stats()
		if slices.Equal(d["d1"], []int64{es[1].QueueID}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted %v, want the entry acknowledged during its commit (%d)", d["d1"], es[1].QueueID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	fs.mu.Lock()
	first := fs.txEntries[0]
	fs.mu.Unlock()
	if first != 3 {
		t.Errorf("first transaction wrote %d entries, want 3", first)
	}

	// Every entry acknowledged first: nothing written, the caller is
	// still released.
	all := new(Early)
	all.Ack()
	if err := w.StoreEarly(t.Context(), []store.InboxEntry{entry("d1", 5)}, []*Early{all}); err != nil {
		t.Fatal(err)
	}
	if err := w.StoreEarly(t.Context(), []store.InboxEntry{entry("d1", 6)}, []*Early{nil, nil}); err == nil {
		t.Error("StoreEarly accepted early states of the wrong length")
	}
}

// A failed commit marks its early entries failed: a later ACK deletes
// nothing.
func TestWriterStoreEarlyFailure(t *testing.T) {
	fs := newFakeStore()
	fs.failEnv = "env-d1-1"
	w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry()})
	startWriter(t, w)
	h := new(Early)
	if err := w.StoreEarly(t.Context(), []store.InboxEntry{entry("d1", 1)}, []*Early{h}); err == nil {
		t.Fatal("the failing entry was stored")
	}
	if qid, stored := h.Ack(); stored || qid != 0 || !h.Settled() {
		t.Fatalf("Ack after a failed commit = %d, %v", qid, stored)
	}
}

// CommitLinger: a batch holding several callers' entries waits for more
// (a request arriving meanwhile shares the transaction); a lone caller is
// committed at once.
func TestWriterCommitLinger(t *testing.T) {
	t.Run("several callers wait for more", func(t *testing.T) {
		fs := newFakeStore()
		w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), CommitLinger: 300 * time.Millisecond})
		errc := make(chan error, 3)
		put := func(n int) { errc <- w.Store(t.Context(), []store.InboxEntry{entry("d1", n)}) }
		go put(1)
		go put(2)
		for deadline := time.Now().Add(5 * time.Second); len(w.reqs) < 2; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("requests not queued")
			}
		}
		startWriter(t, w)
		waitTaken(t, w)
		go put(3) // during the linger
		for range 3 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if !slices.Equal(fs.txEntries, []int{3}) {
			t.Fatalf("entries per transaction %v, want [3]", fs.txEntries)
		}
	})
	t.Run("a lone caller does not wait", func(t *testing.T) {
		fs := newFakeStore()
		w := NewWriter(WriterConfig{Store: fs, Registry: NewRegistry(), CommitLinger: time.Hour})
		startWriter(t, w)
		done := make(chan error, 1)
		go func() { done <- w.Store(t.Context(), []store.InboxEntry{entry("d1", 1)}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second): // far below the hour it would linger
			t.Fatal("a lone caller waited for the linger")
		}
	})
}
