//go:build cgo && !nocodecs && !novpx

package vp8

/*
#cgo pkg-config: vpx
#include <stdlib.h>
#include <string.h>
#include <vpx/vpx_encoder.h>
#include <vpx/vpx_decoder.h>
#include <vpx/vp8cx.h>
#include <vpx/vp8dx.h>

// One encoder. libvpx keeps a pointer to cfg (vpx_codec_enc_init stores
// it in ctx), so cfg must live as long as ctx: everything sits in one C
// allocation.
typedef struct {
	vpx_codec_ctx_t ctx;
	vpx_codec_enc_cfg_t cfg;
	vpx_image_t img;
	unsigned char *buf; // tight I420 input, w*h + 2*cw*ch bytes
	int init;
} cc_vp8enc;

static void cc_vp8enc_free(cc_vp8enc *e) {
	if (e == NULL) return;
	if (e->init) vpx_codec_destroy(&e->ctx);
	free(e->buf);
	free(e);
}

// cc_vp8enc_new applies the settings of spec §7.6. On failure it returns
// NULL and a message in *err (static storage).
static cc_vp8enc *cc_vp8enc_new(int w, int h, int fps, int kbps, int cpu, const char **err) {
	cc_vp8enc *e = calloc(1, sizeof *e);
	if (e == NULL) { *err = "out of memory"; return NULL; }
	int cw = (w + 1) / 2, ch = (h + 1) / 2;
	e->buf = malloc((size_t)w * h + 2 * (size_t)cw * ch);
	if (e->buf == NULL) { *err = "out of memory"; cc_vp8enc_free(e); return NULL; }
	vpx_codec_err_t rc = vpx_codec_enc_config_default(vpx_codec_vp8_cx(), &e->cfg, 0);
	if (rc != VPX_CODEC_OK) { *err = vpx_codec_err_to_string(rc); cc_vp8enc_free(e); return NULL; }
	e->cfg.g_w = w;
	e->cfg.g_h = h;
	e->cfg.g_timebase.num = 1;
	e->cfg.g_timebase.den = fps;
	e->cfg.g_threads = 2;
	e->cfg.g_pass = VPX_RC_ONE_PASS;
	e->cfg.g_lag_in_frames = 0;
	e->cfg.g_error_resilient = VPX_ERROR_RESILIENT_DEFAULT;
	e->cfg.rc_end_usage = VPX_CBR;
	e->cfg.rc_target_bitrate = kbps;
	e->cfg.rc_min_quantizer = 2;
	e->cfg.rc_max_quantizer = 56;
	e->cfg.kf_mode = VPX_KF_AUTO;
	e->cfg.kf_min_dist = 0;
	e->cfg.kf_max_dist = 10 * fps;
	rc = vpx_codec_enc_init(&e->ctx, vpx_codec_vp8_cx(), &e->cfg, 0);
	if (rc != VPX_CODEC_OK) { *err = vpx_codec_err_to_string(rc); cc_vp8enc_free(e); return NULL; }
	e->init = 1;
	rc = vpx_codec_control(&e->ctx, VP8E_SET_CPUUSED, cpu);
	if (rc != VPX_CODEC_OK) { *err = vpx_codec_err_to_string(rc); cc_vp8enc_free(e); return NULL; }
	// Describe buf as a tight I420 image: vpx_img_wrap would round the
	// strides of odd sizes up, so planes and strides are set by hand.
	if (vpx_img_wrap(&e->img, VPX_IMG_FMT_I420, w, h, 1, e->buf) == NULL) {
		*err = "vpx_img_wrap failed"; cc_vp8enc_free(e); return NULL;
	}
	e->img.planes[VPX_PLANE_Y] = e->buf;
	e->img.planes[VPX_PLANE_U] = e->buf + (size_t)w * h;
	e->img.planes[VPX_PLANE_V] = e->buf + (size_t)w * h + (size_t)cw * ch;
	e->img.stride[VPX_PLANE_Y] = w;
	e->img.stride[VPX_PLANE_U] = cw;
	e->img.stride[VPX_PLANE_V] = cw;
	return e;
}

static unsigned char *cc_vp8enc_buf(cc_vp8enc *e) { return e->buf; }

// cc_vp8enc_encode encodes the frame in buf. *out points into libvpx
// memory valid until the next call; *out is NULL when no frame packet was
// produced. *count is the number of frame packets (at most 1 with lag 0).
static vpx_codec_err_t cc_vp8enc_encode(cc_vp8enc *e, long long pts, int force_kf,
		const void **out, size_t *len, int *key, int *count) {
	*out = NULL; *len = 0; *key = 0; *count = 0;
	vpx_codec_err_t rc = vpx_codec_encode(&e->ctx, &e->img, pts, 1,
		force_kf ? VPX_EFLAG_FORCE_KF : 0, VPX_DL_REALTIME);
	if (rc != VPX_CODEC_OK) return rc;
	vpx_codec_iter_t iter = NULL;
	const vpx_codec_cx_pkt_t *pkt;
	while ((pkt = vpx_codec_get_cx_data(&e->ctx, &iter)) != NULL) {
		if (pkt->kind != VPX_CODEC_CX_FRAME_PKT) continue;
		if (*count == 0) {
			*out = pkt->data.frame.buf;
			*len = pkt->data.frame.sz;
			*key = (pkt->data.frame.flags & VPX_FRAME_IS_KEY) != 0;
		}
		(*count)++;
	}
	return VPX_CODEC_OK;
}

static vpx_codec_err_t cc_vp8enc_set_kbps(cc_vp8enc *e, int kbps) {
	e->cfg.rc_target_bitrate = kbps;
	return vpx_codec_enc_config_set(&e->ctx, &e->cfg);
}

static const char *cc_vp8_error(vpx_codec_ctx_t *ctx) {
	const char *d = vpx_codec_error_detail(ctx);
	return d != NULL ? d : vpx_codec_error(ctx);
}

static const char *cc_vp8enc_error(cc_vp8enc *e) { return cc_vp8_error(&e->ctx); }

// One decoder with a C copy of the current packet (libvpx must never see
// Go memory it could keep).
typedef struct {
	vpx_codec_ctx_t ctx;
	unsigned char *buf;
	size_t cap;
} cc_vp8dec;

static void cc_vp8dec_free(cc_vp8dec *d) {
	if (d == NULL) return;
	vpx_codec_destroy(&d->ctx);
	free(d->buf);
	free(d);
}

static cc_vp8dec *cc_vp8dec_new(const char **err) {
	cc_vp8dec *d = calloc(1, sizeof *d);
	if (d == NULL) { *err = "out of memory"; return NULL; }
	vpx_codec_dec_cfg_t cfg = {0};
	cfg.threads = 1;
	vpx_codec_err_t rc = vpx_codec_dec_init(&d->ctx, vpx_codec_vp8_dx(), &cfg, 0);
	if (rc != VPX_CODEC_OK) { *err = vpx_codec_err_to_string(rc); free(d); return NULL; }
	return d;
}

// cc_vp8dec_buf returns a C buffer of at least n bytes for the next packet.
static unsigned char *cc_vp8dec_buf(cc_vp8dec *d, size_t n) {
	if (n > d->cap) {
		unsigned char *b = realloc(d->buf, n);
		if (b == NULL) return NULL;
		d->buf = b;
		d->cap = n;
	}
	return d->buf;
}

// cc_vp8dec_decode decodes the n bytes in buf and returns the image to
// show, or NULL in *img when the packet produced none.
static vpx_codec_err_t cc_vp8dec_decode(cc_vp8dec *d, size_t n, vpx_image_t **img) {
	*img = NULL;
	vpx_codec_err_t rc = vpx_codec_decode(&d->ctx, d->buf, (unsigned int)n, NULL, 0);
	if (rc != VPX_CODEC_OK) return rc;
	vpx_codec_iter_t iter = NULL;
	vpx_image_t *im, *last = NULL;
	while ((im = vpx_codec_get_frame(&d->ctx, &iter)) != NULL) last = im;
	*img = last;
	return VPX_CODEC_OK;
}

static const char *cc_vp8dec_error(cc_vp8dec *d) { return cc_vp8_error(&d->ctx); }

static unsigned char *cc_img_plane(vpx_image_t *im, int p) { return im->planes[p]; }
static int cc_img_stride(vpx_image_t *im, int p) { return im->stride[p]; }
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Available reports whether this build can encode and decode VP8.
func Available() bool { return true }

var errClosed = errors.New("vp8: use of a closed encoder or decoder")

// Encoder encodes I420 frames into VP8 frames.
// Its methods may be called from several goroutines; they are serialized.
type Encoder struct {
	mu       sync.Mutex
	e        *C.cc_vp8enc // C memory, freed by Close or the cleanup
	cleanup  runtime.Cleanup
	width    int
	height   int
	frame    int   // FrameSize(width, height)
	kfMax    int   // 10 × frame rate
	pts      int64 // next presentation time, in 1/frame_rate units
	sinceKey int   // frames since the last key frame, -1 before the first
}

// NewEncoder creates an encoder with the settings of §7.6: time base
// 1/frame_rate, CBR one pass with lag 0, error-resilient, quantizer 2..56,
// 2 threads, cpu-used 8 up to 640×480 pixels and 16 above, realtime
// deadline, key frames on the first frame and at least every
// 10 × frame_rate frames, target bitrate cfg.BitrateKbps kbit/s.
func NewEncoder(cfg EncoderConfig) (*Encoder, error) {
	cfg, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	var msg *C.char
	e := C.cc_vp8enc_new(C.int(cfg.Width), C.int(cfg.Height), C.int(cfg.FrameRate), C.int(cfg.BitrateKbps),
		C.int(cpuUsed(cfg.Width, cfg.Height)), &msg)
	if e == nil {
		return nil, fmt.Errorf("vp8: creating encoder: %s", C.GoString(msg))
	}
	enc := &Encoder{
		e:        e,
		width:    cfg.Width,
		height:   cfg.Height,
		frame:    FrameSize(cfg.Width, cfg.Height),
		kfMax:    10 * cfg.FrameRate,
		sinceKey: -1,
	}
	enc.cleanup = runtime.AddCleanup(enc, func(e *C.cc_vp8enc) { C.cc_vp8enc_free(e) }, e)
	return enc, nil
}

// FrameBytes is the size of one input frame: W·H + 2·⌈W/2⌉·⌈H/2⌉.
func (e *Encoder) FrameBytes() int { return e.frame }

// Encode encodes one I420 frame (Y, then U, then V, no padding; exactly
// FrameBytes bytes) and returns the VP8 frame in a freshly allocated slice
// and whether it is a key frame. frame is nil when the encoder emitted no
// packet for this input (a dropped frame). Any other input length is an
// error that never reaches libvpx.
func (e *Encoder) Encode(i420 []byte) (frame []byte, key bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.e == nil {
		return nil, false, errClosed
	}
	if len(i420) != e.frame {
		return nil, false, fmt.Errorf("vp8: input of %d bytes, want one %dx%d I420 frame of %d bytes",
			len(i420), e.width, e.height, e.frame)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(C.cc_vp8enc_buf(e.e))), e.frame), i420)
	force := 0
	if e.sinceKey < 0 || e.sinceKey+1 >= e.kfMax {
		force = 1
	}
	var (
		out          unsafe.Pointer
		n            C.size_t
		isKey, count C.int
	)
	rc := C.cc_vp8enc_encode(e.e, C.longlong(e.pts), C.int(force), &out, &n, &isKey, &count)
	if rc != C.VPX_CODEC_OK {
		err := fmt.Errorf("vp8: encoding: %s", C.GoString(C.cc_vp8enc_error(e.e)))
		runtime.KeepAlive(e)
		return nil, false, err
	}
	e.pts++
	if count > 1 {
		// Cannot happen with lag 0; dropping one would corrupt the stream.
		runtime.KeepAlive(e)
		return nil, false, fmt.Errorf("vp8: encoder emitted %d frames for one input", int(count))
	}
	if out == nil {
		runtime.KeepAlive(e)
		if e.sinceKey >= 0 {
			e.sinceKey++
		}
		return nil, false, nil
	}
	frame = C.GoBytes(out, C.int(n))
	runtime.KeepAlive(e)
	if isKey != 0 {
		e.sinceKey = 0
	} else {
		e.sinceKey++
	}
	return frame, isKey != 0, nil
}

// SetBitrateKbps changes the target bitrate in kbit/s (values below 1
// count as 1).
func (e *Encoder) SetBitrateKbps(kbps int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.e == nil {
		return errClosed
	}
	rc := C.cc_vp8enc_set_kbps(e.e, C.int(clampKbps(kbps)))
	var err error
	if rc != C.VPX_CODEC_OK {
		err = fmt.Errorf("vp8: setting bitrate: %s", C.GoString(C.cc_vp8enc_error(e.e)))
	}
	runtime.KeepAlive(e)
	return err
}

// Close frees the encoder's C memory. It is idempotent; later calls of the
// other methods return an error.
func (e *Encoder) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.e == nil {
		return
	}
	e.cleanup.Stop()
	C.cc_vp8enc_free(e.e)
	e.e = nil
}

// maxPacket bounds the packets Decode accepts.
const maxPacket = 64 << 20

// Decoder decodes VP8 frames into tight I420.
// Its methods may be called from several goroutines; they are serialized.
type Decoder struct {
	mu      sync.Mutex
	d       *C.cc_vp8dec // C memory, freed by Close or the cleanup
	cleanup runtime.Cleanup
}

// NewDecoder creates a VP8 decoder.
func NewDecoder() (*Decoder, error) {
	var msg *C.char
	d := C.cc_vp8dec_new(&msg)
	if d == nil {
		return nil, fmt.Errorf("vp8: creating decoder: %s", C.GoString(msg))
	}
	dec := &Decoder{d: d}
	dec.cleanup = runtime.AddCleanup(dec, func(d *C.cc_vp8dec) { C.cc_vp8dec_free(d) }, d)
	return dec, nil
}

// Decode decodes one VP8 frame and returns the picture as tight I420
// (Y W×H, then U and V ⌈W/2⌉×⌈H/2⌉) in a freshly allocated slice with
// its size. i420 is nil (and err nil) when the frame shows no picture.
// An empty frame is an error.
func (d *Decoder) Decode(frame []byte) (i420 []byte, w, h int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.d == nil {
		return nil, 0, 0, errClosed
	}
	if len(frame) == 0 {
		return nil, 0, 0, errors.New("vp8: empty frame")
	}
	if len(frame) > maxPacket {
		return nil, 0, 0, fmt.Errorf("vp8: frame of %d bytes is too large", len(frame))
	}
	buf := C.cc_vp8dec_buf(d.d, C.size_t(len(frame)))
	if buf == nil {
		return nil, 0, 0, errors.New("vp8: out of memory")
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(buf)), len(frame)), frame)
	var img *C.vpx_image_t
	if rc := C.cc_vp8dec_decode(d.d, C.size_t(len(frame)), &img); rc != C.VPX_CODEC_OK {
		err := fmt.Errorf("vp8: decoding: %s", C.GoString(C.cc_vp8dec_error(d.d)))
		runtime.KeepAlive(d)
		return nil, 0, 0, err
	}
	if img == nil {
		runtime.KeepAlive(d)
		return nil, 0, 0, nil
	}
	if img.fmt != C.VPX_IMG_FMT_I420 {
		runtime.KeepAlive(d)
		return nil, 0, 0, fmt.Errorf("vp8: decoder produced image format %d, want I420", int(img.fmt))
	}
	w, h = int(img.d_w), int(img.d_h)
	cw, ch := (w+1)/2, (h+1)/2
	i420 = make([]byte, FrameSize(w, h))
	dst := i420
	for p, size := range [3][2]int{{w, h}, {cw, ch}, {cw, ch}} {
		pw, ph := size[0], size[1]
		stride := int(C.cc_img_stride(img, C.int(p)))
		if stride < pw {
			runtime.KeepAlive(d)
			return nil, 0, 0, fmt.Errorf("vp8: decoder stride %d below width %d", stride, pw)
		}
		src := unsafe.Slice((*byte)(unsafe.Pointer(C.cc_img_plane(img, C.int(p)))), (ph-1)*stride+pw)
		for y := range ph {
			copy(dst[y*pw:(y+1)*pw], src[y*stride:y*stride+pw])
		}
		dst = dst[pw*ph:]
	}
	runtime.KeepAlive(d)
	return i420, w, h, nil
}

// Close frees the decoder's C memory. It is idempotent.
func (d *Decoder) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.d == nil {
		return
	}
	d.cleanup.Stop()
	C.cc_vp8dec_free(d.d)
	d.d = nil
}
