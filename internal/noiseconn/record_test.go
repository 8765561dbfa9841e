package noiseconn

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"

	"golang.org/x/crypto/chacha20poly1305"
)

// recordTestKey is the key of the §5.7 vector: bytes 0x00 to 0x1f.
func recordTestKey() [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

type recordVector struct {
	Name         string `json:"name"`
	Padding      string `json:"padding"`
	Counter      uint64 `json:"counter"`
	Data         string `json:"data"`
	Plaintext    string `json:"plaintext"`
	PlaintextLen int    `json:"plaintext_len"`
	RecordLen    int    `json:"record_len"`
	Record       string `json:"record"`
	RecordPrefix string `json:"record_prefix"`
	RecordSuffix string `json:"record_suffix"`
	RecordSHA256 string `json:"record_sha256"`
}

type recordVectorFile struct {
	Key     string         `json:"key"`
	Vectors []recordVector `json:"vectors"`
}

func loadRecordVectors(t testing.TB) ([32]byte, []recordVector) {
	t.Helper()
	b, err := os.ReadFile("testdata/record_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f recordVectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	if k := mustHex(t, f.Key); len(k) != 32 {
		t.Fatalf("vector key has %d bytes", len(k))
	} else {
		copy(key[:], k)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no record vectors")
	}
	return key, f.Vectors
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// rawRecordSeal builds a record from an arbitrary plaintext with the raw
// AEAD, bypassing the Sealer's checks.
func rawRecordSeal(t testing.TB, key [32]byte, counter uint64, plaintext []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		t.Fatal(err)
	}
	var nonce [12]byte
	binary.LittleEndian.PutUint64(nonce[4:], counter)
	rec := binary.BigEndian.AppendUint16(nil, uint16(len(plaintext)+16))
	return aead.Seal(rec, nonce[:], plaintext, nil)
}

// rawRecordOpen decrypts one whole record with the raw AEAD.
func rawRecordOpen(t testing.TB, key [32]byte, counter uint64, rec []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		t.Fatal(err)
	}
	if int(binary.BigEndian.Uint16(rec))+2 != len(rec) {
		t.Fatalf("record length field %d does not match %d bytes", binary.BigEndian.Uint16(rec), len(rec))
	}
	var nonce [12]byte
	binary.LittleEndian.PutUint64(nonce[4:], counter)
	pt, err := aead.Open(nil, nonce[:], rec[2:], nil)
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

func TestRecordVectors(t *testing.T) {
	key, vectors := loadRecordVectors(t)
	if key != recordTestKey() {
		t.Fatalf("vector key %x, want 000102…1f", key)
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			p, err := ParsePadding(v.Padding)
			if err != nil {
				t.Fatal(err)
			}
			data := mustHex(t, v.Data)
			s := NewSealer(key, v.Counter, p)
			rec, err := s.AppendRecords(nil, data)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Counter(); got != v.Counter+1 {
				t.Errorf("counter after seal = %d, want %d", got, v.Counter+1)
			}
			if len(rec) != v.RecordLen {
				t.Errorf("record length %d, want %d", len(rec), v.RecordLen)
			}
			if n := s.SealedLen(len(data)); n != v.RecordLen {
				t.Errorf("SealedLen(%d) = %d, want %d", len(data), n, v.RecordLen)
			}
			if v.Record != "" && hex.EncodeToString(rec) != v.Record {
				t.Errorf("record\n got %x\nwant %s", rec, v.Record)
			}
			if v.RecordPrefix != "" && !bytes.HasPrefix(rec, mustHex(t, v.RecordPrefix)) {
				t.Errorf("record begins %x, want %s", rec[:len(v.RecordPrefix)/2], v.RecordPrefix)
			}
			if v.RecordSuffix != "" && !bytes.HasSuffix(rec, mustHex(t, v.RecordSuffix)) {
				t.Errorf("record ends %x, want %s", rec[len(rec)-len(v.RecordSuffix)/2:], v.RecordSuffix)
			}
			if v.RecordSHA256 != "" {
				if sum := sha256.Sum256(rec); hex.EncodeToString(sum[:]) != v.RecordSHA256 {
					t.Errorf("record SHA-256 %x, want %s", sum, v.RecordSHA256)
				}
			}

			// The plaintext, decrypted independently of the Opener.
			pt := rawRecordOpen(t, key, v.Counter, rec)
			if v.Plaintext != "" && hex.EncodeToString(pt) != v.Plaintext {
				t.Errorf("plaintext %x, want %s", pt, v.Plaintext)
			}
			if v.PlaintextLen != 0 && len(pt) != v.PlaintextLen {
				t.Errorf("plaintext length %d, want %d", len(pt), v.PlaintextLen)
			}

			// Opening gives the data back.
			o := NewOpener(key, v.Counter)
			buf := bytes.Clone(rec)
			got, n, err := o.OpenRecord(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(rec) || !bytes.Equal(got, data) {
				t.Errorf("OpenRecord = %x, %d; want %x, %d", got, n, data, len(rec))
			}
			if o.Counter() != v.Counter+1 {
				t.Errorf("opener counter %d, want %d", o.Counter(), v.Counter+1)
			}
		})
	}

	// Both records as one stream: none at counter 0, buckets at counter 1.
	var stream []byte
	var want []byte
	for _, v := range vectors {
		r := v.Record
		if r == "" {
			t.Fatalf("vector %s has no full record", v.Name)
		}
		stream = append(stream, mustHex(t, r)...)
		want = append(want, mustHex(t, v.Data)...)
	}
	got, err := io.ReadAll(NewRecordReader(bytes.NewReader(stream), NewOpener(key, vectors[0].Counter)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("stream of vector records = %x, want %x", got, want)
	}
}

func TestParsePadding(t *testing.T) {
	for _, tc := range []struct {
		s string
		p Padding
	}{{"none", PaddingNone}, {"buckets", PaddingBuckets}} {
		p, err := ParsePadding(tc.s)
		if err != nil || p != tc.p {
			t.Errorf("ParsePadding(%q) = %v, %v", tc.s, p, err)
		}
		if p.String() != tc.s {
			t.Errorf("%d.String() = %q, want %q", p, p.String(), tc.s)
		}
	}
	for _, s := range []string{"", "None", "bucket", "BUCKETS", " none"} {
		if _, err := ParsePadding(s); err == nil {
			t.Errorf("ParsePadding(%q) accepted", s)
		}
	}
	if s := Padding(9).String(); s != "Padding(9)" {
		t.Errorf("Padding(9).String() = %q", s)
	}
}

func TestRecordConstants(t *testing.T) {
	if MinRecordLen != 18 || MaxRecordLen != 65535 || MaxRecordData != 65517 || MaxBucketData != 16382 ||
		RecordOverhead != 20 || MaxRecordSize != 65537 {
		t.Fatalf("constants: min %d max %d maxdata %d maxbucket %d overhead %d maxsize %d",
			MinRecordLen, MaxRecordLen, MaxRecordData, MaxBucketData, RecordOverhead, MaxRecordSize)
	}
}

func TestSealerInvalidPadding(t *testing.T) {
	s := NewSealer(recordTestKey(), 0, Padding(2))
	if _, err := s.AppendRecords(nil, []byte("x")); err == nil {
		t.Fatal("sealer with invalid padding sealed a record")
	}
}

// splitRecords splits a sealed stream into its records by their length
// fields.
func splitRecords(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var recs [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("stray byte after records")
		}
		n := 2 + int(binary.BigEndian.Uint16(b))
		if n > len(b) {
			t.Fatalf("record of %d bytes, only %d left", n, len(b))
		}
		recs = append(recs, b[:n])
		b = b[n:]
	}
	return recs
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestRecordRoundTrip(t *testing.T) {
	key := recordTestKey()
	sizes := []int{0, 1, 16381, 16382, 16383, 65517, 65518, 200000}
	bucketLens := map[int]bool{274: true, 1042: true, 4114: true, 16402: true}
	for _, p := range []Padding{PaddingNone, PaddingBuckets} {
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%v/%d", p, size), func(t *testing.T) {
				data := randomBytes(uint64(size), size)
				const start = 5
				s := NewSealer(key, start, p)
				prefix := []byte("prefix")
				sealed, err := s.AppendRecords(bytes.Clone(prefix), data)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(sealed, prefix) {
					t.Fatal("AppendRecords changed the existing contents of dst")
				}
				sealed = sealed[len(prefix):]
				if len(sealed) != s.SealedLen(size) {
					t.Errorf("sealed %d bytes, SealedLen says %d", len(sealed), s.SealedLen(size))
				}
				recs := splitRecords(t, sealed)
				chunk := MaxRecordData
				if p == PaddingBuckets {
					chunk = MaxBucketData
				}
				wantRecs := max(1, (size+chunk-1)/chunk)
				if len(recs) != wantRecs {
					t.Errorf("%d records, want %d", len(recs), wantRecs)
				}
				if s.Counter() != start+uint64(len(recs)) {
					t.Errorf("counter %d after %d records from %d", s.Counter(), len(recs), start)
				}
				rest := data
				for i, rec := range recs {
					n := min(len(rest), chunk)
					switch p {
					case PaddingNone:
						if len(rec) != RecordOverhead+n {
							t.Errorf("record %d: %d bytes, want %d", i, len(rec), RecordOverhead+n)
						}
					case PaddingBuckets:
						if !bucketLens[len(rec)] {
							t.Errorf("record %d: %d bytes, not a bucket size", i, len(rec))
						}
						// The smallest bucket that holds the data.
						if len(rec) != 2+16+recordBucket(n) {
							t.Errorf("record %d: %d bytes for %d data bytes", i, len(rec), n)
						}
					}
					rest = rest[n:]
				}

				// Record by record with the Opener.
				o := NewOpener(key, start)
				buf := bytes.Clone(sealed)
				var got []byte
				for len(buf) > 0 {
					d, n, err := o.OpenRecord(buf)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, d...)
					buf = buf[n:]
				}
				if !bytes.Equal(got, data) {
					t.Fatal("Opener round trip differs")
				}

				// As a stream, in one piece and one byte at a time.
				for _, mode := range []string{"whole", "onebyte", "half"} {
					var src io.Reader = bytes.NewReader(sealed)
					switch mode {
					case "onebyte":
						src = iotest.OneByteReader(src)
					case "half":
						src = iotest.HalfReader(src)
					}
					got, err := io.ReadAll(NewRecordReader(src, NewOpener(key, start)))
					if err != nil {
						t.Fatalf("%s: %v", mode, err)
					}
					if !bytes.Equal(got, data) {
						t.Fatalf("%s: RecordReader round trip differs", mode)
					}
				}
			})
		}
	}
}

