package noiseconn

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// Padding is the sender padding policy of §5.5 (configuration key
// security.padding). Receivers accept any valid padding whatever their own
// policy.
type Padding uint8

const (
	// PaddingNone sends plaintexts of exactly 2 + data_len bytes.
	PaddingNone Padding = iota
	// PaddingBuckets pads every plaintext with zeros to 256, 1024, 4096 or
	// 16384 bytes (records of 274, 1042, 4114 or 16402 bytes on the wire).
	PaddingBuckets
)

// ParsePadding parses a security.padding value: "none" or "buckets".
func ParsePadding(s string) (Padding, error) {
	switch s {
	case "none":
		return PaddingNone, nil
	case "buckets":
		return PaddingBuckets, nil
	}
	return 0, fmt.Errorf("noiseconn: unknown padding %q (want \"none\" or \"buckets\")", s)
}

// String returns the configuration spelling of p ("none" or "buckets").
func (p Padding) String() string {
	switch p {
	case PaddingNone:
		return "none"
	case PaddingBuckets:
		return "buckets"
	}
	return fmt.Sprintf("Padding(%d)", uint8(p))
}

// Sizes of the record format of §5.4:
//
//	record    = length:u16be  ciphertext[length]            18 ≤ length ≤ 65535
//	plaintext = data_len:u16be  data[data_len]  padding     len(plaintext) = length − 16
const (
	// RecordLengthSize is the size of the length prefix of a record.
	RecordLengthSize = 2
	// RecordDataLenSize is the size of the data_len field that starts
	// every plaintext.
	RecordDataLenSize = 2
	// RecordTagSize is the size of the ChaCha20-Poly1305 tag.
	RecordTagSize = chacha20poly1305.Overhead
	// RecordOverhead is the number of bytes a record adds to its data with
	// PaddingNone: length prefix, data_len and tag.
	RecordOverhead = RecordLengthSize + RecordDataLenSize + RecordTagSize
	// MinRecordLen is the smallest valid value of the length field (an
	// empty data_len-only plaintext plus the tag).
	MinRecordLen = RecordDataLenSize + RecordTagSize
	// MaxRecordLen is the largest value of the length field (the largest
	// ciphertext).
	MaxRecordLen = math.MaxUint16
	// MaxRecordSize is the largest record on the wire, length prefix
	// included.
	MaxRecordSize = RecordLengthSize + MaxRecordLen
	// MaxRecordData is the largest data_len of a record; a PaddingNone
	// sender puts at most this much data in one record.
	MaxRecordData = MaxRecordLen - MinRecordLen
	// MaxBucketData is the most data a PaddingBuckets sender puts in one
	// record (2 + MaxBucketData fills the largest bucket).
	MaxBucketData = recordBucketMax - RecordDataLenSize
)

// recordBuckets are the plaintext sizes of PaddingBuckets (§5.5).
var recordBuckets = [...]int{256, 1024, 4096, recordBucketMax}

const recordBucketMax = 16384

// lastRecordCounter is the last usable nonce counter: a connection must be
// closed before a counter would reach 2^64 − 1 (§5.4).
const lastRecordCounter = math.MaxUint64 - 1

// ErrRecord is wrapped by every record error of §5.6: a length below
// MinRecordLen, a failed authentication tag, a data_len larger than the
// plaintext, non-zero padding and a stream ending inside a record. After any
// of them the receiver must stop reading and close the connection without
// sending an ERROR frame.
var ErrRecord = errors.New("noiseconn: record error")

// ErrCounterExhausted is returned when a direction has used every nonce
// counter up to 2^64 − 2; the connection must be closed (there is no
// rekeying).
var ErrCounterExhausted = errors.New("noiseconn: record counter exhausted")

// ErrShortRecord is returned by Opener.OpenRecord when the buffer does not
// yet hold a complete record. It is not a record error: the caller should
// read more bytes and try again.
var ErrShortRecord = errors.New("noiseconn: incomplete record")

func newRecordAEAD(key [32]byte) (cipher.AEAD, error) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, fmt.Errorf("noiseconn: record cipher: %w", err)
	}
	return aead, nil
}

// recordBucket returns the padded plaintext size for n data bytes under
// PaddingBuckets; n must be at most MaxBucketData.
func recordBucket(n int) int {
	need := RecordDataLenSize + n
	for _, b := range recordBuckets {
		if need <= b {
			return b
		}
	}
	panic("noiseconn: record data exceeds the largest bucket")
}

