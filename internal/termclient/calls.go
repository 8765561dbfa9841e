package termclient

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/media/opus"
)

// Calls (spec §7): /call places a call on a channel, /answer accepts the
// incoming one, /hangup ends (or declines) it, /tone sends a test tone
// and /media shows the media frame counts. The client sends Opus it
// encodes itself when this build has libopus, else raw PCM for the
// server to transcode (when the server accepted media.raw-audio).

const (
	toneRate     = 48000
	toneBitrate  = 32000
	toneFreq     = 440.0
	toneDefault  = 3 // seconds
	toneMax      = 30
	frameSamples = toneRate / 50 // 20 ms
)

// callState is the one call the terminal client takes part in.
type callState struct {
	id       string
	ch       uint32
	peer     string // the other side's device ("" while unknown)
	outgoing bool
	active   bool // accepted by both sides
	voiceIn  int
	videoIn  int
	voiceOut int
	stopTone context.CancelFunc
}

// callCapabilities are offered in the HELLO: the server accepts them when
// it can transcode (§1.5), which lets /tone send raw PCM.
var callCapabilities = []string{client.CapOpus, client.CapRawAudio}

// callProfile is the media profile of /call: Opus at 48 kHz mono; the
// source is what /tone sends.
func callProfile() *client.MediaProfile {
	src := "raw"
	if opus.Available() {
		src = "encoded"
	}
	return &client.MediaProfile{Audio: client.AudioParameters{Codec: "opus", Bitrate: toneBitrate, SampleRate: toneRate, Channels: 1, Source: src}}
}

func (c *callState) counts() string {
	return fmt.Sprintf("received %d voice frames, %d video frames; sent %d voice frames", c.voiceIn, c.videoIn, c.voiceOut)
}

// takeCall clears the call state (stopping a tone) and returns it.
func (t *term) takeCall() *callState {
	t.mu.Lock()
	c := t.call
	t.call = nil
	t.mu.Unlock()
	if c != nil && c.stopTone != nil {
		c.stopTone()
	}
	return c
}

// callCommand handles /call, /answer, /hangup, /tone and /media; false
// when cmd is none of them.
func (t *term) callCommand(ctx context.Context, cmd string, args []string) bool {
	switch cmd {
	case "call":
		ch, ok := t.channelArg(args, "/call [channel]")
		if ok {
			t.placeCall(ctx, ch)
		}
	case "answer", "accept":
		t.answerCall(ctx)
	case "hangup", "hang", "decline", "reject":
		t.hangup(ctx)
	case "tone":
		secs := toneDefault
		if len(args) > 0 {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > toneMax || len(args) > 1 {
				t.out.line("! usage: /tone [seconds] (1-%d, default %d)", toneMax, toneDefault)
				return true
			}
			secs = n
		}
		t.startTone(ctx, secs)
	case "media":
		t.mu.Lock()
		c := t.call
		var line string
		if c != nil {
			line = fmt.Sprintf("* call on ch %d: %s", c.ch, c.counts())
		}
		t.mu.Unlock()
		if c == nil {
			t.out.line("* no call")
		} else {
			t.out.line("%s", line)
		}
	default:
		return false
	}
	return true
}

func (t *term) placeCall(ctx context.Context, ch uint32) {
	t.mu.Lock()
	if t.call != nil {
		t.mu.Unlock()
		t.out.line("! already in a call on ch %d (/hangup first)", t.call.ch)
		return
	}
	// Registered before the offer is sent: the answer may be handled
	// before the offer's ACK.
	c := &callState{id: client.NewCallID(), ch: ch, outgoing: true}
	t.call = c
	t.mu.Unlock()
	t.enqueue(ctx, op{what: fmt.Sprintf("call on ch %d not placed", ch), fn: func(ctx context.Context) error {
		_, err := t.cl.OfferCall(ctx, ch, client.CallOffer{CallID: c.id, From: t.self, To: []string{}, Media: callProfile()})
		if err != nil {
			t.mu.Lock()
			if t.call == c {
				t.call = nil
			}
			t.mu.Unlock()
			return err
		}
		t.out.line("* calling on ch %d; waiting for an answer (/hangup to cancel)", ch)
		return nil
	}})
}

