package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"lukechampine.com/blake3"
)

const vectorHead = "474cd14b095f7acbac6c39bf961cc6fa0ace36851e0faf9efec1fc0aabf10f23"

// stepClock returns a clock that starts at start and advances by step on
// every call. Safe for concurrent use.
func stepClock(start time.Time, step time.Duration) func() time.Time {
	var mu sync.Mutex
	t := start
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := t
		t = t.Add(step)
		return now
	}
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// captureHandler records every log record.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.records...)
}

func attr(r slog.Record, key string) (string, bool) {
	var v string
	var found bool
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value.String(), true
			return false
		}
		return true
	})
	return v, found
}

func vectorMetadata() []any {
	return []any{
		map[string]any{"device": "device-1", "session": "session-1", "user": "user-1"},
		map[string]any{"call_id": "call-xyz", "data": map[string]any{"channel_id": 7}, "event": "offer", "scope": "call"},
	}
}

func vectorDigests() [][32]byte {
	return [][32]byte{blake3.Sum256([]byte("session-1")), blake3.Sum256([]byte("call-xyz"))}
}

func TestVerifySpecVector(t *testing.T) {
	f, err := os.Open("testdata/vector.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Verify(f)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || res.Records != 2 || res.Head != vectorHead {
		t.Fatalf("Verify = %+v", res)
	}
}

