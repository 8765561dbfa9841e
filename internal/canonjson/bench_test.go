package canonjson

import (
	"os"
	"testing"
)

func BenchmarkParseCanonical(b *testing.B) {
	in, err := os.ReadFile("testdata/call_offer.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		v, err := Parse(in)
		if err != nil {
			b.Fatal(err)
		}
		out = v.AppendCanonical(out[:0])
	}
}

func BenchmarkValid(b *testing.B) {
	in, err := os.ReadFile("testdata/call_offer.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if !Valid(in) {
			b.Fatal("invalid")
		}
	}
}