func (t *term) answerCall(ctx context.Context) {
	t.mu.Lock()
	c := t.call
	t.mu.Unlock()
	if c == nil || c.outgoing || c.active {
		t.out.line("! no incoming call to answer")
		return
	}
	t.enqueue(ctx, op{what: "call not answered", fn: func(ctx context.Context) error {
		if _, err := t.cl.AnswerCall(ctx, c.ch, client.CallAnswer{CallID: c.id, Accept: true}); err != nil {
			return err
		}
		t.mu.Lock()
		c.active = true
		t.mu.Unlock()
		t.out.line("* call answered on ch %d (/tone to send a test tone, /hangup to end)", c.ch)
		return nil
	}})
}

func (t *term) hangup(ctx context.Context) {
	c := t.takeCall()
	if c == nil {
		t.out.line("! no call")
		return
	}
	t.enqueue(ctx, op{what: "hang-up not sent", fn: func(ctx context.Context) error {
		var err error
		if !c.outgoing && !c.active {
			_, err = t.cl.AnswerCall(ctx, c.ch, client.CallAnswer{CallID: c.id, Accept: false, Reason: "decline"})
		} else {
			reason := "hangup"
			if !c.active {
				reason = "cancel"
			}
			_, err = t.cl.EndCall(ctx, c.ch, client.CallEnd{CallID: c.id, Reason: reason})
		}
		if err != nil && !client.IsProblem(err, ccp.TitleNotFound) {
			return err
		}
		t.mu.Lock()
		counts := c.counts()
		t.mu.Unlock()
		t.out.line("* call on ch %d ended: %s", c.ch, counts)
		return nil
	}})
}

// startTone sends a 440 Hz tone for secs seconds in real time. It is
// queued behind the commands typed before (such as /answer) and then
// plays in the background.
func (t *term) startTone(ctx context.Context, secs int) {
	t.enqueue(ctx, op{fn: func(ctx context.Context) error {
		t.playTone(ctx, secs)
		return nil
	}})
}

func (t *term) playTone(ctx context.Context, secs int) {
	t.mu.Lock()
	c := t.call
	if c == nil || !c.active {
		t.mu.Unlock()
		t.out.line("! no active call (/call or /answer first)")
		return
	}
	if c.stopTone != nil {
		t.mu.Unlock()
		t.out.line("! a tone is already playing")
		return
	}
	tctx, cancel := context.WithCancel(ctx)
	c.stopTone = cancel
	t.mu.Unlock()
	go func() {
		defer cancel()
		n, kind, err := t.sendTone(tctx, c, secs)
		t.mu.Lock()
		c.stopTone = nil
		t.mu.Unlock()
		switch {
		case err != nil && tctx.Err() == nil:
			t.out.line("! tone stopped after %d frames: %s", n, describe(err))
		case err != nil:
			t.out.line("* tone stopped: sent %d voice frames (%s)", n, kind)
		default:
			t.out.line("* tone done: sent %d voice frames (%s)", n, kind)
		}
	}()
}

