package ledger

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
)

// Debug writes each record as one log line at info level (message
// "ledger record", attribute "record" holding the canonical JSON record)
// and keeps only the chain head in memory. It logs nothing else.
//
// A session id is a bearer token (§8.2) and secrets never reach logs, so
// the logged copy of a session-start record shows "session" as
// "[redacted]"; the chain (hash, prev) is computed over the real record,
// as the file ledger stores it.
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
	d.log.LogAttrs(ctx, slog.LevelInfo, "ledger record", slog.String("record", redactSession(string(line), meta)))
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

// redactSession replaces the value of metadata member "session" in the
// record line.
func redactSession(line string, meta []byte) string {
	v, err := canonjson.Parse(meta)
	if err != nil {
		return line
	}
	sess, ok := v.Get("session")
	if !ok || sess.Kind != canonjson.String || sess.Str == "" {
		return line
	}
	old := string(canonjson.AppendString([]byte(`"session":`), sess.Str))
	return strings.Replace(line, old, `"session":"[redacted]"`, 1)
}
