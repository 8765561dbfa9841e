//go:build cgo && !nocodecs && !noopus

package opus

/*
#cgo pkg-config: opus
#include <stdlib.h>
#include <opus.h>

// cgo cannot call the variadic opus_encoder_ctl; these wrappers can.
static int cc_opus_set_int(OpusEncoder *e, int request, opus_int32 v) {
	switch (request) {
	case OPUS_SET_BITRATE_REQUEST: return opus_encoder_ctl(e, OPUS_SET_BITRATE(v));
	case OPUS_SET_VBR_REQUEST: return opus_encoder_ctl(e, OPUS_SET_VBR(v));
	case OPUS_SET_COMPLEXITY_REQUEST: return opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(v));
	case OPUS_SET_INBAND_FEC_REQUEST: return opus_encoder_ctl(e, OPUS_SET_INBAND_FEC(v));
	case OPUS_SET_PACKET_LOSS_PERC_REQUEST: return opus_encoder_ctl(e, OPUS_SET_PACKET_LOSS_PERC(v));
	case OPUS_SET_DTX_REQUEST: return opus_encoder_ctl(e, OPUS_SET_DTX(v));
	}
	return OPUS_UNIMPLEMENTED;
}

static int cc_opus_lookahead(OpusEncoder *e) {
	opus_int32 v = 0;
	if (opus_encoder_ctl(e, OPUS_GET_LOOKAHEAD(&v)) != OPUS_OK) return -1;
	return v;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Available reports whether this build can encode and decode Opus.
func Available() bool { return true }

func opusError(op string, code C.int) error {
	return fmt.Errorf("opus: %s: %s", op, C.GoString(C.opus_strerror(code)))
}

var errClosed = errors.New("opus: use of a closed encoder or decoder")

// Encoder encodes 20 ms frames of s16le PCM into Opus packets.
// Its methods may be called from several goroutines; they are serialized.
type Encoder struct {
	mu       sync.Mutex
	st       *C.OpusEncoder // C memory, freed by Close or the cleanup
	cleanup  runtime.Cleanup
	fec      bool
	channels int
	frame    int     // bytes of one 20 ms frame
	pcm      []int16 // input staging buffer, Go memory
	out      []byte  // output staging buffer, MaxPacketBytes
}

// setting is one encoder ctl applied at creation.
type setting struct {
	name    string
	request C.int
	value   int
}

// NewEncoder creates an encoder with the settings of §7.6: VoIP
// application, VBR, complexity 9, bitrate clamped to 6000..510000 bit/s,
// in-band FEC iff cfg.FEC (packet-loss hint max(cfg.PacketLossPercent, 5)),
// DTX iff cfg.DTX.
func NewEncoder(cfg EncoderConfig) (*Encoder, error) {
	if err := checkFormat(cfg.SampleRate, cfg.Channels); err != nil {
		return nil, err
	}
	var code C.int
	st := C.opus_encoder_create(C.opus_int32(cfg.SampleRate), C.int(cfg.Channels), C.OPUS_APPLICATION_VOIP, &code)
	if st == nil || code != C.OPUS_OK {
		if st != nil {
			C.opus_encoder_destroy(st)
		}
		return nil, opusError("creating encoder", code)
	}
	fec, dtx := 0, 0
	if cfg.FEC {
		fec = 1
	}
	if cfg.DTX {
		dtx = 1
	}
	settings := []setting{
		{"bitrate", C.OPUS_SET_BITRATE_REQUEST, clampBitrate(cfg.Bitrate)},
		{"VBR", C.OPUS_SET_VBR_REQUEST, 1},
		{"complexity", C.OPUS_SET_COMPLEXITY_REQUEST, 9},
		{"in-band FEC", C.OPUS_SET_INBAND_FEC_REQUEST, fec},
		{"DTX", C.OPUS_SET_DTX_REQUEST, dtx},
	}
	if cfg.FEC {
		settings = append(settings, setting{"packet loss", C.OPUS_SET_PACKET_LOSS_PERC_REQUEST, lossHint(cfg.PacketLossPercent)})
	}
	for _, s := range settings {
		if rc := C.cc_opus_set_int(st, s.request, C.opus_int32(s.value)); rc != C.OPUS_OK {
			C.opus_encoder_destroy(st)
			return nil, opusError("setting "+s.name, rc)
		}
	}
	fb := frameBytes(cfg.SampleRate, cfg.Channels)
	e := &Encoder{
		st:       st,
		fec:      cfg.FEC,
		channels: cfg.Channels,
		frame:    fb,
		pcm:      make([]int16, fb/2),
		out:      make([]byte, MaxPacketBytes),
	}
	e.cleanup = runtime.AddCleanup(e, func(st *C.OpusEncoder) { C.opus_encoder_destroy(st) }, st)
	return e, nil
}

// FrameBytes is the size in bytes of one 20 ms s16le interleaved frame,
// the only input size Encode accepts.
func (e *Encoder) FrameBytes() int { return e.frame }

// Lookahead is the encoder delay in samples at the encoder's sample rate
// (the Ogg Opus pre-skip at 48 kHz).
func (e *Encoder) Lookahead() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st == nil {
		return 0
	}
	return int(C.cc_opus_lookahead(e.st))
}

// Encode encodes exactly one 20 ms frame of interleaved s16le PCM and
// returns one Opus packet of at most MaxPacketBytes bytes. The packet is a
// freshly allocated slice that the caller owns. Any other input length is
// an error that never reaches libopus.
func (e *Encoder) Encode(pcm []byte) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st == nil {
		return nil, errClosed
	}
	if len(pcm) != e.frame {
		return nil, fmt.Errorf("opus: input of %d bytes, want one 20 ms frame of %d bytes", len(pcm), e.frame)
	}
	for i := range e.pcm {
		e.pcm[i] = int16(uint16(pcm[2*i]) | uint16(pcm[2*i+1])<<8)
	}
	perChannel := len(e.pcm) / e.channels
	n := C.opus_encode(e.st, (*C.opus_int16)(unsafe.Pointer(&e.pcm[0])), C.int(perChannel),
		(*C.uchar)(unsafe.Pointer(&e.out[0])), C.opus_int32(len(e.out)))
	runtime.KeepAlive(e)
	if n < 0 {
		return nil, opusError("encoding", n)
	}
	return append([]byte(nil), e.out[:n]...), nil
}

// SetBitrate sets the target bitrate in bit/s, clamped to 6000..510000.
func (e *Encoder) SetBitrate(bps int) error {
	return e.set("bitrate", C.OPUS_SET_BITRATE_REQUEST, clampBitrate(bps))
}

// SetPacketLoss records the latest reported packet loss in percent. With
// FEC on the encoder's loss hint becomes max(percent, 5) (at most 100);
// with FEC off the hint stays 0 and the call only checks the encoder is open.
func (e *Encoder) SetPacketLoss(percent int) error {
	if !e.fec {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.st == nil {
			return errClosed
		}
		return nil
	}
	return e.set("packet loss", C.OPUS_SET_PACKET_LOSS_PERC_REQUEST, lossHint(percent))
}

func (e *Encoder) set(name string, request C.int, value int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st == nil {
		return errClosed
	}
	rc := C.cc_opus_set_int(e.st, request, C.opus_int32(value))
	runtime.KeepAlive(e)
	if rc != C.OPUS_OK {
		return opusError("setting "+name, rc)
	}
	return nil
}

// Close frees the encoder's C memory. It is idempotent; later calls of the
// other methods return an error.
func (e *Encoder) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st == nil {
		return
	}
	e.cleanup.Stop()
	C.opus_encoder_destroy(e.st)
	e.st = nil
}

// maxFrameMs is the longest Opus packet duration (RFC 6716: 120 ms).
const maxFrameMs = 120

// Decoder decodes Opus packets into s16le PCM.
// Its methods may be called from several goroutines; they are serialized.
type Decoder struct {
	mu       sync.Mutex
	st       *C.OpusDecoder // C memory, freed by Close or the cleanup
	cleanup  runtime.Cleanup
	channels int
	pcm      []int16 // output staging buffer: 120 ms, Go memory
}

// NewDecoder creates a decoder producing PCM at sampleRate (8000, 12000,
// 16000, 24000 or 48000) with channels (1 or 2) interleaved channels.
func NewDecoder(sampleRate, channels int) (*Decoder, error) {
	if err := checkFormat(sampleRate, channels); err != nil {
		return nil, err
	}
	var code C.int
	st := C.opus_decoder_create(C.opus_int32(sampleRate), C.int(channels), &code)
	if st == nil || code != C.OPUS_OK {
		if st != nil {
			C.opus_decoder_destroy(st)
		}
		return nil, opusError("creating decoder", code)
	}
	d := &Decoder{st: st, channels: channels, pcm: make([]int16, sampleRate*maxFrameMs/1000*channels)}
	d.cleanup = runtime.AddCleanup(d, func(st *C.OpusDecoder) { C.opus_decoder_destroy(st) }, st)
	return d, nil
}

// Decode decodes one Opus packet and returns its PCM as interleaved s16le
// in a freshly allocated slice. An empty packet is an error.
func (d *Decoder) Decode(packet []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st == nil {
		return nil, errClosed
	}
	if len(packet) == 0 {
		return nil, errors.New("opus: empty packet")
	}
	if len(packet) > 1<<20 {
		return nil, fmt.Errorf("opus: packet of %d bytes is too large", len(packet))
	}
	perChannel := len(d.pcm) / d.channels
	n := C.opus_decode(d.st, (*C.uchar)(unsafe.Pointer(&packet[0])), C.opus_int32(len(packet)),
		(*C.opus_int16)(unsafe.Pointer(&d.pcm[0])), C.int(perChannel), 0)
	runtime.KeepAlive(d)
	if n < 0 {
		return nil, opusError("decoding", n)
	}
	samples := d.pcm[:int(n)*d.channels]
	out := make([]byte, 2*len(samples))
	for i, s := range samples {
		out[2*i] = byte(s)
		out[2*i+1] = byte(uint16(s) >> 8)
	}
	return out, nil
}

// Close frees the decoder's C memory. It is idempotent.
func (d *Decoder) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st == nil {
		return
	}
	d.cleanup.Stop()
	C.opus_decoder_destroy(d.st)
	d.st = nil
}
