package media

import (
	"testing"

	"github.com/commucat/commucat/ccp"
)

// The call signalling parsers and the media frame check take any bytes a
// client sends: no panic, and an accepted offer has a usable profile.
func FuzzSignalling(f *testing.F) {
	for _, s := range []string{
		`{"call_id":"c1","from":"a","to":["b"],"media":{"audio":{"codec":"opus","bitrate":16000,"sample_rate":48000,"channels":1}}}`,
		`{"call_id":"c1","accept":true}`,
		`{"call_id":"c1","reason":"hangup"}`,
		`{"call_id":"c1","direction":"receive","packet_loss":0.1}`,
		`{}`, `[]`, `null`, `{"call_id":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, prof, err := ParseOffer(b); err == nil {
			if o == nil {
				t.Fatal("nil offer without error")
			}
			_ = prof
		}
		_, _, _ = ParseAnswer(b)
		_, _ = ParseEnd(b)
		_, _ = ParseStats(b)
	})
}

// Media frames from a participant of a real call: never a panic, whatever
// the header and body.
func FuzzMedia(f *testing.F) {
	f.Add(uint8(0), []byte{1, 0, 0, 0xfc, 0xff, 0xfe})
	f.Add(uint8(1), []byte{1, 1, 1})
	f.Add(uint8(0), []byte{2})
	// No codecs: raw frames are checked and refused, encoded ones relayed.
	m := NewManager(Config{Deliver: func(string, ccp.FrameType, uint32, []byte) {}})
	f.Cleanup(m.Close)
	offer := []byte(`{"call_id":"fz","from":"a","to":["b"],"media":{"audio":{"codec":"opus","bitrate":16000,"sample_rate":48000,"channels":1},"video":{"codec":"vp8","max_bitrate":500,"max_resolution":{"width":64,"height":48},"frame_rate":15,"source":"raw"}}}`)
	if _, e := m.Offer("a", 5, 1, offer, offer, []string{"a", "b"}); e != nil {
		f.Fatalf("offer: %+v", e)
	}
	if _, e := m.Answer("b", 5, 1, []byte(`{"call_id":"fz","accept":true}`), []byte(`{"call_id":"fz","accept":true}`)); e != nil {
		f.Fatalf("answer: %+v", e)
	}
	f.Fuzz(func(t *testing.T, kind uint8, p []byte) {
		ft := ccp.VoiceFrame
		if kind%2 == 1 {
			ft = ccp.VideoFrame
		}
		_ = m.Media(Sender{Device: "a", RawAudio: true, RawVideo: true}, ft, 5, p)
	})
}
