package cli

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/commucat/commucat/internal/media/opus"
	"github.com/commucat/commucat/internal/media/vp8"
)

const callSimulateUsage = "usage: commucat-cli call-simulate [frames] [--video]"

// Limits and settings of `call-simulate` (§12.2, §7.6).
const (
	callSimDefaultFrames = 64
	callSimMaxFrames     = 100000
	callSimSampleRate    = 48000
	callSimChannels      = 1
	callSimBitrate       = 16000 // bit/s
	callSimFrameSamples  = callSimSampleRate / 50

	// Video (--video): 640×480 I420 at 25 frames/s over the same duration
	// as the audio (one video frame per two 20 ms audio frames), with a
	// 1 Mbit/s target (§7.6 takes it in kbit/s).
	callSimWidth       = 640
	callSimHeight      = 480
	callSimFrameRate   = 25
	callSimVideoKbps   = 1000
	callSimAudioPerVid = 2
)

var errNoCodecs = errors.New("media codecs not available in this build")

// runCallSimulate implements `commucat-cli call-simulate [frames]` (§12.2):
// N 20 ms frames of a synthetic 48 kHz mono signal are encoded with the
// §7.6 Opus settings (16 000 bit/s, VoIP, in-band FEC on; DTX off, as the
// signal never pauses) and decoded again. It prints the spec's one line
// `simulated_frames=N encoded_bytes=M`, then snr_db= (decoded against the
// original, shifted by the encoder lookahead). With --video it also codes
// 640×480 I420 frames of a moving pattern with VP8 and prints
// video_frames=, video_encoded_bytes= and psnr_db= (luma PSNR).
func runCallSimulate(env *Env, args []string) int {
	frames, video, msg := parseCallSimArgs(args)
	if msg != "" {
		fmt.Fprintf(env.Stderr, "%s (%s)\n", callSimulateUsage, msg)
		return ExitUsage
	}
	if !opus.Available() {
		env.errorf("%v", errNoCodecs)
		return ExitFail
	}
	if video && !vp8.Available() {
		env.errorf("VP8 codec not available in this build")
		return ExitFail
	}
	encoded, snr, err := simulateAudio(frames)
	if err != nil {
		if errors.Is(err, opus.ErrUnavailable) {
			err = errNoCodecs
		}
		env.errorf("%v", err)
		return ExitFail
	}
	var vFrames, vBytes int
	var psnr float64
	if video {
		vFrames = max(1, frames/callSimAudioPerVid)
		if vBytes, psnr, err = simulateVideo(vFrames); err != nil {
			env.errorf("%v", err)
			return ExitFail
		}
	}
	fmt.Fprintf(env.Stdout, "simulated_frames=%d encoded_bytes=%d\n", frames, encoded)
	fmt.Fprintf(env.Stdout, "snr_db=%s\n", formatDB(snr))
	if video {
		fmt.Fprintf(env.Stdout, "video_frames=%d\nvideo_encoded_bytes=%d\npsnr_db=%s\n", vFrames, vBytes, formatDB(psnr))
	}
	return ExitOK
}

// parseCallSimArgs parses `[frames] [--video]`; msg is set on a usage
// error.
func parseCallSimArgs(args []string) (frames int, video bool, msg string) {
	pos, msg := parseArgs(args, nil, map[string]*bool{"--video": &video})
	frames = callSimDefaultFrames
	switch {
	case msg != "":
	case len(pos) > 1:
		msg = "unknown argument " + pos[1]
	case len(pos) == 1:
		n, ok := parseDecimal(pos[0])
		if !ok || n < 1 || n > callSimMaxFrames {
			msg = fmt.Sprintf("frames must be a number from 1 to %d", callSimMaxFrames)
		}
		frames = n
	}
	return frames, video, msg
}

