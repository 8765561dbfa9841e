package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/servertest"
)

func TestMediaHeaderHelpers(t *testing.T) {
	if got := OpusFrame([]byte("pkt")); !bytes.Equal(got, []byte("\x01\x00\x00pkt")) {
		t.Fatalf("OpusFrame %q", got)
	}
	if got := RawPCMFrame([]byte{9}); !bytes.Equal(got, []byte{1, 1, 1, 9}) {
		t.Fatalf("RawPCMFrame %v", got)
	}
	if got := VP8Frame([]byte{7}); !bytes.Equal(got, []byte{1, 0, 1, 7}) {
		t.Fatalf("VP8Frame %v", got)
	}
	if got := RawI420Frame(nil); !bytes.Equal(got, []byte{1, 1, 0}) {
		t.Fatalf("RawI420Frame %v", got)
	}
	if got := VideoFrame(SourceHybrid, VideoAV1Main, []byte("x")); !bytes.Equal(got, []byte("\x01\x02\x06x")) {
		t.Fatalf("VideoFrame %q", got)
	}

	// Every header combination against §7.3.
	for src := range 4 {
		for codec := range 8 {
			for _, ver := range []byte{0, 1, 2} {
				h := MediaHeader{ver, byte(src), byte(codec)}
				coded := src == SourceEncoded || src == SourceHybrid
				wantVoice := ver == 1 && (coded && codec == 0 || src == SourceRaw && codec == 1)
				wantVideo := ver == 1 && (coded && codec >= 1 && codec <= 6 || src == SourceRaw && codec == 0)
				if h.Valid(ccp.VoiceFrame) != wantVoice || h.Valid(ccp.VideoFrame) != wantVideo {
					t.Errorf("%+v: voice %v video %v", h, h.Valid(ccp.VoiceFrame), h.Valid(ccp.VideoFrame))
				}
				if h.Valid(ccp.Msg) {
					t.Errorf("%+v valid for MSG", h)
				}
				_, data, err := ParseMedia(ccp.VoiceFrame, AppendMedia(nil, h, []byte("d")))
				if (err == nil) != wantVoice || (err == nil && string(data) != "d") || (err != nil && !errors.Is(err, ErrMediaHeader)) {
					t.Errorf("ParseMedia voice %+v: %q %v", h, data, err)
				}
			}
		}
	}
	for _, p := range [][]byte{nil, {1}, {1, 0}} {
		if _, _, err := ParseMedia(ccp.VoiceFrame, p); !errors.Is(err, ErrMediaHeader) {
			t.Errorf("ParseMedia(%v): %v", p, err)
		}
	}
	h, d := LegacyMedia(ccp.VideoFrame, []byte("vp8"))
	if h != (MediaHeader{1, 0, 1}) || string(d) != "vp8" {
		t.Fatalf("LegacyMedia video %+v %q", h, d)
	}
	h, _ = LegacyMedia(ccp.VoiceFrame, nil)
	if h != (MediaHeader{1, 0, 0}) {
		t.Fatalf("LegacyMedia voice %+v", h)
	}

	// The raw sizes of §7.4.
	for _, c := range []struct{ rate, ch, want int }{{8000, 1, 320}, {16000, 1, 640}, {24000, 1, 960}, {48000, 1, 1920}, {48000, 2, 3840}} {
		if got := RawPCMSize(c.rate, c.ch); got != c.want {
			t.Errorf("RawPCMSize(%d, %d) = %d, want %d", c.rate, c.ch, got, c.want)
		}
	}
	for _, c := range []struct{ w, h, want int }{{640, 360, 345600}, {1280, 720, 1382400}, {1920, 1080, 3110400}, {3, 3, 9 + 2*4}} {
		if got := RawI420Size(c.w, c.h); got != c.want {
			t.Errorf("RawI420Size(%d, %d) = %d, want %d", c.w, c.h, got, c.want)
		}
	}
}