func (t *term) sendTone(ctx context.Context, c *callState, secs int) (int, string, error) {
	var enc *opus.Encoder
	kind := "opus"
	if opus.Available() {
		var err error
		enc, err = opus.NewEncoder(opus.EncoderConfig{SampleRate: toneRate, Channels: 1, Bitrate: toneBitrate})
		if err != nil {
			return 0, kind, err
		}
		defer enc.Close()
	} else {
		kind = "raw PCM"
		conn, err := t.cl.WaitConnected(ctx)
		if err != nil {
			return 0, kind, err
		}
		if !conn.HasCapability(client.CapRawAudio) {
			return 0, kind, errors.New("this client has no Opus encoder and the server does not transcode raw audio (media.raw-audio)")
		}
	}
	t.out.line("* sending a %g Hz tone for %d s (%s)", toneFreq, secs, kind)
	frames := secs * 50
	pcm := make([]byte, 2*frameSamples)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for i := range frames {
		for s := range frameSamples {
			v := 8000 * math.Sin(2*math.Pi*toneFreq*float64(i*frameSamples+s)/toneRate)
			binary.LittleEndian.PutUint16(pcm[2*s:], uint16(int16(v)))
		}
		var payload []byte
		if enc != nil {
			pkt, err := enc.Encode(pcm)
			if err != nil {
				return sent, kind, err
			}
			payload = client.OpusFrame(pkt)
		} else {
			payload = client.RawPCMFrame(pcm)
		}
		if err := t.cl.SendVoice(ctx, c.ch, payload); err != nil {
			return sent, kind, err
		}
		sent++
		t.mu.Lock()
		c.voiceOut++
		t.mu.Unlock()
		if i+1 < frames {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return sent, kind, ctx.Err()
			}
		}
	}
	return sent, kind, nil
}

// onCall handles a call or media frame from the server.
func (t *term) onCall(m *client.Message) {
	switch m.Type {
	case ccp.VoiceFrame, ccp.VideoFrame:
		t.mu.Lock()
		if c := t.call; c != nil && c.ch == m.Channel && c.active {
			if m.Type == ccp.VoiceFrame {
				c.voiceIn++
			} else {
				c.videoIn++
			}
		}
		t.mu.Unlock()
		return
	}
	ev, err := client.ParseCall(2, m.Type, m.Channel, m.Payload)
	if err != nil {
		t.out.line("[ch %d] (%s that does not parse: %s)", m.Channel, m.Type, short(err.Error()))
		return
	}
	switch ev := ev.(type) {
	case *client.OfferEvent:
		t.mu.Lock()
		busy := t.call != nil
		if !busy {
			t.call = &callState{id: ev.Offer.CallID, ch: m.Channel, peer: m.Sender}
		}
		t.mu.Unlock()
		if busy {
			t.out.line("* missed call from %s on ch %d (already in a call)", senderName(m.Sender), m.Channel)
			return
		}
		t.out.line("* incoming call from %s on ch %d (/answer to accept, /hangup to decline)", senderName(m.Sender), m.Channel)
	case *client.AnswerEvent:
		t.mu.Lock()
		c := t.call
		mine := c != nil && c.id == ev.Answer.CallID
		if mine && ev.Answer.Accept {
			c.active, c.peer = true, m.Sender
		}
		t.mu.Unlock()
		switch {
		case !mine:
		case ev.Answer.Accept:
			t.out.line("* call accepted by %s on ch %d (/tone to send a test tone, /hangup to end)", senderName(m.Sender), m.Channel)
		default:
			t.takeCall()
			reason := ev.Answer.Reason
			if reason == "" {
				reason = "no reason"
			}
			t.out.line("* call declined by %s (%s)", senderName(m.Sender), short(reason))
		}
	case *client.EndEvent:
		t.mu.Lock()
		c := t.call
		mine := c != nil && c.id == ev.End.CallID
		t.mu.Unlock()
		if !mine {
			return
		}
		t.takeCall()
		by := senderName(m.Sender)
		if ev.End.System() {
			by = "the server"
		}
		t.mu.Lock()
		counts := c.counts()
		t.mu.Unlock()
		t.out.line("* call ended by %s (%s): %s", by, short(ev.End.Reason), counts)
	case *client.StatsEvent:
		// Stats of the peer are not shown.
	}
}

// onCallDisconnected drops the call when the connection is lost: the
// server ends it (§6.10).
func (t *term) onCallDisconnected() {
	if c := t.takeCall(); c != nil {
		t.mu.Lock()
		counts := c.counts()
		t.mu.Unlock()
		t.out.line("* call on ch %d dropped (disconnected): %s", c.ch, counts)
	}
}