// parseDecimal accepts only plain decimal digits (no sign, no spaces).
func parseDecimal(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// formatDB prints a decibel value with one decimal ("inf" for a perfect
// match).
func formatDB(v float64) string {
	if math.IsInf(v, 1) {
		return "inf"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// callSimSample is the synthetic test signal at sample i: a 440 Hz tone
// at about 0.3 of full scale under a slow 3 Hz envelope (between 0.5 and 1).
func callSimSample(i int) int16 {
	t := float64(i) / callSimSampleRate
	env := 0.75 + 0.25*math.Sin(2*math.Pi*3*t)
	return int16(math.Round(10000 * env * math.Sin(2*math.Pi*440*t)))
}

// simulateAudio encodes and decodes frames 20 ms frames and returns the
// total size of the Opus packets and the SNR in dB.
func simulateAudio(frames int) (encodedBytes int, snrDB float64, err error) {
	enc, err := opus.NewEncoder(opus.EncoderConfig{
		SampleRate: callSimSampleRate, Channels: callSimChannels,
		Bitrate: callSimBitrate, FEC: true,
	})
	if err != nil {
		return 0, 0, err
	}
	defer enc.Close()
	dec, err := opus.NewDecoder(callSimSampleRate, callSimChannels)
	if err != nil {
		return 0, 0, err
	}
	defer dec.Close()

	total := frames * callSimFrameSamples
	decoded := make([]int16, 0, total)
	pcm := make([]byte, enc.FrameBytes())
	for f := range frames {
		for j := range callSimFrameSamples {
			binary.LittleEndian.PutUint16(pcm[2*j:], uint16(callSimSample(f*callSimFrameSamples+j)))
		}
		pkt, err := enc.Encode(pcm)
		if err != nil {
			return 0, 0, err
		}
		encodedBytes += len(pkt)
		out, err := dec.Decode(pkt)
		if err != nil {
			return 0, 0, err
		}
		for j := 0; j+1 < len(out); j += 2 {
			decoded = append(decoded, int16(binary.LittleEndian.Uint16(out[j:])))
		}
	}
	return encodedBytes, audioSNR(decoded, total, enc.Lookahead()), nil
}

// audioSNR compares the decoded samples with the original signal. The
// decoder's output lags the input by the encoder delay: decoded[i+L]
// corresponds to original[i]. L is nominally the encoder lookahead, but in
// the SILK modes that 16 kbit/s selects the true delay is a few samples
// shorter, and a waveform SNR is very sensitive to that (about 9 dB at the
// nominal lookahead against about 30 dB at the true delay for this
// signal). So the lag is refined within ±1 ms of the lookahead to the one
// with the least error, measured on the first 2 s; the SNR then covers the
// whole signal.
func audioSNR(decoded []int16, total, lookahead int) float64 {
	snrAt := func(lag, n int) float64 {
		var sig, noise float64
		for i := 0; i+lag < len(decoded) && i < n; i++ {
			o := float64(callSimSample(i))
			d := float64(decoded[i+lag]) - o
			sig += o * o
			noise += d * d
		}
		return ratioDB(sig, noise)
	}
	const window = callSimSampleRate / 1000 // 1 ms
	probe := min(total, 2*callSimSampleRate)
	best, bestSNR := lookahead, snrAt(lookahead, probe)
	for lag := max(0, lookahead-window); lag <= lookahead+window; lag++ {
		if s := snrAt(lag, probe); s > bestSNR {
			best, bestSNR = lag, s
		}
	}
	return snrAt(best, total)
}

// ratioDB is 10·log10(sig/noise); +Inf when noise is 0 and sig is not.
func ratioDB(sig, noise float64) float64 {
	if noise == 0 {
		if sig == 0 {
			return 0
		}
		return math.Inf(1)
	}
	if sig == 0 {
		return math.Inf(-1)
	}
	return 10 * math.Log10(sig/noise)
}

// callSimPicture fills buf (one 640×480 I420 frame) with frame f of a
// moving pattern: diagonal luma waves drifting right and down, a bright
// square crossing the picture and slowly changing chroma gradients.
func callSimPicture(buf []byte, f int) {
	w, h := callSimWidth, callSimHeight
	y := buf[:w*h]
	for r := range h {
		for c := range w {
			v := 128 + 50*math.Sin(float64(c+4*f)/23) + 35*math.Cos(float64(r+2*f)/17)
			y[r*w+c] = byte(math.Round(v))
		}
	}
	sx, sy := (f*6)%(w-80), (f*4)%(h-80)
	for r := sy; r < sy+80; r++ {
		for c := sx; c < sx+80; c++ {
			y[r*w+c] = 235
		}
	}
	cw, ch := (w+1)/2, (h+1)/2
	u, v := buf[w*h:w*h+cw*ch], buf[w*h+cw*ch:]
	for r := range ch {
		for c := range cw {
			u[r*cw+c] = byte(96 + (c+f)%64)
			v[r*cw+c] = byte(160 - (r+f)%64)
		}
	}
}

// simulateVideo encodes and decodes frames VP8 frames and returns the total
// size of the VP8 frames and the luma PSNR in dB over the frames the
// decoder showed.
func simulateVideo(frames int) (encodedBytes int, psnrDB float64, err error) {
	enc, err := vp8.NewEncoder(vp8.EncoderConfig{
		Width: callSimWidth, Height: callSimHeight, FrameRate: callSimFrameRate, BitrateKbps: callSimVideoKbps,
	})
	if err != nil {
		return 0, 0, err
	}
	defer enc.Close()
	dec, err := vp8.NewDecoder()
	if err != nil {
		return 0, 0, err
	}
	defer dec.Close()
	in := make([]byte, vp8.FrameSize(callSimWidth, callSimHeight))
	luma := callSimWidth * callSimHeight
	var sse float64
	var samples int
	for f := range frames {
		callSimPicture(in, f)
		pkt, _, err := enc.Encode(in)
		if err != nil {
			return 0, 0, err
		}
		if pkt == nil {
			continue // dropped by rate control: nothing to decode
		}
		encodedBytes += len(pkt)
		pic, w, h, err := dec.Decode(pkt)
		if err != nil {
			return 0, 0, err
		}
		if pic == nil || w != callSimWidth || h != callSimHeight {
			continue
		}
		for i := range luma {
			d := float64(pic[i]) - float64(in[i])
			sse += d * d
		}
		samples += luma
	}
	if samples == 0 {
		return encodedBytes, 0, errors.New("vp8: the decoder showed no picture")
	}
	return encodedBytes, ratioDB(255*255, sse/float64(samples)), nil
}