// TestFileReproducesVector writes the two records of §11.1 through a File
// ledger and compares the bytes with the spec's lines.
func TestFileReproducesVector(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	l, err := OpenFile(path, stepClock(t0, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range vectorMetadata() {
		if err := l.Record(context.Background(), vectorDigests()[i], m); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want, _ := os.ReadFile("testdata/vector.jsonl")
	if !bytes.Equal(got, want) {
		t.Fatalf("file ledger output differs from the spec vector:\n%s\nwant\n%s", got, want)
	}
}

func TestDebugLogsOneLinePerRecord(t *testing.T) {
	h := &captureHandler{}
	d := NewDebug(stepClock(t0, 5*time.Second), slog.New(h))
	for i, m := range vectorMetadata() {
		if err := d.Record(context.Background(), vectorDigests()[i], m); err != nil {
			t.Fatal(err)
		}
	}
	// Failures log nothing.
	if err := d.Record(context.Background(), [32]byte{}, 1.5); !errors.Is(err, ErrMetadata) {
		t.Fatalf("bad metadata: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Record(ctx, [32]byte{}, map[string]any{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Record(context.Background(), [32]byte{}, map[string]any{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}

	recs := h.all()
	if len(recs) != 2 {
		t.Fatalf("%d log records, want 2", len(recs))
	}
	var lines bytes.Buffer
	for _, r := range recs {
		if r.Level != slog.LevelInfo || r.Message != "ledger record" {
			t.Errorf("log record %v %q", r.Level, r.Message)
		}
		rec, ok := attr(r, "record")
		if !ok {
			t.Fatal("no record attribute")
		}
		lines.WriteString(rec + "\n")
	}
	// The spec vector, with the session id (a bearer token) redacted in
	// the log; the chain itself is the vector's (Head below).
	vec, _ := os.ReadFile("testdata/vector.jsonl")
	want := bytes.Replace(vec, []byte(`"session":"session-1"`), []byte(`"session":"[redacted]"`), 1)
	if bytes.Equal(want, vec) {
		t.Fatal("the vector has no session member to redact")
	}
	if !bytes.Equal(lines.Bytes(), want) {
		t.Fatalf("debug records differ from the spec vector:\n%s", lines.Bytes())
	}
	if seq, hash := d.Head(); seq != 2 || fmt.Sprintf("%x", hash) != vectorHead {
		t.Fatalf("Head = %d, %x", seq, hash)
	}
}

func writeRecords(t *testing.T, l Ledger, n, from int) {
	t.Helper()
	for i := range n {
		k := from + i
		err := l.Record(context.Background(), blake3.Sum256(fmt.Appendf(nil, "session-%d", k)),
			map[string]any{"device": fmt.Sprint("device-", k), "n": k, "session": fmt.Sprint("session-", k)})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func verifyFile(t *testing.T, path string) Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Verify(f)
	if err != nil {
		t.Fatalf("Verify: %v (%+v)", err, res)
	}
	return res
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(string(b), "\n")
}

func TestFileReopenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	clock := stepClock(t0, 1500*time.Millisecond)
	l, err := OpenFile(path, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, l, 3, 1)
	seq3, hash3 := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if seq3 != 3 {
		t.Fatalf("seq after 3 records = %d", seq3)
	}

	l, err = OpenFile(path, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	if seq, hash := l.Head(); seq != 3 || hash != hash3 {
		t.Fatalf("reopened head = %d %x, want 3 %x", seq, hash, hash3)
	}
	writeRecords(t, l, 1, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	v, err := canonjson.Parse([]byte(strings.TrimSuffix(lines[3], "\n")))
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := v.Get("seq")
	prev, _ := v.Get("prev")
	if seq.Num != "4" || prev.Str != fmt.Sprintf("%x", hash3) {
		t.Fatalf("record 4: seq %s prev %s, want 4 %x", seq.Num, prev.Str, hash3)
	}
	if ts, _ := v.Get("recorded_at"); ts.Str != "2025-01-01T00:00:04.500+00:00" {
		t.Fatalf("recorded_at = %q", ts.Str)
	}
	if res := verifyFile(t, path); res.Records != 4 {
		t.Fatalf("Verify = %+v", res)
	}
	fi, _ := os.Stat(path)
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestVerifyDetectsEdit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	l, err := OpenFile(path, stepClock(t0, time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, l, 3, 1)
	l.Close()
	b, _ := os.ReadFile(path)
	// Edit one byte of record 2's metadata: "device-2" -> "device-X".
	i := bytes.Index(b, []byte(`"device-2"`))
	if i < 0 {
		t.Fatal("record 2 not found")
	}
	b[i+8] = 'X'
	res, err := Verify(bytes.NewReader(b))
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Line != 2 {
		t.Fatalf("Verify error = %v", err)
	}
	if res.Line != 2 || res.Reason != "hash does not match the record" || res.Records != 1 || res.OK() {
		t.Fatalf("Verify = %+v", res)
	}
	lines := readLines(t, path)
	if want := hashOf(t, lines[0]); res.Head != want {
		t.Fatalf("Head %s, want hash of record 1 %s", res.Head, want)
	}
}

func hashOf(t *testing.T, line string) string {
	t.Helper()
	v, err := canonjson.Parse([]byte(strings.TrimSpace(line)))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v.Get("hash")
	return h.Str
}

func TestOpenCutsIncompleteLastLine(t *testing.T) {
	for _, tail := range []string{
		`{"digest":"0b02743d4e8309`, // a torn write
		"x",
		"", // replaced below by a complete record without its newline
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", // zero-filled after a crash
	} {
		t.Run(fmt.Sprintf("%.10q", tail), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.jsonl")
			clock := stepClock(t0, time.Second)
			l, err := OpenFile(path, clock, nil)
			if err != nil {
				t.Fatal(err)
			}
			writeRecords(t, l, 3, 1)
			_, hash3 := l.Head()
			writeRecords(t, l, 1, 4)
			l.Close()
			lines := readLines(t, path)
			if tail == "" {
				tail = strings.TrimSuffix(lines[3], "\n")
			}
			good := strings.Join(lines[:3], "")
			if err := os.WriteFile(path, []byte(good+tail), 0o600); err != nil {
				t.Fatal(err)
			}

			h := &captureHandler{}
			l, err = OpenFile(path, clock, slog.New(h))
			if err != nil {
				t.Fatal(err)
			}
			recs := h.all()
			if len(recs) != 1 || recs[0].Level != slog.LevelWarn {
				t.Fatalf("want one warning, got %d records", len(recs))
			}
			if seq, hash := l.Head(); seq != 3 || hash != hash3 {
				t.Fatalf("head after cut = %d, want 3", seq)
			}
			b, _ := os.ReadFile(path)
			if string(b) != good {
				t.Fatal("file not cut back to the last complete line")
			}
			writeRecords(t, l, 2, 10)
			l.Close()
			if res := verifyFile(t, path); res.Records != 5 {
				t.Fatalf("Verify = %+v", res)
			}
		})
	}
}

func TestOpenCutsSingleIncompleteLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	if err := os.WriteFile(path, []byte(`{"digest":`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenFile(path, stepClock(t0, time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := l.Head(); seq != 0 {
		t.Fatalf("seq = %d", seq)
	}
	writeRecords(t, l, 1, 1)
	l.Close()
	if res := verifyFile(t, path); res.Records != 1 {
		t.Fatalf("Verify = %+v", res)
	}
}

func TestOpenRejectsCorruptLastLine(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base.jsonl")
	l, err := OpenFile(base, stepClock(t0, time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, l, 3, 1)
	l.Close()
	lines := readLines(t, base)
	good2 := strings.Join(lines[:2], "")
	for name, content := range map[string]string{
		"garbage":            good2 + "not json\n",
		"bad hash":           good2 + strings.Replace(lines[2], `"device-3"`, `"device-9"`, 1),
		"empty line":         good2 + lines[2] + "\n",
		"extra member":       good2 + strings.Replace(lines[2], `{"digest"`, `{"a":1,"digest"`, 1),
		"not canonical":      good2 + strings.Replace(lines[2], `"seq":3}`, `"seq": 3}`, 1),
		"first not seq1":     lines[2],
		"seq 1 later":        good2 + lines[0],
		"truncated then bad": good2 + "{}\n" + `{"dig`,
		"too long":           good2 + strings.Repeat("a", MaxLineBytes+1) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.jsonl")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := OpenFile(path, time.Now, nil)
			if err == nil {
				l.Close()
				t.Fatal("OpenFile accepted a corrupt last line")
			}
		})
	}
}

func TestConcurrentRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	l, err := OpenFile(path, stepClock(t0, time.Millisecond), nil)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if err := l.Record(context.Background(), blake3.Sum256(fmt.Appendf(nil, "%d-%d", g, i)),
					map[string]any{"g": g, "i": i}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if res := verifyFile(t, path); res.Records != goroutines*each {
		t.Fatalf("Verify = %+v", res)
	}
}

// flushers counts the goroutines running File.flushLoop.
func flushers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "ledger.(*File).flushLoop")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestFlusherStopsOnClose(t *testing.T) {
	// Let goroutines of earlier tests finish.
	settle := func(want func(n int) bool) int {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if want(n) || time.Now().After(deadline) {
				return n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := settle(func(int) bool { return flushers() == 0 })
	dir := t.TempDir()
	var ls []*File
	for i := range 5 {
		l, err := OpenFile(filepath.Join(dir, fmt.Sprint(i)), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		ls = append(ls, l)
	}
	// A flusher that has not run yet shows no flushLoop frame: wait.
	for deadline := time.Now().Add(5 * time.Second); flushers() != 5; {
		if time.Now().After(deadline) {
			t.Fatalf("%d flusher goroutines, want 5", flushers())
		}
		time.Sleep(time.Millisecond)
	}
	for _, l := range ls {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := l.Record(context.Background(), [32]byte{}, map[string]any{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Record after Close: %v", err)
		}
	}
	// Close waits for its flusher, so none is left at once.
	if n := flushers(); n != 0 {
		t.Fatalf("%d flusher goroutines after Close", n)
	}
	if n := settle(func(n int) bool { return n <= before }); n > before {
		t.Fatalf("goroutines %d after Close, want <= %d", n, before)
	}
}

func TestFlusherSyncs(t *testing.T) {
	l, err := OpenFile(filepath.Join(t.TempDir(), "l"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	writeRecords(t, l, 1, 1)
	deadline := time.Now().Add(time.Second)
	for {
		l.mu.Lock()
		dirty := l.dirty
		l.mu.Unlock()
		if !dirty {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not fsynced within one second")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMetadataRules(t *testing.T) {
	d := NewDebug(nil, nil)
	ctx := context.Background()
	for _, bad := range []any{
		nil, 1, "x", []any{1}, 1.5,
		map[string]any{"x": 1.5},
		map[string]any{"x": []any{map[string]any{"y": 2.25}}},
		map[string]any{"x": math.Inf(1)},
		map[string]any{"x": 1e21},
		canonjson.Value{Kind: canonjson.Object, Obj: []canonjson.Member{{Key: "a", Value: canonjson.Value{Kind: canonjson.Number, Num: "1e3"}}}},
		(*canonjson.Value)(nil),
	} {
		if err := d.Record(ctx, [32]byte{}, bad); err == nil {
			t.Errorf("metadata %#v accepted", bad)
		}
	}
	type meta struct {
		User   string `json:"user"`
		Serial uint64 `json:"certificate_serial"`
		Expiry int64  `json:"certificate_expires_at"`
		Video  bool   `json:"video"`
	}
	for _, good := range []any{
		map[string]any{},
		map[string]any{"n": -3, "f": 2.0, "nested": map[string]any{"a": []any{1, "b", nil, true}}},
		meta{User: "u", Serial: math.MaxUint64, Expiry: -1},
		&meta{},
		canonjson.Value{Kind: canonjson.Object},
	} {
		if err := d.Record(ctx, [32]byte{}, good); err != nil {
			t.Errorf("metadata %#v rejected: %v", good, err)
		}
	}
	if err := d.Record(ctx, [32]byte{}, map[string]string{"big": strings.Repeat("a", MaxLineBytes)}); !errors.Is(err, ErrMetadata) {
		t.Errorf("oversized metadata: %v", err)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		mode, target string
		ok           bool
	}{
		{"null", "", true},
		{"debug", "", true},
		{"file", filepath.Join(dir, "l.jsonl"), true},
		{"file", "", false},
		{"file", filepath.Join(dir, "missing", "l.jsonl"), false},
		{"", "", false},
		{"File", "x", false},
	} {
		l, err := New(c.mode, c.target, nil, nil)
		if (err == nil) != c.ok {
			t.Errorf("New(%q, %q): err = %v", c.mode, c.target, err)
			continue
		}
		if err != nil {
			if l != nil {
				t.Errorf("New(%q): non-nil ledger with error", c.mode)
			}
			continue
		}
		if err := l.Record(context.Background(), [32]byte{}, map[string]any{"a": 1}); err != nil {
			t.Errorf("%s: Record: %v", c.mode, err)
		}
		if err := l.Close(); err != nil {
			t.Errorf("%s: Close: %v", c.mode, err)
		}
	}
	if err := (Null{}).Record(context.Background(), [32]byte{}, 1.5); err != nil {
		t.Errorf("Null records nothing, not even errors: %v", err)
	}
}