// putRecordNonce writes the 12-byte nonce of §5.4, 4 zero bytes ||
// u64le(counter), into nonce.
func putRecordNonce(nonce *[chacha20poly1305.NonceSize]byte, counter uint64) {
	binary.LittleEndian.PutUint64(nonce[4:], counter)
}

// Sealer encrypts one direction of a version 2 stream into records (§5.4).
// It is not safe for concurrent use.
type Sealer struct {
	aead    cipher.AEAD
	err     error // permanent failure (invalid padding, unavailable cipher)
	counter uint64
	padding Padding
	nonce   [chacha20poly1305.NonceSize]byte // first 4 bytes stay zero
}

// NewSealer returns a Sealer for key whose first record uses nonce counter
// counter (0 for a fresh key; 1 for client→server in IK, where the confirm
// message of §4.12 used 0) and sends with padding policy p.
func NewSealer(key [32]byte, counter uint64, p Padding) *Sealer {
	aead, err := newRecordAEAD(key)
	if err == nil && p != PaddingNone && p != PaddingBuckets {
		err = fmt.Errorf("noiseconn: invalid padding %d", uint8(p))
	}
	return &Sealer{aead: aead, err: err, counter: counter, padding: p}
}

// Counter returns the nonce counter the next record will use.
func (s *Sealer) Counter() uint64 { return s.counter }

// maxRecordData is the most data one record carries under s's policy.
func (s *Sealer) maxRecordData() int {
	if s.padding == PaddingBuckets {
		return MaxBucketData
	}
	return MaxRecordData
}

// recordCount is the number of records AppendRecords produces for n bytes.
func (s *Sealer) recordCount(n int) int {
	chunk := s.maxRecordData()
	if n <= chunk {
		return 1
	}
	return (n + chunk - 1) / chunk
}

// SealedLen returns the number of bytes AppendRecords appends for n data
// bytes (n < 0 counts as 0).
func (s *Sealer) SealedLen(n int) int {
	n = max(n, 0)
	if s.padding != PaddingBuckets {
		return n + s.recordCount(n)*RecordOverhead
	}
	full, rest := n/MaxBucketData, n%MaxBucketData
	total := full * (RecordLengthSize + recordBucketMax + RecordTagSize)
	if rest > 0 || n == 0 {
		total += RecordLengthSize + recordBucket(rest) + RecordTagSize
	}
	return total
}

// AppendRecords seals data into records and appends them to dst, returning
// the extended slice. Data of any length is split into as many records as
// needed: at most MaxRecordData bytes per record with PaddingNone (plaintext
// exactly 2 + data_len bytes), at most MaxBucketData with PaddingBuckets
// (plaintext zero-padded to the smallest bucket holding 2 + data_len). Empty
// data produces exactly one record with data_len 0 (a padding-only record).
//
// Records are sealed in place in dst; when cap(dst)-len(dst) is at least
// SealedLen(len(data)) nothing is allocated. data must not overlap the
// spare capacity of dst.
//
// If the records would need a nonce counter beyond 2^64 − 2, AppendRecords
// appends nothing and returns ErrCounterExhausted; the connection must be
// closed.
func (s *Sealer) AppendRecords(dst, data []byte) ([]byte, error) {
	if s.err != nil {
		return dst, s.err
	}
	records := s.recordCount(len(data))
	// Counters s.counter … s.counter+records−1 must all be ≤ 2^64 − 2.
	if s.counter > lastRecordCounter || uint64(records)-1 > lastRecordCounter-s.counter {
		return dst, ErrCounterExhausted
	}
	chunk := s.maxRecordData()
	dst = slices.Grow(dst, s.SealedLen(len(data)))
	for i := 0; i < records; i++ {
		n := min(len(data), chunk)
		ptLen := RecordDataLenSize + n
		if s.padding == PaddingBuckets {
			ptLen = recordBucket(n)
		}
		off := len(dst)
		dst = dst[:off+RecordLengthSize+ptLen+RecordTagSize]
		rec := dst[off:]
		binary.BigEndian.PutUint16(rec, uint16(ptLen+RecordTagSize))
		pt := rec[RecordLengthSize : RecordLengthSize+ptLen]
		binary.BigEndian.PutUint16(pt, uint16(n))
		copy(pt[RecordDataLenSize:], data[:n])
		clear(pt[RecordDataLenSize+n:])
		putRecordNonce(&s.nonce, s.counter)
		s.aead.Seal(pt[:0], s.nonce[:], pt, nil)
		s.counter++
		data = data[n:]
	}
	return dst, nil
}