func TestSealedLen(t *testing.T) {
	key := recordTestKey()
	for _, p := range []Padding{PaddingNone, PaddingBuckets} {
		s := NewSealer(key, 0, p)
		for _, n := range []int{0, 1, 253, 254, 255, 1021, 1022, 1023, 4093, 4094, 4095,
			16381, 16382, 16383, 2 * 16382, 2*16382 + 1, 65516, 65517, 65518, 2 * 65517, 100000} {
			sealed, err := s.AppendRecords(nil, make([]byte, n))
			if err != nil {
				t.Fatal(err)
			}
			if len(sealed) != s.SealedLen(n) {
				t.Errorf("%v: %d bytes sealed for %d, SealedLen %d", p, len(sealed), n, s.SealedLen(n))
			}
		}
		if s.SealedLen(-1) != s.SealedLen(0) {
			t.Errorf("SealedLen(-1) = %d", s.SealedLen(-1))
		}
	}
}

func TestSealPaddingOnlyRecord(t *testing.T) {
	key := recordTestKey()
	for _, p := range []Padding{PaddingNone, PaddingBuckets} {
		s := NewSealer(key, 0, p)
		rec, err := s.AppendRecords(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := 20
		if p == PaddingBuckets {
			want = 274
		}
		if len(rec) != want {
			t.Errorf("%v: empty record %d bytes, want %d", p, len(rec), want)
		}
		pt := rawRecordOpen(t, key, 0, rec)
		if binary.BigEndian.Uint16(pt) != 0 || !bytes.Equal(pt[2:], make([]byte, len(pt)-2)) {
			t.Errorf("%v: plaintext %x", p, pt)
		}
		d, n, err := NewOpener(key, 0).OpenRecord(rec)
		if err != nil || n != len(rec) || len(d) != 0 {
			t.Errorf("%v: OpenRecord = %x, %d, %v", p, d, n, err)
		}
	}

	// Padding-only records between data records are invisible to a
	// RecordReader.
	s := NewSealer(key, 0, PaddingBuckets)
	var stream []byte
	stream, _ = s.AppendRecords(stream, nil)
	stream, _ = s.AppendRecords(stream, []byte("ab"))
	stream, _ = s.AppendRecords(stream, nil)
	stream, _ = s.AppendRecords(stream, nil)
	stream, _ = s.AppendRecords(stream, []byte("cd"))
	stream, _ = s.AppendRecords(stream, nil)
	got, err := io.ReadAll(NewRecordReader(iotest.OneByteReader(bytes.NewReader(stream)), NewOpener(key, 0)))
	if err != nil || string(got) != "abcd" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestOpenRecordErrors(t *testing.T) {
	key := recordTestKey()
	good := func(counter uint64, data string) []byte {
		rec, err := NewSealer(key, counter, PaddingNone).AppendRecords(nil, []byte(data))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	corruptTag := good(0, "hello")
	corruptTag[len(corruptTag)-1] ^= 0x01
	corruptCiphertext := good(0, "hello")
	corruptCiphertext[3] ^= 0x80
	// A record of length 17: a 1-byte plaintext plus tag, sealed validly.
	len17 := rawRecordSeal(t, key, 0, []byte{0x00})
	len0 := []byte{0x00, 0x00}
	// data_len 4 in a 5-byte plaintext (2 + 4 > 5).
	dataLenTooLarge := rawRecordSeal(t, key, 0, []byte{0x00, 0x04, 'a', 'b', 'c'})
	// data_len 0xffff in an 18-byte record.
	dataLenHuge := rawRecordSeal(t, key, 0, []byte{0xff, 0xff})
	// data_len 1, then padding with a non-zero byte at the end.
	nonZeroPad := rawRecordSeal(t, key, 0, []byte{0x00, 0x01, 'a', 0x00, 0x00, 0x01})
	// Bucket-sized record whose padding has one non-zero byte in the middle.
	bucketPT := make([]byte, 256)
	bucketPT[1] = 3
	copy(bucketPT[2:], "abc")
	bucketPT[100] = 0x20
	nonZeroBucketPad := rawRecordSeal(t, key, 0, bucketPT)
	wrongKey := good(0, "hello")

	cases := []struct {
		name    string
		rec     []byte
		counter uint64
		key     [32]byte
	}{
		{"length 17", len17, 0, key},
		{"length 0", len0, 0, key},
		{"corrupted tag", corruptTag, 0, key},
		{"corrupted ciphertext", corruptCiphertext, 0, key},
		{"wrong counter", good(0, "hello"), 1, key},
		{"wrong counter (sealed at 1, opened at 0)", good(1, "hello"), 0, key},
		{"wrong key", wrongKey, 0, [32]byte{1}},
		{"data_len too large", dataLenTooLarge, 0, key},
		{"data_len 0xffff", dataLenHuge, 0, key},
		{"non-zero padding", nonZeroPad, 0, key},
		{"non-zero bucket padding", nonZeroBucketPad, 0, key},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOpener(tc.key, tc.counter)
			d, n, err := o.OpenRecord(bytes.Clone(tc.rec))
			if !errors.Is(err, ErrRecord) {
				t.Fatalf("OpenRecord = %x, %d, %v; want ErrRecord", d, n, err)
			}
			if errors.Is(err, ErrShortRecord) || n != 0 || d != nil {
				t.Fatalf("OpenRecord = %x, %d, %v", d, n, err)
			}
			// Sticky: the opener refuses even a valid record afterwards.
			if _, _, err2 := o.OpenRecord(good(tc.counter, "x")); !errors.Is(err2, ErrRecord) {
				t.Fatalf("after an error OpenRecord = %v", err2)
			}
			// RecordReader reports the same class of error, also when fed
			// one byte at a time.
			for _, one := range []bool{false, true} {
				var src io.Reader = bytes.NewReader(tc.rec)
				if one {
					src = iotest.OneByteReader(src)
				}
				rr := NewRecordReader(src, NewOpener(tc.key, tc.counter))
				if _, err := io.ReadAll(rr); !errors.Is(err, ErrRecord) {
					t.Fatalf("RecordReader (one byte %v): %v; want ErrRecord", one, err)
				}
			}
		})
	}

	// The sanity counterparts: the raw seal helper builds valid records.
	valid := rawRecordSeal(t, key, 0, []byte{0x00, 0x01, 'a', 0x00, 0x00, 0x00})
	if d, _, err := NewOpener(key, 0).OpenRecord(valid); err != nil || string(d) != "a" {
		t.Fatalf("valid padded record: %q, %v", d, err)
	}
}

func TestOpenRecordShort(t *testing.T) {
	key := recordTestKey()
	rec, _ := NewSealer(key, 0, PaddingNone).AppendRecords(nil, []byte("hello, world"))
	o := NewOpener(key, 0)
	for i := 0; i < len(rec); i++ {
		d, n, err := o.OpenRecord(rec[:i])
		if err != ErrShortRecord || n != 0 || d != nil {
			t.Fatalf("prefix %d: %x, %d, %v; want ErrShortRecord", i, d, n, err)
		}
		if errors.Is(err, ErrRecord) {
			t.Fatal("ErrShortRecord wraps ErrRecord")
		}
	}
	if o.Counter() != 0 {
		t.Fatalf("short records moved the counter to %d", o.Counter())
	}
	// Extra bytes after the record are left alone.
	buf := append(bytes.Clone(rec), 0xde, 0xad)
	d, n, err := o.OpenRecord(buf)
	if err != nil || n != len(rec) || string(d) != "hello, world" {
		t.Fatalf("OpenRecord = %q, %d, %v", d, n, err)
	}
	if cap(d) != len(d) {
		t.Errorf("data slice has spare capacity %d into the caller's buffer", cap(d)-len(d))
	}
	if !bytes.Equal(buf[n:], []byte{0xde, 0xad}) {
		t.Error("bytes after the record were modified")
	}
	// A too-short length is reported before the body arrives.
	if _, _, err := NewOpener(key, 0).OpenRecord([]byte{0x00, 0x11}); !errors.Is(err, ErrRecord) {
		t.Errorf("length 17 header alone: %v", err)
	}
}

func TestRecordReaderEndOfStream(t *testing.T) {
	key := recordTestKey()
	s := NewSealer(key, 0, PaddingBuckets)
	stream, _ := s.AppendRecords(nil, []byte("first"))
	stream, _ = s.AppendRecords(stream, []byte("second"))
	boundary := len(stream)
	stream, _ = s.AppendRecords(stream, []byte("third"))

	read := func(b []byte, one bool) ([]byte, error) {
		var src io.Reader = bytes.NewReader(b)
		if one {
			src = iotest.OneByteReader(src)
		}
		rr := NewRecordReader(src, NewOpener(key, 0))
		var out []byte
		p := make([]byte, 3)
		for {
			n, err := rr.Read(p)
			out = append(out, p[:n]...)
			if err != nil {
				// Sticky.
				if n2, err2 := rr.Read(p); n2 != 0 || err2 != err {
					t.Fatalf("error not sticky: %d, %v after %v", n2, err2, err)
				}
				return out, err
			}
		}
	}
	for _, one := range []bool{false, true} {
		if out, err := read(stream, one); err != io.EOF || string(out) != "firstsecondthird" {
			t.Errorf("whole stream: %q, %v", out, err)
		}
		if out, err := read(stream[:boundary], one); err != io.EOF || string(out) != "firstsecond" {
			t.Errorf("cut at boundary: %q, %v", out, err)
		}
		if out, err := read(nil, one); err != io.EOF || len(out) != 0 {
			t.Errorf("empty stream: %q, %v", out, err)
		}
		for _, cut := range []int{boundary + 1, boundary + 2, boundary + 100, len(stream) - 1} {
			out, err := read(stream[:cut], one)
			if !errors.Is(err, ErrRecord) || err == io.EOF || string(out) != "firstsecond" {
				t.Errorf("cut at %d: %q, %v; want ErrRecord", cut, out, err)
			}
		}
	}
}

type errAfterReader struct {
	r   io.Reader
	err error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestRecordReaderSourceErrors(t *testing.T) {
	key := recordTestKey()
	rec, _ := NewSealer(key, 0, PaddingNone).AppendRecords(nil, []byte("data"))
	boom := errors.New("boom")

	// A read error other than EOF is passed through, after the complete
	// records before it.
	rr := NewRecordReader(&errAfterReader{bytes.NewReader(rec), boom}, NewOpener(key, 0))
	got, err := io.ReadAll(rr)
	if err != boom || string(got) != "data" {
		t.Fatalf("got %q, %v; want data, boom", got, err)
	}

	// Data returned together with io.EOF is used.
	rr = NewRecordReader(iotest.DataErrReader(bytes.NewReader(rec)), NewOpener(key, 0))
	got, err = io.ReadAll(rr)
	if err != nil || string(got) != "data" {
		t.Fatalf("DataErrReader: %q, %v", got, err)
	}

	// A reader that makes no progress does not hang.
	rr = NewRecordReader(zeroReader{}, NewOpener(key, 0))
	if _, err := rr.Read(make([]byte, 10)); err != io.ErrNoProgress {
		t.Fatalf("no-progress reader: %v", err)
	}

	// An empty p reads nothing.
	rr = NewRecordReader(bytes.NewReader(rec), NewOpener(key, 0))
	if n, err := rr.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	got, err = io.ReadAll(rr)
	if err != nil || string(got) != "data" {
		t.Fatalf("after Read(nil): %q, %v", got, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestRecordCounterExhaustion(t *testing.T) {
	key := recordTestKey()
	s := NewSealer(key, math.MaxUint64-1, PaddingNone)
	rec, err := s.AppendRecords(nil, []byte("last"))
	if err != nil {
		t.Fatalf("sealing at 2^64-2: %v", err)
	}
	if s.Counter() != math.MaxUint64 {
		t.Fatalf("counter %d", s.Counter())
	}
	dst := []byte("keep")
	out, err := s.AppendRecords(dst, []byte("one more"))
	if !errors.Is(err, ErrCounterExhausted) || string(out) != "keep" {
		t.Fatalf("sealing at 2^64-1: %q, %v; want ErrCounterExhausted", out, err)
	}
	if _, err := s.AppendRecords(nil, nil); !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("empty record at 2^64-1: %v", err)
	}

	// The record sealed at 2^64-2 opens; an opener at 2^64-1 refuses.
	o := NewOpener(key, math.MaxUint64-1)
	if d, _, err := o.OpenRecord(bytes.Clone(rec)); err != nil || string(d) != "last" {
		t.Fatalf("opening at 2^64-2: %q, %v", d, err)
	}
	if o.Counter() != math.MaxUint64 {
		t.Fatalf("opener counter %d", o.Counter())
	}
	rec2 := rawRecordSeal(t, key, math.MaxUint64, []byte{0, 0})
	_, _, err = o.OpenRecord(rec2)
	if !errors.Is(err, ErrRecord) || !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("opening at 2^64-1: %v", err)
	}
	_, _, err = NewOpener(key, math.MaxUint64).OpenRecord(bytes.Clone(rec))
	if !errors.Is(err, ErrRecord) || !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("fresh opener at 2^64-1: %v", err)
	}

	// A multi-record seal that would cross the limit appends nothing.
	s = NewSealer(key, math.MaxUint64-2, PaddingBuckets)
	out, err = s.AppendRecords(nil, make([]byte, 3*MaxBucketData))
	if !errors.Is(err, ErrCounterExhausted) || len(out) != 0 || s.Counter() != math.MaxUint64-2 {
		t.Fatalf("3 records from 2^64-3: %d bytes, counter %d, %v", len(out), s.Counter(), err)
	}
	out, err = s.AppendRecords(nil, make([]byte, 2*MaxBucketData))
	if err != nil || len(out) != 2*16402 || s.Counter() != math.MaxUint64 {
		t.Fatalf("2 records from 2^64-3: %d bytes, counter %d, %v", len(out), s.Counter(), err)
	}
}

func TestConfirmMessage(t *testing.T) {
	key := recordTestKey()
	msg := ConfirmMessage(key)
	if len(msg) != 16 {
		t.Fatalf("confirm message has %d bytes", len(msg))
	}
	// It is the AEAD of the empty plaintext at counter 0.
	aead, _ := chacha20poly1305.New(key[:])
	if want := aead.Seal(nil, make([]byte, 12), nil, nil); !bytes.Equal(msg, want) {
		t.Fatalf("confirm %x, want %x", msg, want)
	}
	if !CheckConfirm(key, msg) {
		t.Fatal("CheckConfirm rejects ConfirmMessage")
	}
	for i := 0; i < len(msg)*8; i++ {
		bad := bytes.Clone(msg)
		bad[i/8] ^= 1 << (i % 8)
		if CheckConfirm(key, bad) {
			t.Fatalf("CheckConfirm accepts bit %d flipped", i)
		}
	}
	other := key
	other[31] ^= 1
	for _, bad := range [][]byte{nil, {}, msg[:15], append(bytes.Clone(msg), 0), ConfirmMessage(other), make([]byte, 16)} {
		if CheckConfirm(key, bad) {
			t.Fatalf("CheckConfirm accepts %x", bad)
		}
	}
	// The confirm used counter 0: a record at counter 0 under the same key
	// is a different message, and the first record goes out with counter 1.
	s := NewSealer(key, 1, PaddingNone)
	rec, _ := s.AppendRecords(nil, []byte("after confirm"))
	if d, _, err := NewOpener(key, 1).OpenRecord(rec); err != nil || string(d) != "after confirm" {
		t.Fatalf("first IK record: %q, %v", d, err)
	}
}

func TestRecordAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	key := recordTestKey()
	data := make([]byte, 100)
	for _, p := range []Padding{PaddingNone, PaddingBuckets} {
		s := NewSealer(key, 0, p)
		dst := make([]byte, 0, s.SealedLen(len(data)))
		if n := testing.AllocsPerRun(100, func() {
			if _, err := s.AppendRecords(dst[:0], data); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%v: AppendRecords allocates %v times per call", p, n)
		}
	}

	s := NewSealer(key, 0, PaddingNone)
	const records = 101
	var stream []byte
	for i := 0; i < records; i++ {
		stream, _ = s.AppendRecords(stream, data)
	}
	o := NewOpener(key, 0)
	buf := make([]byte, len(stream))
	i := 0
	if n := testing.AllocsPerRun(100, func() {
		r := stream[i*(len(stream)/records) : (i+1)*(len(stream)/records)]
		copy(buf, r)
		if _, _, err := o.OpenRecord(buf[:len(r)]); err != nil {
			t.Fatal(err)
		}
		i++
	}); n != 0 {
		t.Errorf("OpenRecord allocates %v times per record", n)
	}

	rr := NewRecordReader(bytes.NewReader(stream), NewOpener(key, 0))
	p := make([]byte, len(data))
	if n := testing.AllocsPerRun(100, func() {
		if _, err := io.ReadFull(rr, p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("RecordReader allocates %v times per record", n)
	}
}

func FuzzOpenRecord(f *testing.F) {
	_, vectors := loadRecordVectors(f)
	var both []byte
	for _, v := range vectors {
		rec := mustHex(f, v.Record)
		f.Add(rec)
		both = append(both, rec...)
	}
	f.Add(both)
	key := recordTestKey()
	f.Fuzz(func(t *testing.T, in []byte) {
		// Direct use of the Opener on the whole input.
		buf := bytes.Clone(in)
		o := NewOpener(key, 0)
		total := 0
		for {
			d, n, err := o.OpenRecord(buf)
			if err != nil {
				if err != ErrShortRecord && !errors.Is(err, ErrRecord) {
					t.Fatalf("OpenRecord: unexpected error %v", err)
				}
				if n != 0 || d != nil {
					t.Fatalf("OpenRecord error with %d, %x", n, d)
				}
				break
			}
			if n < 2+MinRecordLen || n > len(buf) || len(d) > n-2-MinRecordLen {
				t.Fatalf("OpenRecord consumed %d of %d, data %d", n, len(buf), len(d))
			}
			total += len(d)
			buf = buf[n:]
		}

		// The same bytes through RecordReader, whole and byte by byte: both
		// end with io.EOF or a record error and agree on the output.
		var outs [2][]byte
		var errs [2]error
		for i, one := range []bool{false, true} {
			var src io.Reader = bytes.NewReader(in)
			if one {
				src = iotest.OneByteReader(src)
			}
			outs[i], errs[i] = io.ReadAll(NewRecordReader(src, NewOpener(key, 0)))
			if errs[i] != nil && !errors.Is(errs[i], ErrRecord) {
				t.Fatalf("RecordReader: unexpected error %v", errs[i])
			}
			if len(outs[i]) > len(in) {
				t.Fatalf("RecordReader produced %d bytes from %d", len(outs[i]), len(in))
			}
		}
		if !bytes.Equal(outs[0], outs[1]) || (errs[0] == nil) != (errs[1] == nil) {
			t.Fatalf("whole and byte-wise reads differ: %d/%v vs %d/%v", len(outs[0]), errs[0], len(outs[1]), errs[1])
		}
		if len(outs[0]) != total {
			t.Fatalf("RecordReader gave %d bytes, Opener %d", len(outs[0]), total)
		}

		// Random bytes almost never authenticate, so also take the input as
		// a plaintext, seal it validly and check the plaintext rules of
		// §5.4 against a direct reading of them.
		if len(in) >= RecordDataLenSize && len(in) <= MaxRecordLen-RecordTagSize {
			rec := rawRecordSeal(t, key, 0, in)
			dl := int(binary.BigEndian.Uint16(in))
			valid := 2+dl <= len(in) && bytes.Count(in[min(2+dl, len(in)):], []byte{0}) == len(in)-min(2+dl, len(in))
			d, n, err := NewOpener(key, 0).OpenRecord(rec)
			if valid {
				if err != nil || n != len(rec) || !bytes.Equal(d, in[2:2+dl]) {
					t.Fatalf("valid plaintext %x: %x, %d, %v", in, d, n, err)
				}
			} else if !errors.Is(err, ErrRecord) {
				t.Fatalf("invalid plaintext %x: %x, %d, %v", in, d, n, err)
			}
		}
	})
}

func benchmarkSeal(b *testing.B, p Padding, size int) {
	key := recordTestKey()
	s := NewSealer(key, 0, p)
	data := randomBytes(1, size)
	dst := make([]byte, 0, s.SealedLen(size))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = s.AppendRecords(dst[:0], data)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealNone(b *testing.B) {
	b.Run("100B", func(b *testing.B) { benchmarkSeal(b, PaddingNone, 100) })
	b.Run("16KiB", func(b *testing.B) { benchmarkSeal(b, PaddingNone, 16<<10) })
}

func BenchmarkSealBuckets(b *testing.B) {
	b.Run("100B", func(b *testing.B) { benchmarkSeal(b, PaddingBuckets, 100) })
	b.Run("16KiB", func(b *testing.B) { benchmarkSeal(b, PaddingBuckets, 16<<10) })
}

func BenchmarkOpen(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"100B", 100}, {"16KiB", 16 << 10}} {
		size := bc.size
		b.Run(bc.name, func(b *testing.B) {
			key := recordTestKey()
			rec, err := NewSealer(key, 0, PaddingNone).AppendRecords(nil, randomBytes(2, size))
			if err != nil {
				b.Fatal(err)
			}
			o := NewOpener(key, 0)
			buf := make([]byte, len(rec))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				// OpenRecord decrypts in place and advances the counter:
				// restore both (the copy is part of the measured time).
				copy(buf, rec)
				o.counter = 0
				if _, _, err := o.OpenRecord(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// chunkFeed returns its chunks one per Read, then io.EOF.
type chunkFeed struct{ chunks [][]byte }

func (c *chunkFeed) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// TestRecordReaderIdleBuffer: between records (nothing buffered) the
// reader uses its in-struct array, a record too large for it goes through
// a pooled or larger buffer, and the data is right either way.
func TestRecordReaderIdleBuffer(t *testing.T) {
	key := recordTestKey()
	s := NewSealer(key, 0, PaddingBuckets)
	small := bytes.Repeat([]byte{'s'}, 100)
	large := bytes.Repeat([]byte{'L'}, 3000)
	huge := bytes.Repeat([]byte{'H'}, 20000)
	var feed chunkFeed
	for _, d := range [][]byte{small, large, small, huge, small} {
		rec, err := s.AppendRecords(nil, d)
		if err != nil {
			t.Fatal(err)
		}
		feed.chunks = append(feed.chunks, rec)
	}
	rr := NewRecordReader(&feed, NewOpener(key, 0))
	if !rr.isSmall() {
		t.Fatal("a new reader does not start on its in-struct buffer")
	}
	for i, want := range [][]byte{small, large, small, huge, small} {
		got, err := io.ReadAll(io.LimitReader(rr, int64(len(want))))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("record %d: %d bytes, %v", i, len(got), err)
		}
		if len(want) > smallRecordBuf && rr.isSmall() {
			t.Fatalf("record %d (%d bytes) was read into the small buffer", i, len(want))
		}
	}
	// The next Read finds nothing buffered: the heap buffer is released
	// before it waits for the source.
	if _, err := rr.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	if !rr.isSmall() {
		t.Errorf("the reader holds a %d-byte buffer while nothing is buffered", len(rr.buf))
	}
}
