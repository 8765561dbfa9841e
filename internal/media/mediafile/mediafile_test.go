package mediafile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

func TestIVFHeader(t *testing.T) {
	frames := [][]byte{{1, 2, 3}, {}, bytes.Repeat([]byte{9}, 300)}
	var buf bytes.Buffer
	if err := WriteIVF(&buf, 321, 241, 30000, 1001, frames); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	want := []byte{
		'D', 'K', 'I', 'F', 0, 0, 32, 0, 'V', 'P', '8', '0',
		0x41, 0x01, 0xf1, 0x00, // 321, 241
		0x30, 0x75, 0, 0, // rate 30000
		0xe9, 0x03, 0, 0, // scale 1001
		3, 0, 0, 0, // frames
		0, 0, 0, 0,
	}
	if !bytes.Equal(b[:32], want) {
		t.Fatalf("header\n got % x\nwant % x", b[:32], want)
	}
	off := 32
	for i, f := range frames {
		if n := binary.LittleEndian.Uint32(b[off:]); int(n) != len(f) {
			t.Fatalf("frame %d: size %d, want %d", i, n, len(f))
		}
		if pts := binary.LittleEndian.Uint64(b[off+4:]); pts != uint64(i) {
			t.Fatalf("frame %d: pts %d", i, pts)
		}
		if !bytes.Equal(b[off+12:off+12+len(f)], f) {
			t.Fatalf("frame %d: payload differs", i)
		}
		off += 12 + len(f)
	}
	if off != len(b) {
		t.Fatalf("%d trailing bytes", len(b)-off)
	}
}

