package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// flushInterval is the period of the background fsync. It is below one
// second so that a record reaches the disk within a second of being written
// (§11.1: fsync at least once per second).
const flushInterval = 500 * time.Millisecond

// File appends records to a file, one canonical JSON record per line
// followed by "\n" (§11.1). Writes go to the file at once; a background
// goroutine owned by the File fsyncs it every flushInterval while there are
// unsynced writes, and Close stops that goroutine and fsyncs a last time.
//
// A failed write is rolled back (the file is truncated to its previous
// length) and the chain does not advance; if the rollback fails too, the
// File refuses further records rather than append to a damaged line.
//
// Appends from several processes (the server and `commucat-cli
// rotate-keys`, §12.2) are serialised with an exclusive flock on Unix:
// under the lock, a File whose size changed re-reads the chain head from
// the last line before it appends, so the chain stays intact.
type File struct {
	path string
	now  func() time.Time
	log  *slog.Logger

	mu     sync.Mutex
	f      *os.File
	head   chain
	size   int64 // length of the file, all complete lines
	dirty  bool  // written since the last fsync
	failed error // set when a failed write could not be rolled back
	closed bool

	stop chan struct{}
	done chan struct{}
}

// OpenFile opens (creating it with mode 0600 if needed) the ledger file at
// path and continues its chain from the last line (§11.1):
//
//   - trailing bytes after the last "\n" are an incomplete last line; they
//     are cut off (the file is truncated) and a warning is logged;
//   - the last complete line must then be a well-formed record whose hash
//     recomputes (seq 1 with a zero prev when it is the first line);
//     anything else is an error, so that the server refuses to start
//     (operators run `commucat-cli ledger verify`).
//
// Only the last line is checked. A nil now means time.Now; a nil log
// discards the warnings. The returned File must be closed.
func OpenFile(path string, now func() time.Time, log *slog.Logger) (*File, error) {
	log = orDiscard(log)
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	l := &File{path: path, now: orNow(now), log: log, f: f}
	if err := l.load(); err != nil {
		f.Close()
		return nil, err
	}
	if created {
		syncDir(path, log)
	}
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	go l.flushLoop()
	return l, nil
}

// load reads the tail of the file, cuts an incomplete last line and sets
// the chain head from the last complete line.
func (l *File) load() error {
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("ledger: %s is not a regular file", l.path)
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	// An incomplete last line: cut everything after the last newline.
	last, err := lastNewline(l.f, size, -1)
	if err != nil {
		return err
	}
	if end := last + 1; end != size {
		if err := l.f.Truncate(end); err != nil {
			return fmt.Errorf("ledger: cutting incomplete last line: %w", err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("ledger: cutting incomplete last line: %w", err)
		}
		l.log.Warn("ledger: cut incomplete last line", "path", l.path, "bytes", size-end, "size", end)
		size = end
	}
	l.size = size
	if size == 0 {
		return nil
	}
	// The last complete line lies between the newline before it (if any)
	// and the final newline.
	prevNL, err := lastNewline(l.f, size-1, MaxLineBytes+1)
	if err != nil {
		return err
	}
	start := prevNL + 1
	if size-1-start > MaxLineBytes {
		return fmt.Errorf("ledger: %s: last line longer than %d bytes; run ledger verify", l.path, MaxLineBytes)
	}
	line := make([]byte, size-1-start)
	if _, err := l.f.ReadAt(line, start); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	rec, reason := parseRecord(line)
	if reason == "" && start == 0 {
		reason = checkLink(&rec, &chain{})
	}
	if reason == "" && start > 0 && rec.seq < 2 {
		reason = fmt.Sprintf("seq %d on a line that is not the first", rec.seq)
	}
	if reason != "" {
		return fmt.Errorf("ledger: %s: last record is inconsistent (%s); run ledger verify", l.path, reason)
	}
	l.head.advance(rec.seq, rec.hash)
	return nil
}

// lastNewline returns the offset of the last '\n' in f before offset end,
// or -1 when there is none. When limit >= 0 it looks at most limit bytes
// back and returns end-limit-1 if no newline was found there (the caller
// treats that as "too long").
func lastNewline(f *os.File, end, limit int64) (int64, error) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	floor := int64(0)
	if limit >= 0 {
		floor = max(0, end-limit)
	}
	for pos := end; pos > floor; {
		n := min(int64(chunk), pos-floor)
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("ledger: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return pos + int64(i), nil
		}
	}
	if floor > 0 {
		return floor - 1, nil
	}
	return -1, nil
}

// syncDir fsyncs the directory holding path, so a new file's directory
// entry is durable. Failures are logged only.
func syncDir(path string, log *slog.Logger) {
	d, err := os.Open(filepath.Dir(path))
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		log.Warn("ledger: syncing directory", "path", filepath.Dir(path), "error", err)
	}
}

// Record appends the next record of the chain to the file.
func (l *File) Record(ctx context.Context, digest [32]byte, metadata any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	meta, err := canonicalMetadata(metadata)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return ErrClosed
	case l.failed != nil:
		return l.failed
	}
	if err := lockFile(l.f); err != nil {
		return fmt.Errorf("ledger: %s: lock: %w", l.path, err)
	}
	defer func() { _ = unlockFile(l.f) }()
	if err := l.catchUp(); err != nil {
		return err
	}
	line, seq, hash := l.head.next(l.now(), digest, meta)
	if len(line) > MaxLineBytes {
		return errLineTooLong(len(line))
	}
	line = append(line, '\n')
	n, err := l.f.Write(line)
	if err != nil {
		if n > 0 {
			if terr := l.f.Truncate(l.size); terr != nil {
				l.failed = fmt.Errorf("ledger: %s: rolling back a failed write: %w (write: %v)", l.path, terr, err)
				l.log.Error("ledger: file damaged, recording stopped", "path", l.path, "error", l.failed)
			}
		}
		return fmt.Errorf("ledger: %s: %w", l.path, err)
	}
	l.size += int64(n)
	l.dirty = true
	l.head.advance(seq, hash)
	return nil
}

// catchUp re-reads the chain head when another process appended to the
// file since this File last wrote (the caller holds the lock).
func (l *File) catchUp() error {
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if fi.Size() == l.size {
		return nil
	}
	l.head = chain{}
	l.size = 0
	return l.load()
}

// Head returns the seq and hash of the last record (0 and zero bytes for an
// empty ledger).
func (l *File) Head() (seq uint64, hash [32]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head.seq, l.head.hash
}

func (l *File) flushLoop() {
	defer close(l.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.flush()
		}
	}
}

// flush fsyncs the file if it was written since the last fsync. The fsync
// runs outside the mutex so Records are not held up; Close waits for the
// flusher to stop before it closes the file.
func (l *File) flush() {
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return
	}
	l.dirty = false
	l.mu.Unlock()
	if err := l.f.Sync(); err != nil {
		l.log.Error("ledger: fsync", "path", l.path, "error", err)
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
	}
}

// Close stops the flusher, fsyncs and closes the file. Further Records fail
// with ErrClosed; a second Close returns nil.
func (l *File) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ledger: closing %s: %w", l.path, err)
	}
	return nil
}
