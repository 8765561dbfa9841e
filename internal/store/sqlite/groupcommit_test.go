package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// queued reports how many Tx calls wait behind the running batch.
func (s *Store) queued() int {
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	return len(s.gc.queue)
}

// holdWriter starts a Tx that holds the writer until release is closed,
// and returns once it runs; done gets its result.
func holdWriter(t *testing.T, s *Store) (release chan struct{}, done chan error) {
	t.Helper()
	release, done = make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.Tx(t.Context(), func(q store.Queries) error { <-release; return nil })
	}()
	for !s.busy() {
		time.Sleep(time.Millisecond)
	}
	return release, done
}

// busy reports whether a batch is running.
func (s *Store) busy() bool {
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	return s.gc.running
}

func mkUser(i int) store.User {
	now := time.Unix(1_700_000_000, 0).UTC()
	return store.User{ID: fmt.Sprintf("u%03d", i), Handle: fmt.Sprintf("h%03d", i), CreatedAt: now, UpdatedAt: now}
}

// TestGroupCommitIsolatesFailures queues many Tx calls behind a blocked
// one, so that they run as one batch, and checks that each call's outcome
// is its own: the successful ones are committed, the failing and the
// panicking ones leave nothing behind, and every caller gets its own result.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const n = 24
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Tx(ctx, func(q store.Queries) error {
			<-release
			return q.CreateUser(ctx, mkUser(999))
		})
	}()
	// Wait until the first call holds the writer.
	for !s.busy() {
		time.Sleep(time.Millisecond)
	}
	errFail := errors.New("caller failure")
	var wg sync.WaitGroup
	results := make([]error, n)
	panics := make([]any, n)
	for i := range n {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			results[i] = s.Tx(ctx, func(q store.Queries) error {
				if err := q.CreateUser(ctx, mkUser(i)); err != nil {
					return err
				}
				switch i % 3 {
				case 1:
					return errFail
				case 2:
					if i%2 == 0 {
						panic(fmt.Sprintf("boom %d", i))
					}
				}
				return nil
			})
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.queued() < n && time.Now().Before(deadline) { // n waiting behind the first batch
		time.Sleep(time.Millisecond)
	}
	if got := s.queued(); got != n {
		t.Fatalf("%d calls queued, want %d", got, n)
	}
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first Tx: %v", err)
	}
	for i := range n {
		_, err := s.GetUser(ctx, mkUser(i).ID)
		switch {
		case i%3 == 1:
			if !errors.Is(results[i], errFail) {
				t.Errorf("call %d returned %v, want its own error", i, results[i])
			}
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("call %d failed but its user exists (%v)", i, err)
			}
		case i%3 == 2 && i%2 == 0:
			if panics[i] != fmt.Sprintf("boom %d", i) {
				t.Errorf("call %d: panic %v did not reach its caller", i, panics[i])
			}
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("call %d panicked but its user exists (%v)", i, err)
			}
		default:
			if results[i] != nil || panics[i] != nil {
				t.Errorf("call %d: %v / panic %v, want success", i, results[i], panics[i])
			}
			if err != nil {
				t.Errorf("call %d succeeded but its user is missing: %v", i, err)
			}
		}
	}
	if got := s.queued(); got != 0 || s.busy() {
		t.Errorf("after the batch: %d queued, running %v", got, s.busy())
	}
}

// TestGroupCommitCancelledBeforeRun: a call whose context ends while it
// waits for the batch in progress is not run.
func TestGroupCommitCancelledBeforeRun(t *testing.T) {
	s := openTemp(t)
	release, done := holdWriter(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	ran := false
	res := make(chan error, 1)
	go func() {
		res <- s.Tx(ctx, func(q store.Queries) error { ran = true; return q.CreateUser(ctx, mkUser(1)) })
	}()
	for s.queued() < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-res; err == nil || ran {
		t.Fatalf("cancelled call: err %v, ran %v; want an error and not run", err, ran)
	}
}

// TestGroupCommitConcurrentStress: many callers, all succeed, all rows there.
func TestGroupCommitConcurrentStress(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	const n = 200
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Tx(ctx, func(q store.Queries) error { return q.CreateUser(ctx, mkUser(i)) })
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Tx %d: %v", i, errs[i])
		}
		if _, err := s.GetUser(ctx, mkUser(i).ID); err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
	}
}

// TestGroupCommitQueuedCallerTimesOut: a caller waiting behind a batch
// that does not finish returns when its context ends, and its function
// never runs.
func TestGroupCommitQueuedCallerTimesOut(t *testing.T) {
	s := openTemp(t)
	release, done := holdWriter(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	ran := make(chan struct{}, 1)
	err := s.Tx(ctx, func(q store.Queries) error { ran <- struct{}{}; return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued Tx: %v, want the context's deadline", err)
	}
	if got := s.queued(); got != 0 {
		t.Errorf("%d calls still queued after the timeout", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
		t.Fatal("the timed-out function ran")
	default:
	}
	// The writer is idle again and works.
	if err := s.Tx(t.Context(), func(q store.Queries) error { return q.CreateUser(t.Context(), mkUser(7)) }); err != nil {
		t.Fatal(err)
	}
}

// TestGroupCommitDatabaseAbort: when SQLite ends the shared transaction by
// itself in the middle of a batch (simulated by a ROLLBACK after the
// second function), the functions run before lose their writes and get an
// error, and the ones not run yet are retried in a new transaction and
// succeed: no caller is told "committed" for writes that are gone.
func TestGroupCommitDatabaseAbort(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	release, first := holdWriter(t, s)
	var once sync.Once
	s.gc.afterCall = func(tx *sql.Tx, i int) {
		if i == 1 {
			once.Do(func() {
				if _, err := tx.ExecContext(ctx, "ROLLBACK"); err != nil {
					t.Errorf("simulated abort: %v", err)
				}
			})
		}
	}
	const n = 5
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Tx(ctx, func(q store.Queries) error { return q.CreateUser(ctx, mkUser(i)) })
		})
		// Queue them in order: the batch runs them in queue order.
		for s.queued() < i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range n {
		_, gerr := s.GetUser(ctx, mkUser(i).ID)
		switch i {
		case 0, 1:
			if errs[i] == nil {
				t.Errorf("call %d: nil error although its writes were rolled back", i)
			}
			if !errors.Is(gerr, store.ErrNotFound) {
				t.Errorf("call %d: user present (%v) after the abort", i, gerr)
			}
		default:
			if errs[i] != nil || gerr != nil {
				t.Errorf("call %d: %v, user: %v; want retried and committed", i, errs[i], gerr)
			}
		}
	}
	if !errors.Is(errs[0], errBatchAborted) {
		t.Errorf("call 0: %v, want errBatchAborted", errs[0])
	}
}
