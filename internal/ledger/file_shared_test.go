package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// Two Files on one path (the server and commucat-cli in two processes)
// keep one intact chain: each re-reads the head the other appended.
func TestFileSharedByTwoWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	a, err := OpenFile(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		w := a
		if i%2 == 1 {
			w = b
		}
		if err := w.Record(context.Background(), [32]byte{byte(i)}, map[string]any{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := Verify(f)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || res.Records != 6 {
		t.Fatalf("verify: %+v", res)
	}
}
