// Package ledger implements the audit ledger of CCP-1 §11.1: a hash chain
// of records, kept nowhere (null), in log lines (debug) or in an
// append-only file of canonical JSON lines (file), and the verification
// behind `commucat-cli ledger verify` (§12.2).
//
// A record is the canonical JSON object
//
//	{"digest":hex32,"hash":hex32,"metadata":object,"prev":hex32,"recorded_at":RFC3339,"seq":int}
//
// where seq starts at 1 and increases by 1, prev is the previous record's
// hash (32 zero bytes for the first) and hash is identity.LedgerHash over
// prev, seq, recorded_at, digest and the canonical JSON of metadata.
//
// Ledger failures are returned to the caller, which logs them and never
// fails the operation that caused them (§11.1).
package ledger

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

// Ledger records events in a hash chain. Implementations are safe for
// concurrent use; concurrent Records are serialised into one chain.
type Ledger interface {
	// Record appends a record with the given digest and metadata.
	// metadata is any value that canonjson.Marshal encodes as a JSON
	// object whose numbers are all plain integers (§11.1: no fractional
	// numbers); a canonjson.Value is used as is.
	Record(ctx context.Context, digest [32]byte, metadata any) error
	// Close releases the ledger's resources. Record after Close fails
	// with ErrClosed.
	Close() error
}

// Modes of ledger.mode (§10.2, §11.1).
const (
	ModeNull  = "null"
	ModeDebug = "debug"
	ModeFile  = "file"
)

// MaxLineBytes bounds the length of one record line (without its "\n").
// Record refuses larger records and Verify reports longer lines as broken,
// so a garbage file cannot exhaust memory.
const MaxLineBytes = 1 << 20

// Errors.
var (
	// ErrClosed is returned by Record after Close.
	ErrClosed = errors.New("ledger: closed")
	// ErrMetadata is wrapped by the error Record returns when the metadata
	// is not a JSON object of integers.
	ErrMetadata = errors.New("ledger: invalid metadata")
)

// New returns the ledger for a ledger.mode and ledger.target (§10.2): null,
// debug (records logged at info level on log) or file (OpenFile(target)).
// A nil now means time.Now; a nil log discards log output.
func New(mode, target string, now func() time.Time, log *slog.Logger) (Ledger, error) {
	switch mode {
	case ModeNull:
		return Null{}, nil
	case ModeDebug:
		return NewDebug(now, log), nil
	case ModeFile:
		if target == "" {
			return nil, errors.New("ledger: mode file requires ledger.target")
		}
		f, err := OpenFile(target, now, log)
		if err != nil {
			return nil, err
		}
		return f, nil
	default:
		return nil, fmt.Errorf("ledger: unknown mode %q (want null, debug or file)", mode)
	}
}

// Null records nothing.
type Null struct{}

// Record does nothing and returns nil.
func (Null) Record(context.Context, [32]byte, any) error { return nil }

// Close does nothing.
func (Null) Close() error { return nil }

func orNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// chain is the head of a hash chain: the last record's seq and hash
// (0 and 32 zero bytes before the first record).
type chain struct {
	seq  uint64
	hash [32]byte
}

// next builds the record that follows c, without advancing c. The line
// has no trailing newline.
func (c *chain) next(at time.Time, digest [32]byte, meta []byte) (line []byte, seq uint64, hash [32]byte) {
	seq = c.seq + 1
	recordedAt := canonjson.FormatTime(at)
	hash = identity.LedgerHash(c.hash, seq, recordedAt, digest, meta)
	return appendRecord(nil, digest, hash, meta, c.hash, recordedAt, seq), seq, hash
}

func (c *chain) advance(seq uint64, hash [32]byte) {
	c.seq, c.hash = seq, hash
}

// appendRecord appends the canonical JSON of a record (members in sorted
// order: digest, hash, metadata, prev, recorded_at, seq).
func appendRecord(dst []byte, digest, hash [32]byte, meta []byte, prev [32]byte, recordedAt string, seq uint64) []byte {
	dst = append(dst, `{"digest":"`...)
	dst = hex.AppendEncode(dst, digest[:])
	dst = append(dst, `","hash":"`...)
	dst = hex.AppendEncode(dst, hash[:])
	dst = append(dst, `","metadata":`...)
	dst = append(dst, meta...)
	dst = append(dst, `,"prev":"`...)
	dst = hex.AppendEncode(dst, prev[:])
	dst = append(dst, `","recorded_at":`...)
	dst = canonjson.AppendString(dst, recordedAt)
	dst = append(dst, `,"seq":`...)
	dst = canonjson.AppendUint(dst, seq)
	return append(dst, '}')
}

// maxMetadata leaves room in a line for the fixed members.
const maxMetadata = MaxLineBytes - 512

// canonicalMetadata returns the canonical JSON of metadata after checking
// that it is an object whose numbers are plain integers.
func canonicalMetadata(metadata any) ([]byte, error) {
	var v canonjson.Value
	switch m := metadata.(type) {
	case canonjson.Value:
		v = m
	case *canonjson.Value:
		if m == nil {
			return nil, fmt.Errorf("%w: nil", ErrMetadata)
		}
		v = *m
	default:
		b, err := canonjson.Marshal(metadata)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMetadata, err)
		}
		if v, err = canonjson.Parse(b); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMetadata, err)
		}
	}
	if v.Kind != canonjson.Object {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMetadata)
	}
	if n, ok := firstNonInteger(v); !ok {
		return nil, fmt.Errorf("%w: number %s is not a plain integer", ErrMetadata, n)
	}
	b := v.Canonical()
	if len(b) > maxMetadata {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMetadata, len(b), maxMetadata)
	}
	return b, nil
}

// firstNonInteger finds a number literal in v that is not a plain decimal
// integer (-?(0|[1-9][0-9]*)).
func firstNonInteger(v canonjson.Value) (string, bool) {
	switch v.Kind {
	case canonjson.Number:
		if !isPlainInteger(v.Num) {
			return v.Num, false
		}
	case canonjson.Array:
		for _, e := range v.Arr {
			if n, ok := firstNonInteger(e); !ok {
				return n, false
			}
		}
	case canonjson.Object:
		for _, m := range v.Obj {
			if n, ok := firstNonInteger(m.Value); !ok {
				return n, false
			}
		}
	}
	return "", true
}

func isPlainInteger(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
