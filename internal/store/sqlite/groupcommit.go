package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/commucat/commucat/internal/store"
)

// Group commit of Tx.
//
// Every Tx commits on the one writer connection, and with synchronous =
// FULL every commit is a disk sync. Transactions that arrive while another
// batch is being written are therefore combined: the caller that finds the
// writer idle becomes the leader and runs the queued functions one after
// the other inside ONE transaction, each in its own SAVEPOINT, then commits
// once and reports the outcome to every caller. A function that fails (or
// panics) is rolled back to its savepoint and leaves the others alone;
// the commit's error, if any, goes to every function that had succeeded.
// Nobody returns before the transaction holding its writes has committed
// (or failed), so durability is the same as one transaction per call.
//
// Leadership passes on after one batch: the leader's own function is the
// first of its batch, so a caller never waits behind more than the batch
// in progress and its own.
//
// If SQLite rolls the whole transaction back by itself (SQLITE_FULL,
// SQLITE_IOERR, ...: a savepoint then no longer exists), the functions
// already run in the batch get the error, and the ones not yet run go back
// to the head of the queue for the next batch.

// maxTxBatch bounds the functions of one group commit.
const maxTxBatch = 64

// errBatchAborted is returned to the functions whose writes were lost when
// SQLite aborted the shared transaction because of another function.
var errBatchAborted = errors.New("sqlite: transaction aborted by the database")

type txReq struct {
	ctx  context.Context
	fn   func(q store.Queries) error
	wake chan struct{} // one signal: done, or lead (set before)
	lead bool

	err      error
	panicked bool
	pval     any
	changes  txChanges
}

type groupCommit struct {
	mu      sync.Mutex
	queue   []*txReq
	running bool
	// afterCall, when set (tests only), runs after the i-th function of
	// a batch, on the batch's transaction.
	afterCall func(tx *sql.Tx, i int)
}

// Tx runs fn in a BEGIN IMMEDIATE transaction on the writer connection,
// possibly shared with other concurrent Tx calls (see above): fn's writes
// are committed when fn returns nil and Tx returns nil, and rolled back
// when fn returns an error (returned unchanged) or panics (the panic goes
// on in the caller). The Queries must not be used after fn returns.
// Nested Tx is not supported; see the package documentation.
func (s *Store) Tx(ctx context.Context, fn func(q store.Queries) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	r := &txReq{ctx: ctx, fn: fn, wake: make(chan struct{}, 1)}
	g := &s.gc
	g.mu.Lock()
	g.queue = append(g.queue, r)
	if !g.running {
		g.running = true
		r.lead = true
		g.mu.Unlock()
	} else {
		g.mu.Unlock()
		r.wait(g)
	}
	if r.lead {
		s.lead(r)
	}
	if r.panicked {
		panic(r.pval)
	}
	return r.err
}

// wait waits for the signal (done, or lead). A caller whose context ends
// while it is still queued leaves the queue and gets the context's error,
// as it did when it waited for the writer connection itself; once its
// function is in a running batch it waits for that batch.
func (r *txReq) wait(g *groupCommit) {
	select {
	case <-r.wake:
		return
	case <-r.ctx.Done():
	}
	g.mu.Lock()
	if i := slices.Index(g.queue, r); i >= 0 && !r.lead {
		g.queue = slices.Delete(g.queue, i, i+1)
		g.mu.Unlock()
		r.err = fmt.Errorf("sqlite: begin: %w", r.ctx.Err())
		return
	}
	g.mu.Unlock()
	<-r.wake
}

// lead runs one batch (self is its first function), then hands the
// leadership to the next waiting caller or marks the writer idle.
func (s *Store) lead(self *txReq) {
	g := &s.gc
	g.mu.Lock()
	n := min(len(g.queue), maxTxBatch)
	batch := make([]*txReq, n)
	copy(batch, g.queue)
	g.queue = append(g.queue[:0], g.queue[n:]...)
	g.mu.Unlock()

	retry := s.runBatch(batch)

	g.mu.Lock()
	if len(retry) > 0 {
		g.queue = append(retry, g.queue...)
	}
	var next *txReq
	if len(g.queue) > 0 {
		next = g.queue[0]
		next.lead = true
	} else {
		g.running = false
	}
	g.mu.Unlock()
	for _, r := range batch {
		if r != self && !slices.Contains(retry, r) {
			r.wake <- struct{}{}
		}
	}
	if next != nil && next != self {
		next.wake <- struct{}{}
	}
}

// call runs r.fn, turning a panic into r.panicked.
func (r *txReq) call(q *queries) (err error) {
	defer func() {
		if v := recover(); v != nil {
			r.panicked, r.pval = true, v
			err = errors.New("sqlite: transaction function panicked")
		}
	}()
	return r.fn(q)
}

// runBatch runs the batch in one transaction and sets every function's
// outcome, except for the ones it returns: those were not run (the
// database aborted the transaction first) and must be retried.
func (s *Store) runBatch(batch []*txReq) (retry []*txReq) {
	bg := context.Background()
	defer func() {
		for _, r := range batch {
			r.changes.apply(s.sh.members)
		}
		s.sh.wstmts.preparePending(bg)
	}()
	tx, err := s.writer.BeginTx(bg, nil)
	if err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("sqlite: begin: %w", err)
		}
		return nil
	}
	ex := txExecer(tx, s.sh.wstmts)
	single := len(batch) == 1
	var ok []*txReq
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = fmt.Errorf("sqlite: begin: %w", err)
			continue
		}
		if !single {
			if _, err := tx.ExecContext(bg, `SAVEPOINT commucat_tx`); err != nil {
				return s.abort(tx, ok, r, fmt.Errorf("sqlite: savepoint: %w", err), batch[i+1:])
			}
		}
		ferr := r.call(&queries{w: ex, r: ex, sh: s.sh, tc: &r.changes})
		if s.gc.afterCall != nil {
			s.gc.afterCall(tx, i)
		}
		if ferr != nil {
			r.err = ferr
			if single {
				_ = tx.Rollback()
				return nil
			}
			if _, err := tx.ExecContext(bg, `ROLLBACK TO commucat_tx`); err != nil {
				return s.abort(tx, ok, nil, nil, batch[i+1:])
			}
			if _, err := tx.ExecContext(bg, `RELEASE commucat_tx`); err != nil {
				return s.abort(tx, ok, nil, nil, batch[i+1:])
			}
			continue
		}
		if !single {
			if _, err := tx.ExecContext(bg, `RELEASE commucat_tx`); err != nil {
				return s.abort(tx, ok, r, fmt.Errorf("sqlite: release savepoint: %w", err), batch[i+1:])
			}
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		_ = tx.Rollback()
		return nil
	}
	if err := tx.Commit(); err != nil {
		for _, r := range ok {
			r.err = fmt.Errorf("sqlite: commit: %w", err)
		}
	}
	return nil
}

// abort ends a batch whose transaction the database rolled back: the
// functions already run lose their writes, failed (if not nil) gets err,
// and rest is returned to be retried.
func (s *Store) abort(tx *sql.Tx, ran []*txReq, failed *txReq, err error, rest []*txReq) []*txReq {
	_ = tx.Rollback()
	for _, r := range ran {
		r.err = errBatchAborted
	}
	if failed != nil && failed.err == nil {
		failed.err = err
	}
	return rest
}