// Opener decrypts the records of one direction of a version 2 stream
// (§5.4). It is not safe for concurrent use. After a record error every
// further call fails with the same error.
type Opener struct {
	aead    cipher.AEAD
	err     error // sticky
	counter uint64
	nonce   [chacha20poly1305.NonceSize]byte // first 4 bytes stay zero
}

// NewOpener returns an Opener for key whose first record uses nonce counter
// counter.
func NewOpener(key [32]byte, counter uint64) *Opener {
	aead, err := newRecordAEAD(key)
	return &Opener{aead: aead, err: err, counter: counter}
}

// Counter returns the nonce counter the next record must use.
func (o *Opener) Counter() uint64 { return o.counter }

// OpenRecord opens the record at the front of buf. It returns the record's
// data, which aliases buf (the record is decrypted in place, so the caller
// must own buf; a failed record may leave buf overwritten), and the number of
// bytes the record occupied in buf.
//
// If buf does not yet hold a complete record, OpenRecord returns n == 0 and
// ErrShortRecord. A length field below MinRecordLen is reported as soon as
// the two length bytes are present. The errors of §5.6 wrap ErrRecord;
// reaching nonce counter 2^64 − 1 wraps both ErrRecord and
// ErrCounterExhausted.
func (o *Opener) OpenRecord(buf []byte) (data []byte, n int, err error) {
	if o.err != nil {
		return nil, 0, o.err
	}
	if len(buf) < RecordLengthSize {
		return nil, 0, ErrShortRecord
	}
	length := int(binary.BigEndian.Uint16(buf))
	if length < MinRecordLen {
		return nil, 0, o.fail(fmt.Errorf("%w: record length %d below %d", ErrRecord, length, MinRecordLen))
	}
	if len(buf) < RecordLengthSize+length {
		return nil, 0, ErrShortRecord
	}
	if o.counter > lastRecordCounter {
		return nil, 0, o.fail(fmt.Errorf("%w: %w", ErrRecord, ErrCounterExhausted))
	}
	ct := buf[RecordLengthSize : RecordLengthSize+length]
	putRecordNonce(&o.nonce, o.counter)
	pt, err := o.aead.Open(ct[:0], o.nonce[:], ct, nil)
	if err != nil {
		return nil, 0, o.fail(fmt.Errorf("%w: authentication failed (counter %d)", ErrRecord, o.counter))
	}
	o.counter++
	dataLen := int(binary.BigEndian.Uint16(pt))
	end := RecordDataLenSize + dataLen
	if end > len(pt) {
		return nil, 0, o.fail(fmt.Errorf("%w: data_len %d exceeds plaintext of %d bytes", ErrRecord, dataLen, len(pt)))
	}
	var nz byte
	for _, b := range pt[end:] {
		nz |= b
	}
	if nz != 0 {
		return nil, 0, o.fail(fmt.Errorf("%w: non-zero padding", ErrRecord))
	}
	return pt[RecordDataLenSize:end:end], RecordLengthSize + length, nil
}

func (o *Opener) fail(err error) error {
	o.err = err
	return err
}

// RecordReader is an io.Reader of the plaintext CCP-1 byte stream carried in
// the records read from an underlying reader (one direction of a version 2
// connection).
//
// A stream that ends at a record boundary gives io.EOF; one that ends inside
// a record gives an error wrapping ErrRecord. Errors of the underlying
// reader other than io.EOF are returned as they are. Every error is sticky.
// Padding-only records are skipped.
//
// Buffers: while nothing is buffered (an idle connection, or between the
// records of one with small messages) the reader reads into a small array
// of its own, so an idle connection holds no read buffer (memory per
// connection, issue 7). A record that does not fit moves to a pooled
// initialRecordBuf buffer, doubled up to MaxRecordSize when needed; once
// everything read has been returned, a pooled buffer goes back to the pool
// and a larger one to the garbage collector. It does not allocate per
// record. It is not safe for concurrent use.
type RecordReader struct {
	src     io.Reader
	open    *Opener
	small   [smallRecordBuf]byte
	buf     []byte // small[:], a pooled buffer, or a larger one
	r, w    int    // buf[r:w] holds bytes read but not yet opened
	pending []byte // opened data not yet returned; aliases buf[:r]
	srcErr  error  // error from src, acted on once the buffered bytes run out
	err     error  // sticky
}

// NewRecordReader returns a RecordReader that reads records from r and
// opens them with o.
func NewRecordReader(r io.Reader, o *Opener) *RecordReader {
	rr := &RecordReader{src: r, open: o}
	rr.buf = rr.small[:]
	return rr
}