func TestIVFErrors(t *testing.T) {
	for _, c := range [][4]int{{0, 10, 30, 1}, {10, 0, 30, 1}, {70000, 10, 30, 1}, {10, 10, 0, 1}, {10, 10, 30, 0}, {10, 10, -30, 1}} {
		if err := WriteIVF(&bytes.Buffer{}, c[0], c[1], c[2], c[3], nil); err == nil {
			t.Errorf("WriteIVF(%v) accepted", c)
		}
	}
	w := &failWriter{after: 1}
	if err := WriteIVF(w, 10, 10, 30, 1, [][]byte{{1}}); err == nil {
		t.Error("write error not reported")
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after == 0 {
		return 0, errors.New("write failed")
	}
	f.after--
	return len(p), nil
}

func TestOggCRC(t *testing.T) {
	// CRC-32 with polynomial 0x04c11db7, init 0, no reflection, no final
	// XOR of "123456789" (CRC-32/CKSUM 0x765e7680 without its final XOR).
	if got := OggCRC([]byte("123456789")); got != 0x89a1897f {
		t.Fatalf("OggCRC = %#x, want 0x89a1897f", got)
	}
	// Against a bitwise reference.
	data := []byte("OggS\x00\x02 some page bytes \xff\x00\x80")
	var ref uint32
	for _, b := range data {
		ref ^= uint32(b) << 24
		for range 8 {
			if ref&0x80000000 != 0 {
				ref = ref<<1 ^ 0x04c11db7
			} else {
				ref <<= 1
			}
		}
	}
	if got := OggCRC(data); got != ref {
		t.Fatalf("OggCRC = %#x, bitwise %#x", got, ref)
	}
}

func TestOpusPacketSamples(t *testing.T) {
	for _, c := range []struct {
		p    []byte
		want int
	}{
		{[]byte{0 << 3}, 480},           // SILK NB 10 ms
		{[]byte{1 << 3}, 960},           // SILK NB 20 ms
		{[]byte{11 << 3}, 2880},         // SILK WB 60 ms
		{[]byte{13 << 3}, 960},          // hybrid 20 ms
		{[]byte{16 << 3}, 120},          // CELT 2.5 ms
		{[]byte{31 << 3}, 960},          // CELT 20 ms
		{[]byte{31<<3 | 1}, 1920},       // two frames
		{[]byte{31<<3 | 2, 1}, 1920},    // two frames, different sizes
		{[]byte{31<<3 | 3, 6}, 5760},    // six 20 ms frames: 120 ms
		{[]byte{16<<3 | 3, 48}, 5760},   // 48 × 2.5 ms
		{[]byte{11<<3 | 3, 2, 0}, 5760}, // two 60 ms frames
	} {
		got, err := OpusPacketSamples(c.p)
		if err != nil || got != c.want {
			t.Errorf("OpusPacketSamples(% x) = %d, %v; want %d", c.p, got, err, c.want)
		}
	}
	for _, p := range [][]byte{nil, {31<<3 | 3}, {31<<3 | 3, 0}, {31<<3 | 3, 7}, {11<<3 | 3, 3}} {
		if _, err := OpusPacketSamples(p); err == nil {
			t.Errorf("OpusPacketSamples(% x) accepted", p)
		}
	}
}

// oggPage is one parsed page.
type oggPage struct {
	flags   byte
	granule int64
	serial  uint32
	seq     uint32
	lacing  []byte
	body    []byte
}

// parseOgg splits a stream into pages, checking capture pattern, version
// and CRC.
func parseOgg(b []byte) ([]oggPage, error) {
	var pages []oggPage
	for len(b) > 0 {
		if len(b) < 27 || string(b[:4]) != "OggS" || b[4] != 0 {
			return nil, fmt.Errorf("page %d: bad header", len(pages))
		}
		n := int(b[26])
		if len(b) < 27+n {
			return nil, fmt.Errorf("page %d: truncated lacing", len(pages))
		}
		size := 0
		for _, v := range b[27 : 27+n] {
			size += int(v)
		}
		end := 27 + n + size
		if len(b) < end {
			return nil, fmt.Errorf("page %d: truncated body", len(pages))
		}
		page := append([]byte(nil), b[:end]...)
		crc := binary.LittleEndian.Uint32(page[22:])
		clear(page[22:26])
		if got := OggCRC(page); got != crc {
			return nil, fmt.Errorf("page %d: CRC %#x, computed %#x", len(pages), crc, got)
		}
		pages = append(pages, oggPage{
			flags: b[5], granule: int64(binary.LittleEndian.Uint64(b[6:])),
			serial: binary.LittleEndian.Uint32(b[14:]), seq: binary.LittleEndian.Uint32(b[18:]),
			lacing: b[27 : 27+n], body: b[27+n : end],
		})
		b = b[end:]
	}
	return pages, nil
}

// packetsOf reassembles the packets of the pages and, per packet, the
// granule of the page it completes on when it is the last packet
// completed there (else -1).
func packetsOf(t *testing.T, pages []oggPage) (packets [][]byte, granules []int64) {
	t.Helper()
	var cur []byte
	open := false
	for i, p := range pages {
		if (p.flags&flagContinued != 0) != open {
			t.Fatalf("page %d: continued flag %v, but a packet is open: %v", i, p.flags&flagContinued != 0, open)
		}
		off := 0
		last := -1
		for _, v := range p.lacing {
			cur = append(cur, p.body[off:off+int(v)]...)
			off += int(v)
			open = v == 255
			if !open {
				packets = append(packets, cur)
				granules = append(granules, -1)
				last = len(packets) - 1
				cur = nil
			}
		}
		if last >= 0 {
			granules[last] = p.granule
		} else if p.granule != -1 {
			t.Fatalf("page %d: no packet completes but granule is %d", i, p.granule)
		}
	}
	if open {
		t.Fatal("stream ends inside a packet")
	}
	return packets, granules
}

func checkOggOpus(t *testing.T, b []byte, rate, channels int, want [][]byte) {
	t.Helper()
	pages, err := parseOgg(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pages {
		if p.serial != pages[0].serial || p.seq != uint32(i) {
			t.Fatalf("page %d: serial %#x seq %d", i, p.serial, p.seq)
		}
		if bos := p.flags&flagBOS != 0; bos != (i == 0) {
			t.Fatalf("page %d: BOS %v", i, bos)
		}
		if eos := p.flags&flagEOS != 0; eos != (i == len(pages)-1) {
			t.Fatalf("page %d: EOS %v", i, eos)
		}
	}
	// OpusHead alone on page 0, OpusTags alone on page 1 (RFC 7845 §3).
	if len(pages) < 2 || len(pages[0].lacing) != 1 || len(pages[1].lacing) != 1 || pages[0].granule != 0 || pages[1].granule != 0 {
		t.Fatal("header pages are not one packet each with granule 0")
	}
	head := pages[0].body
	wantHead := []byte{'O', 'p', 'u', 's', 'H', 'e', 'a', 'd', 1, byte(channels), 0x38, 0x01, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(wantHead[12:], uint32(rate))
	if !bytes.Equal(head, wantHead) {
		t.Fatalf("OpusHead\n got % x\nwant % x", head, wantHead)
	}
	tags := pages[1].body
	if string(tags[:8]) != "OpusTags" {
		t.Fatalf("second packet is %q", tags[:8])
	}
	vl := int(binary.LittleEndian.Uint32(tags[8:]))
	if string(tags[12:12+vl]) != "commucat" || binary.LittleEndian.Uint32(tags[12+vl:]) != 0 || len(tags) != 16+vl {
		t.Fatalf("OpusTags % x", tags)
	}
	packets, granules := packetsOf(t, pages[2:])
	if len(packets) != len(want) {
		t.Fatalf("%d packets, want %d", len(packets), len(want))
	}
	var pos int64
	for i := range want {
		if !bytes.Equal(packets[i], want[i]) {
			t.Fatalf("packet %d differs", i)
		}
		n, _ := OpusPacketSamples(want[i])
		pos += int64(n)
		if granules[i] != -1 && granules[i] != pos {
			t.Fatalf("packet %d: page granule %d, want %d", i, granules[i], pos)
		}
	}
	if len(want) > 0 && granules[len(want)-1] != pos {
		t.Fatalf("last granule %d, want %d", granules[len(want)-1], pos)
	}
}

func TestOggOpusLayout(t *testing.T) {
	cases := map[string][][]byte{
		"empty": nil,
		"one":   {{0x08, 1, 2}},
		"small": repeat([]byte{0xf8, 0xff, 0xfe}, 600), // > 255 lacing values
		"big":   repeat(append([]byte{0xfc}, bytes.Repeat([]byte{7}, 1000)...), 20),
		// A packet larger than one page can hold (255 × 255 bytes) spans
		// pages with the continued flag; also exact multiples of 255.
		"huge": {append([]byte{0x08}, bytes.Repeat([]byte{1}, 70000)...), append([]byte{0x08}, make([]byte, 509)...), {0x08}},
	}
	for name, packets := range cases {
		t.Run(name, func(t *testing.T) {
			for _, ch := range []int{1, 2} {
				var buf bytes.Buffer
				if err := WriteOggOpus(&buf, 16000, ch, packets); err != nil {
					t.Fatal(err)
				}
				checkOggOpus(t, buf.Bytes(), 16000, ch, packets)
				pages, _ := parseOgg(buf.Bytes())
				continued := 0
				for _, p := range pages {
					if p.flags&flagContinued != 0 {
						continued++
					}
				}
				if name == "huge" && continued == 0 {
					t.Error("a 70000-byte packet did not continue on a second page")
				}
				if name == "small" && len(pages) < 5 {
					t.Errorf("600 packets on %d pages: the 255-segment limit was not applied", len(pages))
				}
			}
		})
	}
}

func repeat(p []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func TestOggOpusErrors(t *testing.T) {
	if err := WriteOggOpus(&bytes.Buffer{}, 48000, 3, nil); err == nil {
		t.Error("3 channels accepted")
	}
	if err := WriteOggOpus(&bytes.Buffer{}, 48000, 0, nil); err == nil {
		t.Error("0 channels accepted")
	}
	if err := WriteOggOpus(&bytes.Buffer{}, -1, 1, nil); err == nil {
		t.Error("negative rate accepted")
	}
	if err := WriteOggOpus(&bytes.Buffer{}, 48000, 1, [][]byte{{0x08}, {}}); err == nil {
		t.Error("empty packet accepted")
	}
	if err := WriteOggOpus(&failWriter{after: 1}, 48000, 1, [][]byte{{0x08}}); err == nil {
		t.Error("write error not reported")
	}
}
