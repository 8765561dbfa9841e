package ledger

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Debug writes each record as one log line at info level (message
// "ledger record", attribute "record" holding the canonical JSON record)
// and keeps only the chain head in memory. It logs nothing else.
type Debug struct {
	now func() time.Time
	log *slog.Logger

	mu     sync.Mutex
	head   chain
	closed bool
}

// NewDebug returns a Debug ledger with an empty chain. A nil now means
// time.Now; a nil log discards the records.
func NewDebug(now func() time.Time, log *slog.Logger) *Debug {
	return &Debug{now: orNow(now), log: orDiscard(log)}
}

// Record logs the next record of the chain.
func (d *Debug) Record(ctx context.Context, digest [32]byte, metadata any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	meta, err := canonicalMetadata(metadata)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	line, seq, hash := d.head.next(d.now(), digest, meta)
	if len(line) > MaxLineBytes {
		return errLineTooLong(len(line))
	}
	d.head.advance(seq, hash)
	d.log.LogAttrs(ctx, slog.LevelInfo, "ledger record", slog.String("record", string(line)))
	return nil
}

// Head returns the seq and hash of the last record (0 and zero bytes when
// none was recorded).
func (d *Debug) Head() (seq uint64, hash [32]byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.head.seq, d.head.hash
}

// Close makes further Records fail with ErrClosed.
func (d *Debug) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}