const (
	// smallRecordBuf is the in-struct buffer: a 100-byte message in a
	// padded record fits.
	smallRecordBuf = 512
	// initialRecordBuf is the size of the pooled buffers.
	initialRecordBuf = 4096
)

// recordBufPool holds *[initialRecordBuf]byte.
var recordBufPool = sync.Pool{New: func() any { return new([initialRecordBuf]byte) }}

// isSmall reports whether rr.buf is the in-struct array.
func (rr *RecordReader) isSmall() bool { return &rr.buf[0] == &rr.small[0] }

// shrink returns a pooled or large buffer once nothing is buffered.
func (rr *RecordReader) shrink() {
	if rr.w != 0 || rr.isSmall() {
		return
	}
	if len(rr.buf) == initialRecordBuf {
		recordBufPool.Put((*[initialRecordBuf]byte)(rr.buf))
	}
	rr.buf = rr.small[:]
}

// maxEmptyRecordReads bounds successive (0, nil) results of the underlying
// reader before Read gives up with io.ErrNoProgress.
const maxEmptyRecordReads = 100

// Read reads plaintext stream bytes into p. It returns data from at most one
// record per call.
func (rr *RecordReader) Read(p []byte) (int, error) {
	if len(rr.pending) > 0 {
		n := copy(p, rr.pending)
		rr.pending = rr.pending[n:]
		return n, nil
	}
	if rr.err != nil {
		return 0, rr.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	empty := 0
	for {
		data, n, err := rr.open.OpenRecord(rr.buf[rr.r:rr.w])
		if err == nil {
			rr.r += n
			if len(data) == 0 {
				continue // padding-only record
			}
			c := copy(p, data)
			rr.pending = data[c:]
			return c, nil
		}
		if err != ErrShortRecord {
			rr.err = err
			return 0, err
		}
		if rr.srcErr != nil {
			switch {
			case rr.srcErr != io.EOF:
				rr.err = rr.srcErr
			case rr.r == rr.w:
				rr.err = io.EOF
			default:
				rr.err = fmt.Errorf("%w: stream ended inside a record (%d bytes buffered)", ErrRecord, rr.w-rr.r)
			}
			return 0, rr.err
		}
		// Nothing opened is pending, so the whole buffer is free apart from
		// the partial record in buf[r:w]: move it to the front and read
		// into the rest, growing the buffer when the partial record fills
		// it. A partial record is shorter than MaxRecordSize, so there is
		// always room once the buffer has that size.
		if rr.r > 0 {
			rr.w = copy(rr.buf, rr.buf[rr.r:rr.w])
			rr.r = 0
		}
		rr.shrink()
		if rr.w == len(rr.buf) {
			var nb []byte
			if rr.isSmall() {
				nb = recordBufPool.Get().(*[initialRecordBuf]byte)[:]
			} else {
				nb = make([]byte, min(2*len(rr.buf), MaxRecordSize))
			}
			copy(nb, rr.buf[:rr.w])
			rr.buf = nb
		}
		m, err := rr.src.Read(rr.buf[rr.w:])
		if m < 0 || m > len(rr.buf)-rr.w {
			rr.err = fmt.Errorf("noiseconn: invalid read count %d", m)
			return 0, rr.err
		}
		rr.w += m
		if err != nil {
			rr.srcErr = err
		} else if m == 0 {
			if empty++; empty >= maxEmptyRecordReads {
				rr.srcErr = io.ErrNoProgress
			}
		}
	}
}

// ConfirmMessage returns the IK confirm message of §4.12: the
// ChaCha20-Poly1305 encryption of the empty plaintext under key (the
// client→server transport key, PQ hybrid when PQ is in effect) with nonce
// counter 0 and empty associated data. It is 16 bytes long. The confirm
// consumes counter 0, so the client's first record uses counter 1. It
// returns nil only if the cipher is unavailable (FIPS 140-only mode).
func ConfirmMessage(key [32]byte) []byte {
	aead, err := newRecordAEAD(key)
	if err != nil {
		return nil
	}
	var nonce [chacha20poly1305.NonceSize]byte
	return aead.Seal(make([]byte, 0, RecordTagSize), nonce[:], nil, nil)
}

// CheckConfirm reports whether msg is the confirm message for key, in
// constant time with respect to the contents of msg.
func CheckConfirm(key [32]byte, msg []byte) bool {
	want := ConfirmMessage(key)
	return want != nil && subtle.ConstantTimeCompare(want, msg) == 1
}
