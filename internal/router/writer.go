package router

import (
	"context"
	"errors"
	"log/slog"
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
	// Dispatch, if set, is called with the committed entries of recipients
	// that are not connected to this node (cross-node delivery, §9.4).
	Dispatch func(entries []store.InboxEntry)
}

// Writer group-commits inbox entries: concurrent Store calls are gathered
// into one transaction, so durability costs one disk sync per batch rather
// than per message. After the commit it hands the entries, in queue order,
// to the recipients' local connections, then releases the callers.
type Writer struct {
	cfg  WriterConfig
	reqs chan *writeReq
	done chan struct{}
}

type writeReq struct {
	entries []store.InboxEntry
	err     chan error // nil for deletes: nobody waits

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
	return &Writer{cfg: cfg, reqs: make(chan *writeReq, 1024), done: make(chan struct{})}
}

// Store durably stores the entries (assigning their QueueID in place) and
// delivers them to connected recipients. It returns after the commit.
func (w *Writer) Store(ctx context.Context, entries []store.InboxEntry) error {
	if len(entries) == 0 {
		return nil
	}
	req := &writeReq{entries: entries, err: make(chan error, 1)}
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
// wait for the commit: deletes ride along with the next batch (a delete
// lost in a crash only causes a redelivery, which at-least-once allows).
func (w *Writer) Delete(recipient string, queueIDs []int64) {
	if len(queueIDs) == 0 {
		return
	}
	select {
	case w.reqs <- &writeReq{recipient: recipient, deletes: queueIDs}:
	case <-w.done:
	}
}

// Run commits batches until ctx ends. Requests already taken are finished
// before it returns.
func (w *Writer) Run(ctx context.Context) {
	defer close(w.done)
	for {
		var first *writeReq
		select {
		case first = <-w.reqs:
		case <-ctx.Done():
			return
		}
		batch := []*writeReq{first}
		n := len(first.entries) + len(first.deletes)
	gather:
		for n < w.cfg.MaxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
				n += len(r.entries) + len(r.deletes)
			default:
				break gather
			}
		}
		w.commit(batch, n)
	}
}

func (w *Writer) commit(batch []*writeReq, n int) {
	// The commit must not be abandoned half-way when the server stops:
	// in-flight writes finish (§6.13), bounded by this timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := make([]store.InboxEntry, 0, n)
	for _, r := range batch {
		all = append(all, r.entries...)
	}
	err := w.cfg.Store.Tx(ctx, func(q store.Queries) error {
		for _, r := range batch {
			if len(r.deletes) > 0 {
				if err := q.DeleteInbox(ctx, r.recipient, r.deletes); err != nil {
					return err
				}
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
			w.commit([]*writeReq{r}, len(r.entries)+len(r.deletes))
		}
		return
	}
	if err != nil {
		w.cfg.Logger.Error("inbox write failed", "entries", len(all), "deletes", len(batch[0].deletes), "err", err)
		if batch[0].err != nil {
			batch[0].err <- err
		}
		return
	}
	// Copy the assigned ids back into the callers' slices.
	i := 0
	for _, r := range batch {
		for j := range r.entries {
			r.entries[j].QueueID = all[i].QueueID
			i++
		}
	}
	if len(all) == 0 {
		return
	}
	if w.cfg.OnCommit != nil {
		w.cfg.OnCommit(len(all))
	}
	w.dispatch(all)
	for _, r := range batch {
		if r.err != nil {
			r.err <- nil
		}
	}
}

// dispatch hands committed entries to local connections, grouped per
// recipient in queue order.
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
		w.cfg.Dispatch(remote)
	}
}
