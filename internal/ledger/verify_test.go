package ledger

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func vectorLines(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/vector.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestVerifyCases(t *testing.T) {
	v := vectorLines(t)
	l1, l2 := v[0], v[1]+"\n"
	for _, c := range []struct {
		name    string
		in      string
		records int
		line    int
		reason  string
	}{
		{"empty", "", 0, 0, ""},
		{"one record", l1, 1, 0, ""},
		{"both", l1 + l2, 2, 0, ""},
		{"no trailing newline", l1 + strings.TrimSuffix(l2, "\n"), 1, 2, "incomplete last line (no trailing newline)"},
		{"blank line", l1 + "\n" + l2, 1, 2, "empty line"},
		{"CRLF", strings.Replace(l1, "\n", "\r\n", 1) + l2, 0, 1, "record is not in canonical JSON form"},
		{"second first", l2, 0, 1, "seq 2, expected 1"},
		{"duplicated", l1 + l1, 1, 2, "seq 1, expected 2"},
		{"not JSON", "hello\n", 0, 1, "invalid JSON"},
		{"array", "[]\n", 0, 1, "record is not a JSON object"},
		{"missing member", strings.Replace(l1, `,"seq":1}`, `}`, 1), 0, 1, `missing member "seq"`},
		{"extra member", strings.Replace(l1, `,"seq":1}`, `,"seq":1,"x":0}`, 1), 0, 1, `unexpected member "x"`},
		{"duplicate member", strings.Replace(l1, `,"seq":1}`, `,"seq":1,"seq":1}`, 1), 0, 1, "duplicate member name"},
		{"seq string", strings.Replace(l1, `"seq":1}`, `"seq":"1"}`, 1), 0, 1, "seq is not an integer"},
		{"seq float", strings.Replace(l1, `"seq":1}`, `"seq":1.0}`, 1), 0, 1, "seq is not an integer"},
		{"seq zero", strings.Replace(l1, `"seq":1}`, `"seq":0}`, 1), 0, 1, "seq is not a positive 64-bit integer"},
		{"seq huge", strings.Replace(l1, `"seq":1}`, `"seq":18446744073709551616}`, 1), 0, 1, "seq is not a positive 64-bit integer"},
		{"bad hex", strings.Replace(l1, `"digest":"0b`, `"digest":"zz`, 1), 0, 1, "digest is not hex32"},
		{"short hex", strings.Replace(l1, `"digest":"0b`, `"digest":"`, 1), 0, 1, "digest is not hex32"},
		{"metadata array", strings.Replace(l1, `"metadata":{"device":"device-1","session":"session-1","user":"user-1"}`, `"metadata":[]`, 1), 0, 1, "metadata is not an object"},
		{"bad time", strings.Replace(l1, `2025-01-01T00:00:00+00:00`, `2025-01-01 00:00:00`, 1), 0, 1, "recorded_at is not an RFC 3339 timestamp"},
		{"edited metadata", strings.Replace(l1, "user-1", "user-2", 1), 0, 1, "hash does not match the record"},
		{"edited time", strings.Replace(l2, "00:00:05", "00:00:06", 1), 0, 1, "hash does not match the record"},
		{"reordered members", reorder(l1), 0, 1, "record is not in canonical JSON form"},
		{"too long", l1 + strings.Repeat("x", MaxLineBytes+10) + "\n" + l2, 1, 2, "line longer than 1048576 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Verify(strings.NewReader(c.in))
			if res.Records != c.records || res.Line != c.line || res.Reason != c.reason {
				t.Fatalf("Verify = %+v, want records %d line %d reason %q", res, c.records, c.line, c.reason)
			}
			var ve *VerifyError
			if c.line == 0 {
				if err != nil || !res.OK() {
					t.Fatalf("err = %v", err)
				}
			} else if !errors.As(err, &ve) || ve.Line != c.line || ve.Reason != c.reason || res.OK() {
				t.Fatalf("err = %v", err)
			}
			if c.records == 0 && res.Head != "none" {
				t.Errorf("Head = %q, want none", res.Head)
			}
		})
	}
}

// reorder moves the "seq" member of a record line to the front, keeping it
// valid JSON with the same content.
func reorder(line string) string {
	body := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "}")
	i := strings.LastIndex(body, `,"seq":`)
	return `{` + body[i+1:] + `,` + body[1:i] + "}\n"
}

func TestVerifyPrevMismatch(t *testing.T) {
	// Two valid first records (each hash recomputes) chained wrongly: the
	// second claims seq 2 but its prev is not the first's hash.
	v := vectorLines(t)
	path := t.TempDir() + "/l"
	l, err := OpenFile(path, stepClock(t0, time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, l, 2, 1)
	l.Close()
	own := readLines(t, path)
	res, _ := Verify(strings.NewReader(v[0] + own[1]))
	if res.Line != 2 || res.Reason != "prev does not match the hash of the preceding record" {
		t.Fatalf("Verify = %+v", res)
	}
	// A first record with a non-zero prev.
	res, _ = Verify(strings.NewReader(strings.Replace(own[1], `"seq":2`, `"seq":1`, 1)))
	if res.Line != 1 || res.Reason != "hash does not match the record" {
		t.Fatalf("Verify = %+v", res)
	}
}

func TestVerifyReadError(t *testing.T) {
	v := vectorLines(t)
	res, err := Verify(ioErrAfter(v[0]))
	if err == nil || res.Line != 0 || res.Records != 1 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	var ve *VerifyError
	if errors.As(err, &ve) {
		t.Fatal("read error reported as a broken ledger")
	}
}

type errAfterReader struct{ data []byte }

var errBoom = errors.New("boom")

func (r *errAfterReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errBoom
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func ioErrAfter(s string) *errAfterReader { return &errAfterReader{[]byte(s)} }

func FuzzVerify(f *testing.F) {
	v := vectorLines(f)
	f.Add([]byte(v[0] + v[1]))
	f.Add([]byte(v[0]))
	f.Add([]byte(""))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"digest":"","hash":"","metadata":{},"prev":"","recorded_at":"","seq":1}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Verify(bytes.NewReader(data))
		if (err == nil) != res.OK() {
			t.Fatalf("err %v inconsistent with %+v", err, res)
		}
		if res.Records > 0 && len(res.Head) != 64 {
			t.Fatalf("Head %q", res.Head)
		}
	})
}
