package ledger

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
)

// Result is the outcome of Verify, with the fields `commucat-cli ledger
// verify` prints (§12.2).
type Result struct {
	// Records is the number of valid records (before the failing line,
	// if any).
	Records int
	// Head is the hash of the last valid record in hex, or "none".
	Head string
	// Line is the 1-based line number of the first problem; 0 when the
	// ledger is valid.
	Line int
	// Reason describes the problem; empty when the ledger is valid.
	Reason string
}

// OK reports whether the ledger verified.
func (r Result) OK() bool { return r.Line == 0 && r.Reason == "" }

// VerifyError is the error Verify returns for a broken ledger.
type VerifyError struct {
	Line   int
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("ledger: line %d: %s", e.Line, e.Reason)
}

func errLineTooLong(n int) error {
	return fmt.Errorf("ledger: record of %d bytes exceeds %d bytes", n, MaxLineBytes)
}

// Verify checks a file ledger (§12.2 `ledger verify`): every line is a
// record (canonical JSON with exactly the six members of §11.1, well
// formed), seq runs 1, 2, 3…, each prev equals the preceding hash (32 zero
// bytes for the first) and every hash recomputes. Every line, the last
// included, must end with "\n" (a last line without one is incomplete and
// would be cut by the server at start); lines longer than MaxLineBytes are
// rejected without being read in full. An empty input is a valid ledger
// with no records.
//
// For a broken ledger Verify returns a Result with Line and Reason set and
// a *VerifyError; for a read error it returns the records verified so far
// and the error (Line 0). Verify never panics.
func Verify(r io.Reader) (Result, error) {
	res := Result{Head: "none"}
	var head chain
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	broken := func(line int, reason string) (Result, error) {
		res.Line, res.Reason = line, reason
		return res, &VerifyError{Line: line, Reason: reason}
	}
	for lineNo := 1; ; lineNo++ {
		buf = buf[:0]
		var err error
		for {
			chunk, e := br.ReadSlice('\n')
			if len(buf)+len(chunk) > MaxLineBytes+1 {
				return broken(lineNo, fmt.Sprintf("line longer than %d bytes", MaxLineBytes))
			}
			buf = append(buf, chunk...)
			if e == bufio.ErrBufferFull {
				continue
			}
			err = e
			break
		}
		switch {
		case err == io.EOF && len(buf) == 0:
			return res, nil
		case err == io.EOF:
			return broken(lineNo, "incomplete last line (no trailing newline)")
		case err != nil:
			return res, fmt.Errorf("ledger: reading line %d: %w", lineNo, err)
		}
		rec, reason := parseRecord(buf[:len(buf)-1])
		if reason != "" {
			return broken(lineNo, reason)
		}
		if reason := checkLink(&rec, &head); reason != "" {
			return broken(lineNo, reason)
		}
		head.advance(rec.seq, rec.hash)
		res.Records++
		res.Head = hex.EncodeToString(rec.hash[:])
	}
}

// record is a parsed ledger line.
type record struct {
	digest, hash, prev [32]byte
	recordedAt         string
	seq                uint64
	meta               []byte // canonical JSON of metadata
}

var recordMembers = [...]string{"digest", "hash", "metadata", "prev", "recorded_at", "seq"}

// parseRecord parses one line (without "\n") and checks its form and its
// hash, but not its place in the chain. It returns a reason on failure.
func parseRecord(line []byte) (record, string) {
	var rec record
	if len(line) == 0 {
		return rec, "empty line"
	}
	v, err := canonjson.Parse(line)
	if err != nil {
		if errors.Is(err, canonjson.ErrDuplicateKey) {
			return rec, "duplicate member name"
		}
		return rec, "invalid JSON"
	}
	if v.Kind != canonjson.Object {
		return rec, "record is not a JSON object"
	}
	var seen [len(recordMembers)]bool
	for _, m := range v.Obj {
		i := memberIndex(m.Key)
		if i < 0 {
			return rec, "unexpected member " + strconv.Quote(m.Key)
		}
		seen[i] = true
		var reason string
		switch m.Key {
		case "digest":
			rec.digest, reason = hex32Member(m)
		case "hash":
			rec.hash, reason = hex32Member(m)
		case "prev":
			rec.prev, reason = hex32Member(m)
		case "metadata":
			if m.Value.Kind != canonjson.Object {
				reason = "metadata is not an object"
			} else {
				rec.meta = m.Value.Canonical()
			}
		case "recorded_at":
			if m.Value.Kind != canonjson.String {
				reason = "recorded_at is not a string"
			} else if _, err := canonjson.ParseTime(m.Value.Str); err != nil {
				reason = "recorded_at is not an RFC 3339 timestamp"
			} else {
				rec.recordedAt = m.Value.Str
			}
		case "seq":
			var err error
			if m.Value.Kind != canonjson.Number || !isPlainInteger(m.Value.Num) {
				reason = "seq is not an integer"
			} else if rec.seq, err = strconv.ParseUint(m.Value.Num, 10, 64); err != nil || rec.seq == 0 {
				reason = "seq is not a positive 64-bit integer"
			}
		}
		if reason != "" {
			return rec, reason
		}
	}
	for i, ok := range seen {
		if !ok {
			return rec, "missing member " + strconv.Quote(recordMembers[i])
		}
	}
	if !bytes.Equal(v.Canonical(), line) {
		return rec, "record is not in canonical JSON form"
	}
	if identity.LedgerHash(rec.prev, rec.seq, rec.recordedAt, rec.digest, rec.meta) != rec.hash {
		return rec, "hash does not match the record"
	}
	return rec, ""
}

// checkLink checks that rec follows head in the chain.
func checkLink(rec *record, head *chain) string {
	if rec.seq != head.seq+1 {
		return fmt.Sprintf("seq %d, expected %d", rec.seq, head.seq+1)
	}
	if rec.prev != head.hash {
		if head.seq == 0 {
			return "prev of the first record is not 32 zero bytes"
		}
		return "prev does not match the hash of the preceding record"
	}
	return ""
}

func memberIndex(key string) int {
	for i, k := range recordMembers {
		if k == key {
			return i
		}
	}
	return -1
}

func hex32Member(m canonjson.Member) ([32]byte, string) {
	if m.Value.Kind != canonjson.String {
		return [32]byte{}, m.Key + " is not a string"
	}
	b, err := identity.DecodeHex32(m.Value.Str)
	if err != nil {
		return [32]byte{}, m.Key + " is not hex32"
	}
	return b, ""
}
