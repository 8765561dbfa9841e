// Package mediafile writes encoded media into standard containers so that
// standard tools can check it (spec §7.6: VP8 must decode with ffmpeg from
// IVF, Opus with opusdec or ffmpeg from Ogg). It is pure Go.
package mediafile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// WriteIVF writes VP8 frames into an IVF container: a 32-byte file header
// ("DKIF", version 0, fourcc "VP80", the size, the time base
// fpsDen/fpsNum and the frame count), then per frame a 12-byte header
// (length, presentation time = frame index in time-base units) and the
// frame. The frame rate is fpsNum/fpsDen frames per second.
func WriteIVF(w io.Writer, width, height, fpsNum, fpsDen int, frames [][]byte) error {
	if width < 1 || width > math.MaxUint16 || height < 1 || height > math.MaxUint16 {
		return fmt.Errorf("ivf: size %dx%d out of range 1..65535", width, height)
	}
	if fpsNum < 1 || fpsDen < 1 || int64(fpsNum) > math.MaxUint32 || int64(fpsDen) > math.MaxUint32 {
		return fmt.Errorf("ivf: frame rate %d/%d must have positive 32-bit terms", fpsNum, fpsDen)
	}
	if int64(len(frames)) > math.MaxUint32 {
		return errors.New("ivf: too many frames")
	}
	var h [32]byte
	copy(h[0:4], "DKIF")
	binary.LittleEndian.PutUint16(h[4:], 0)  // version
	binary.LittleEndian.PutUint16(h[6:], 32) // header size
	copy(h[8:12], "VP80")
	binary.LittleEndian.PutUint16(h[12:], uint16(width))
	binary.LittleEndian.PutUint16(h[14:], uint16(height))
	binary.LittleEndian.PutUint32(h[16:], uint32(fpsNum)) // time base denominator (rate)
	binary.LittleEndian.PutUint32(h[20:], uint32(fpsDen)) // time base numerator (scale)
	binary.LittleEndian.PutUint32(h[24:], uint32(len(frames)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	for i, f := range frames {
		if int64(len(f)) > math.MaxUint32 {
			return fmt.Errorf("ivf: frame %d too large", i)
		}
		var fh [12]byte
		binary.LittleEndian.PutUint32(fh[0:], uint32(len(f)))
		binary.LittleEndian.PutUint64(fh[4:], uint64(i))
		if _, err := w.Write(fh[:]); err != nil {
			return err
		}
		if _, err := w.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// OpusPreSkip is the pre-skip WriteOggOpus puts into OpusHead: the
// lookahead of libopus (application VoIP or audio) in 48 kHz samples.
const OpusPreSkip = 312

// oggSerial is the (fixed) bitstream serial number, so output is
// reproducible.
const oggSerial = 0x43434154 // "CCAT"

// pageTarget is the body size after which a page is closed at the next
// packet boundary (libogg uses about 4 KiB as well).
const pageTarget = 4096

// WriteOggOpus writes Opus packets into an Ogg Opus stream (RFC 7845): a
// first page with OpusHead (version 1, channel mapping family 0, pre-skip
// OpusPreSkip, input rate sampleRate), a page with OpusTags, then the
// audio pages. Granule positions count 48 kHz samples (pre-skip included)
// up to the last packet completed on each page, as the packets' TOC bytes
// give them; the last page carries the end-of-stream flag. channels must be
// 1 or 2; every packet must be a well-formed Opus packet of 2.5..120 ms.
func WriteOggOpus(w io.Writer, sampleRate, channels int, packets [][]byte) error {
	if channels != 1 && channels != 2 {
		return fmt.Errorf("ogg opus: %d channels, want 1 or 2 (mapping family 0)", channels)
	}
	if sampleRate < 0 || int64(sampleRate) > math.MaxUint32 {
		return fmt.Errorf("ogg opus: sample rate %d out of range", sampleRate)
	}
	durations := make([]int64, len(packets))
	for i, p := range packets {
		n, err := OpusPacketSamples(p)
		if err != nil {
			return fmt.Errorf("ogg opus: packet %d: %w", i, err)
		}
		durations[i] = int64(n)
	}

	head := make([]byte, 19)
	copy(head, "OpusHead")
	head[8] = 1 // version
	head[9] = byte(channels)
	binary.LittleEndian.PutUint16(head[10:], OpusPreSkip)
	binary.LittleEndian.PutUint32(head[12:], uint32(sampleRate))
	binary.LittleEndian.PutUint16(head[16:], 0) // output gain
	head[18] = 0                                // mapping family

	const vendor = "commucat"
	tags := make([]byte, 0, 8+4+len(vendor)+4)
	tags = append(tags, "OpusTags"...)
	tags = binary.LittleEndian.AppendUint32(tags, uint32(len(vendor)))
	tags = append(tags, vendor...)
	tags = binary.LittleEndian.AppendUint32(tags, 0) // no user comments

	ow := &oggWriter{w: w, granule: -1}
	// RFC 7845 §3: OpusHead alone on the first page, OpusTags finishing the
	// second, audio from the third.
	ow.packet(head, 0)
	if err := ow.flush(flagBOS); err != nil {
		return err
	}
	ow.packet(tags, 0)
	if err := ow.flush(eosIf(len(packets) == 0)); err != nil {
		return err
	}
	var granule int64
	for i, p := range packets {
		granule += durations[i]
		ow.packet(p, granule)
		if ow.err != nil {
			return ow.err
		}
		if last := i == len(packets)-1; last || len(ow.body) >= pageTarget {
			if err := ow.flush(eosIf(last)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ogg header-type flags.
const (
	flagContinued = 0x01
	flagBOS       = 0x02
	flagEOS       = 0x04
)

func eosIf(b bool) byte {
	if b {
		return flagEOS
	}
	return 0
}

// oggWriter packs packets into the pages of one logical bitstream.
type oggWriter struct {
	w         io.Writer
	err       error
	seq       uint32
	lacing    []byte // lacing values of the open page
	body      []byte // body of the open page
	granule   int64  // position after the last packet completed on the open page, or -1
	continued bool   // the open page starts inside a packet
}

// packet appends a packet that ends at granule position granule. A page
// holds at most 255 lacing values; when it is full the page is written
// and the packet continues on the next one.
func (o *oggWriter) packet(p []byte, granule int64) {
	for off := 0; ; {
		if len(o.lacing) == 255 {
			if o.err = o.flush(0); o.err != nil {
				return
			}
			o.continued = off > 0
		}
		v := min(len(p)-off, 255)
		o.lacing = append(o.lacing, byte(v))
		o.body = append(o.body, p[off:off+v]...)
		off += v
		if v < 255 {
			break // a lacing value below 255 ends the packet
		}
	}
	o.granule = granule
}

// flush writes the open page with the given extra flags.
func (o *oggWriter) flush(flags byte) error {
	if o.continued {
		flags |= flagContinued
	}
	h := make([]byte, 27, 27+len(o.lacing)+len(o.body))
	copy(h, "OggS")
	h[4] = 0 // version
	h[5] = flags
	binary.LittleEndian.PutUint64(h[6:], uint64(o.granule))
	binary.LittleEndian.PutUint32(h[14:], oggSerial)
	binary.LittleEndian.PutUint32(h[18:], o.seq)
	h[26] = byte(len(o.lacing))
	h = append(h, o.lacing...)
	h = append(h, o.body...)
	binary.LittleEndian.PutUint32(h[22:], OggCRC(h))
	o.seq++
	o.lacing, o.body, o.granule, o.continued = o.lacing[:0], o.body[:0], -1, false
	_, err := o.w.Write(h)
	return err
}

// crcTable is the table of the Ogg CRC-32: polynomial 0x04c11db7, not
// reflected, initial value 0, no final XOR.
var crcTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

// OggCRC is the Ogg page checksum of page, whose checksum field (bytes
// 22..25) must be zero.
func OggCRC(page []byte) uint32 {
	var crc uint32
	for _, b := range page {
		crc = crc<<8 ^ crcTable[byte(crc>>24)^b]
	}
	return crc
}

// OpusPacketSamples is the duration of an Opus packet in 48 kHz samples,
// from its TOC byte and frame count (RFC 6716 §3.1).
func OpusPacketSamples(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, errors.New("empty packet")
	}
	toc := p[0]
	config := int(toc >> 3)
	var frame int // 48 kHz samples per frame
	switch {
	case config < 12: // SILK-only: 10, 20, 40, 60 ms
		frame = [4]int{480, 960, 1920, 2880}[config&3]
	case config < 16: // hybrid: 10, 20 ms
		frame = [2]int{480, 960}[config&1]
	default: // CELT-only: 2.5, 5, 10, 20 ms
		frame = [4]int{120, 240, 480, 960}[config&3]
	}
	var count int
	switch toc & 3 {
	case 0:
		count = 1
	case 1, 2:
		count = 2
	case 3:
		if len(p) < 2 {
			return 0, errors.New("code 3 packet without a frame count")
		}
		count = int(p[1] & 0x3f)
		if count == 0 {
			return 0, errors.New("code 3 packet with zero frames")
		}
	}
	n := frame * count
	if n > 5760 {
		return 0, fmt.Errorf("packet of %d samples exceeds 120 ms", n)
	}
	return n, nil
}