// TestCallPayloadsParseOnTheServer checks the builders against the
// server's own §7.1 parsers.
func TestCallPayloadsParseOnTheServer(t *testing.T) {
	prof := &MediaProfile{
		Audio: AudioParameters{Codec: "opus", Bitrate: 32000, SampleRate: 48000, Channels: 1, Source: "raw"},
		Video: &VideoParameters{Codec: "vp8", MaxBitrate: 500000, MaxResolution: Resolution{320, 240}, FrameRate: 30, Source: "raw"},
	}
	if prof.RawPCMSize() != 1920 || prof.RawI420Size() != 115200 {
		t.Fatalf("profile sizes %d %d", prof.RawPCMSize(), prof.RawI420Size())
	}
	p, err := CallOffer{CallID: "c1", From: "dev-a", Media: prof, Sender: "forged"}.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(p), `"to":[]`) || strings.Contains(string(p), "forged") {
		t.Fatalf("offer %s", p)
	}
	_, sp, err := media.ParseOffer(p)
	if err != nil {
		t.Fatalf("server rejects %s: %v", p, err)
	}
	if sp.AudioCodec != "opus" || sp.SampleRate != 48000 || sp.AudioSource != "raw" || !sp.HasVideo || sp.Width != 320 || sp.Height != 240 || sp.FrameRate != 30 || sp.VideoRate != 500000 {
		t.Fatalf("server profile %+v", sp)
	}
	// The default profile of §7.1 equals the server's.
	def := DefaultMediaProfile()
	p, _ = CallOffer{CallID: "c0", From: "a", Media: &def}.Payload()
	if _, sp, err := media.ParseOffer(p); err != nil || sp != media.DefaultProfile() {
		t.Fatalf("default profile %+v (%v), server %+v", sp, err, media.DefaultProfile())
	}

	p, err = CallAnswer{CallID: "c1", Accept: false, Reason: "busy"}.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if a, _, err := media.ParseAnswer(p); err != nil || *a.Accept || *a.Reason != "busy" {
		t.Fatalf("answer %s: %v", p, err)
	}
	p, _ = CallAnswer{CallID: "c1", Accept: true, Media: prof}.Payload()
	if _, ap, err := media.ParseAnswer(p); err != nil || ap == nil || ap.VideoCodec != "vp8" {
		t.Fatalf("answer %s: %v", p, err)
	}
	p, _ = CallEnd{CallID: "c1"}.Payload()
	if e, err := media.ParseEnd(p); err != nil || *e.Reason != "hangup" {
		t.Fatalf("end %s: %v", p, err)
	}
	p, _ = CallStats{CallID: "c1", Audio: &MediaStats{Bitrate: 1}, Video: ptr(MediaStats{Bitrate: 2}.Loss(0.25))}.Payload()
	if s, err := media.ParseStats(p); err != nil || *s.Direction != "receive" || *s.Video.PacketLoss != 0.25 || s.Audio.PacketLoss != nil {
		t.Fatalf("stats %s: %v", p, err)
	}

	// Invalid inputs are refused before anything is sent.
	for name, f := range map[string]func() ([]byte, error){
		"offer without id":   CallOffer{From: "a"}.Payload,
		"offer bad codec":    CallOffer{CallID: "x", Media: &MediaProfile{Audio: AudioParameters{Codec: "mp3"}}}.Payload,
		"offer bad video":    CallOffer{CallID: "x", Media: &MediaProfile{Audio: AudioParameters{Codec: "opus"}, Video: &VideoParameters{Codec: "mpeg2"}}}.Payload,
		"answer without id":  CallAnswer{Accept: true}.Payload,
		"answer bad reason":  CallAnswer{CallID: "x", Reason: "meh"}.Payload,
		"end bad reason":     CallEnd{CallID: "x", Reason: "bye"}.Payload,
		"end without id":     CallEnd{}.Payload,
		"stats bad dir":      CallStats{CallID: "x", Direction: "up"}.Payload,
		"stats negative":     CallStats{CallID: "x", Audio: ptr(MediaStats{}.Loss(-1))}.Payload,
		"stats without id":   CallStats{}.Payload,
		"offer bad mode":     CallOffer{CallID: "x", Media: &MediaProfile{Audio: AudioParameters{Codec: "opus"}, Mode: "simplex"}}.Payload,
		"offer bad a source": CallOffer{CallID: "x", Media: &MediaProfile{Audio: AudioParameters{Codec: "opus", Source: "magic"}}}.Payload,
	} {
		if _, err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if a, b := NewCallID(), NewCallID(); len(a) != 32 || a == b {
		t.Fatalf("NewCallID %q %q", a, b)
	}
}

func ptr[T any](v T) *T { return &v }

func TestParseCall(t *testing.T) {
	ev, err := ParseCall(2, ccp.CallOffer, 5, []byte(`{"call_id":"c","from":"a","to":[],"sender":"dev-a","media":{"audio":{"codec":"opus","bitrate":1,"sample_rate":48000,"channels":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	o, ok := ev.(*OfferEvent)
	if !ok || o.Channel != 5 || o.Offer.CallID != "c" || o.Offer.Sender != "dev-a" || o.Offer.Media.Audio.SampleRate != 48000 {
		t.Fatalf("%#v", ev)
	}
	ev, _ = ParseCall(2, ccp.CallAnswer, 5, []byte(`{"call_id":"c","accept":true}`))
	if a, ok := ev.(*AnswerEvent); !ok || !a.Answer.Accept {
		t.Fatalf("%#v", ev)
	}
	ev, _ = ParseCall(2, ccp.CallEnd, 5, []byte(`{"call_id":"c","metadata":{"cause":"disconnect","device":"b","system":true},"reason":"failure"}`))
	if e, ok := ev.(*EndEvent); !ok || !e.End.System() || e.End.Reason != "failure" {
		t.Fatalf("%#v", ev)
	}
	ev, _ = ParseCall(2, ccp.CallEnd, 5, []byte(`{"call_id":"c","metadata":{"system":true},"reason":"hangup","sender":"x"}`))
	if e := ev.(*EndEvent); e.End.System() {
		t.Fatal("a relayed CALL_END with a sender is not a system end")
	}
	ev, _ = ParseCall(2, ccp.CallStats, 5, []byte(`{"call_id":"c","direction":"receive","audio":{"bitrate":5,"packet_loss":0.5}}`))
	if s, ok := ev.(*StatsEvent); !ok || *s.Stats.Audio.PacketLoss != 0.5 {
		t.Fatalf("%#v", ev)
	}
	ev, err = ParseCall(2, ccp.VoiceFrame, 5, []byte("\x01\x00\x00opus"))
	if m, ok := ev.(*MediaEvent); err != nil || !ok || string(m.Data) != "opus" || m.Header.Codec != AudioOpus {
		t.Fatalf("%#v %v", ev, err)
	}
	if _, err := ParseCall(2, ccp.VideoFrame, 5, []byte("\x01\x00\x00x")); !errors.Is(err, ErrMediaHeader) {
		t.Fatalf("raw_i420 with source encoded: %v", err)
	}
	ev, _ = (&Message{Type: ccp.VideoFrame, Channel: 3, Payload: []byte("bare")}).CallEvent(1)
	if m := ev.(*MediaEvent); m.Header.Codec != VideoVP8 || string(m.Data) != "bare" || m.Channel != 3 {
		t.Fatalf("v1 %#v", m)
	}
	for _, c := range []struct {
		t ccp.FrameType
		p string
	}{{ccp.CallOffer, `[]`}, {ccp.CallAnswer, `{"accept":"yes"}`}, {ccp.CallEnd, `1`}, {ccp.CallStats, `"x"`}, {ccp.Msg, `{}`}} {
		if ev, err := ParseCall(2, c.t, 1, []byte(c.p)); err == nil || ev != nil {
			t.Errorf("%v %s: %v %v", c.t, c.p, ev, err)
		}
	}
	if !IsCall(ccp.VoiceFrame) || !IsCall(ccp.CallStats) || IsCall(ccp.Msg) {
		t.Fatal("IsCall")
	}
}

// TestCallHelpersOnServer places a call between two SDK clients on a real
// server: Client.OfferCall, events parsed with Message.CallEvent,
// AnswerCall, passthrough media, stats and EndCall.
func TestCallHelpersOnServer(t *testing.T) {
	s := servertest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	newClient := func(dev string) (*Client, *Conn, chan Event) {
		id, err := NewIdentity(dev, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := New(Options{URL: s.URL, TLSConfig: s.TLS(), Identity: id, Handle: "h-" + dev})
		cctx, ccancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { c.Run(cctx); close(done) }()
		t.Cleanup(func() { ccancel(); <-done })
		events := make(chan Event, 1024)
		go func() {
			for ev := range c.Events() {
				events <- ev
			}
		}()
		conn, err := c.WaitConnected(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c, conn, events
	}
	alice, aconn, aev := newClient("calls-alice")
	bob, _, bev := newClient("calls-bob")
	next := func(events chan Event, want ccp.FrameType) CallEvent {
		t.Helper()
		for {
			select {
			case ev := <-events:
				m, ok := ev.(*Message)
				if !ok || m.Type != want {
					if se, ok := ev.(*ServerError); ok {
						t.Fatalf("server error %+v", se.Problem)
					}
					continue
				}
				ce, err := m.CallEvent(2)
				if err != nil {
					t.Fatalf("%v %q: %v", m.Type, m.Payload, err)
				}
				return ce
			case <-ctx.Done():
				t.Fatalf("no %v", want)
			}
		}
	}
	if _, err := alice.Join(ctx, 42, []string{"calls-bob"}, ""); err != nil {
		t.Fatal(err)
	}
	prof := DefaultMediaProfile()
	ack, err := alice.OfferCall(ctx, 42, CallOffer{To: []string{"calls-bob"}, Media: &prof})
	if err != nil {
		t.Fatal(err)
	}
	if len(ack.CallID) != 32 {
		t.Fatalf("offer ack %+v", ack)
	}
	off := next(bev, ccp.CallOffer).(*OfferEvent)
	if off.Offer.CallID != ack.CallID || off.Offer.Sender != "calls-alice" || off.Offer.From != "calls-alice" || off.Channel != 42 {
		t.Fatalf("offer %s", off.Raw)
	}
	aack, err := bob.AnswerCall(ctx, 42, CallAnswer{CallID: off.Offer.CallID, Accept: true})
	if err != nil || aack.Accept == nil || !*aack.Accept || aack.CallID != ack.CallID {
		t.Fatalf("answer ack %+v %v", aack, err)
	}
	if ans := next(aev, ccp.CallAnswer).(*AnswerEvent); !ans.Answer.Accept || ans.Answer.Sender != "calls-bob" {
		t.Fatalf("answer %s", ans.Raw)
	}
	// Encoded media passes through byte for byte (no codec needed).
	for i := range 5 {
		pkt := []byte(fmt.Sprintf("opus-%d", i))
		if err := alice.SendVoice(ctx, 42, OpusFrame(pkt)); err != nil {
			t.Fatal(err)
		}
		m := next(bev, ccp.VoiceFrame).(*MediaEvent)
		if !bytes.Equal(m.Data, pkt) || m.Header != (MediaHeader{1, SourceEncoded, AudioOpus}) {
			t.Fatalf("voice %+v %q", m.Header, m.Data)
		}
	}
	if err := aconn.SendVideo(ctx, 42, VideoFrame(SourceHybrid, VideoH264Main, []byte("h264"))); err != nil {
		t.Fatal(err)
	}
	if m := next(bev, ccp.VideoFrame).(*MediaEvent); string(m.Data) != "h264" || m.Header.Codec != VideoH264Main {
		t.Fatalf("video %+v", m)
	}
	// A bad header comes back as an unsolicited ERROR event.
	if err := alice.SendVoice(ctx, 42, []byte{2, 0, 0}); err != nil {
		t.Fatal(err)
	}
	for {
		ev := <-aev
		if se, ok := ev.(*ServerError); ok {
			if se.Problem.Title != ccp.TitleUnsupportedMedia {
				t.Fatalf("ERROR %+v", se.Problem)
			}
			break
		}
	}
	sack, err := bob.SendCallStats(ctx, 42, CallStats{CallID: ack.CallID, Audio: ptr(MediaStats{Bitrate: 16000}.Loss(0.02))})
	if err != nil || sack.Direction != "receive" {
		t.Fatalf("stats ack %+v %v", sack, err)
	}
	if st := next(aev, ccp.CallStats).(*StatsEvent); *st.Stats.Audio.PacketLoss != 0.02 {
		t.Fatalf("stats %s", st.Raw)
	}
	eack, err := alice.EndCall(ctx, 42, CallEnd{CallID: ack.CallID})
	if err != nil || eack.Reason != "hangup" {
		t.Fatalf("end ack %+v %v", eack, err)
	}
	if e := next(bev, ccp.CallEnd).(*EndEvent); e.End.Reason != "hangup" || e.End.System() {
		t.Fatalf("end %s", e.Raw)
	}
	// Answering an ended call: the ERROR is the request's error.
	_, err = bob.AnswerCall(ctx, 42, CallAnswer{CallID: ack.CallID, Accept: true})
	var ef *ErrorFrame
	if !errors.As(err, &ef) || ef.Problem.Title != ccp.TitleNotFound {
		t.Fatalf("answer after end: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(off.Raw, &raw); err != nil || raw["media"] == nil {
		t.Fatalf("raw offer %s", off.Raw)
	}
}
