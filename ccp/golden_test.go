package ccp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

type encoderVector struct {
	Name       string `json:"name"`
	Type       uint8  `json:"type"`
	Channel    uint32 `json:"channel"`
	Sequence   uint32 `json:"sequence"`
	PayloadHex string `json:"payload_hex"`
	Hex        string `json:"hex"`
	HexPrefix  string `json:"hex_prefix"`
	Length     int    `json:"length"`
}

type outcome struct {
	Error      string  `json:"error"`
	Fatal      bool    `json:"fatal"`
	Consumed   int     `json:"consumed"`
	FrameType  *uint8  `json:"frame_type"`
	Channel    *uint32 `json:"channel"`
	Sequence   *uint32 `json:"sequence"`
	Type       uint8   `json:"type"`
	PayloadHex string  `json:"payload_hex"`
}

type decoderVector struct {
	Name      string    `json:"name"`
	Input     string    `json:"input"`
	V1        []outcome `json:"v1"`
	V2        []outcome `json:"v2"`
	Midstream string    `json:"midstream"`
}

type goldenFile struct {
	Encoder []encoderVector `json:"encoder"`
	Decoder []decoderVector `json:"decoder"`
}

func loadGolden(t testing.TB) goldenFile {
	t.Helper()
	data, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Encoder) == 0 || len(g.Decoder) == 0 {
		t.Fatal("empty golden file")
	}
	return g
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestEncoderVectors checks §2.8.1 and §2.8.2 in both directions.
func TestEncoderVectors(t *testing.T) {
	for _, v := range loadGolden(t).Encoder {
		t.Run(v.Name, func(t *testing.T) {
			f := Frame{Type: FrameType(v.Type), Channel: v.Channel, Sequence: v.Sequence, Payload: mustHex(t, v.PayloadHex)}
			got, err := AppendFrame(nil, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != EncodedLen(f.Channel, f.Sequence, len(f.Payload)) {
				t.Errorf("EncodedLen = %d, encoded %d", EncodedLen(f.Channel, f.Sequence, len(f.Payload)), len(got))
			}
			if v.Hex != "" {
				if want := mustHex(t, v.Hex); !bytes.Equal(got, want) {
					t.Fatalf("encode:\n got %x\nwant %x", got, want)
				}
			} else {
				if !bytes.HasPrefix(got, mustHex(t, v.HexPrefix)) {
					t.Fatalf("encode: got %x, want prefix %s", got[:min(len(got), 40)], v.HexPrefix)
				}
				if len(got) != v.Length {
					t.Fatalf("encoded length %d, want %d", len(got), v.Length)
				}
			}
			for _, mode := range []Mode{V1, V2} {
				dec, n, err := Decode(got, mode)
				if err != nil {
					t.Fatalf("decode (mode %d): %v", mode, err)
				}
				if n != len(got) || dec.Type != f.Type || dec.Channel != f.Channel || dec.Sequence != f.Sequence || !bytes.Equal(dec.Payload, f.Payload) {
					t.Fatalf("decode (mode %d) = %v n=%d, want %v n=%d", mode, dec, n, f, len(got))
				}
			}
		})
	}
}

func TestCallOfferVectorPayload(t *testing.T) {
	js, err := os.ReadFile("testdata/call_offer.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 947 {
		t.Fatalf("call_offer JSON is %d bytes, want 947", len(js))
	}
	enc, err := AppendFrame(nil, Frame{Type: CallOffer, Channel: 7, Sequence: 9, Payload: js})
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != 954 || !bytes.HasPrefix(enc, mustHex(t, "b8070e0709b3077b2263616c6c5f6964223a2263616c6c2d78797a22")) {
		t.Fatalf("call_offer frame: %d bytes, prefix %x", len(enc), enc[:28])
	}
}

// checkOutcome compares one decode result with the expected outcome.
func checkOutcome(t *testing.T, f Frame, n int, err error, want outcome) {
	t.Helper()
	if want.Error == "" {
		if err != nil {
			t.Fatalf("want frame, got error %v", err)
		}
		if uint8(f.Type) != want.Type || f.Channel != *want.Channel || f.Sequence != *want.Sequence || hex.EncodeToString(f.Payload) != want.PayloadHex || n != want.Consumed {
			t.Fatalf("got %v payload %x consumed %d, want %+v", f, f.Payload, n, want)
		}
		return
	}
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatalf("want *FrameError %q, got %v", want.Error, err)
	}
	if fe.Err.Title() != want.Error {
		t.Fatalf("error title %q, want %q", fe.Err.Title(), want.Error)
	}
	if fe.Fatal != want.Fatal {
		t.Fatalf("fatal = %v, want %v", fe.Fatal, want.Fatal)
	}
	if !want.Fatal && fe.Consumed != want.Consumed {
		t.Fatalf("consumed %d, want %d", fe.Consumed, want.Consumed)
	}
	if (want.FrameType != nil) != fe.HasType || (fe.HasType && uint8(fe.Type) != *want.FrameType) {
		t.Fatalf("frame type %v/%v, want %v", fe.Type, fe.HasType, want.FrameType)
	}
	if (want.Channel != nil) != fe.HasChannel || (fe.HasChannel && fe.Channel != *want.Channel) {
		t.Fatalf("channel %v/%v, want %v", fe.Channel, fe.HasChannel, want.Channel)
	}
	if (want.Sequence != nil) != fe.HasSequence || (fe.HasSequence && fe.Sequence != *want.Sequence) {
		t.Fatalf("sequence %v/%v, want %v", fe.Sequence, fe.HasSequence, want.Sequence)
	}
}

// TestDecoderVectors feeds each §2.8.3 input as a complete stream that then
// ends, through the streaming Reader (byte by byte and all at once), and
// through Decode.
func TestDecoderVectors(t *testing.T) {
	for _, v := range loadGolden(t).Decoder {
		for _, mode := range []Mode{V1, V2} {
			want := v.V1
			if mode == V2 && v.V2 != nil {
				want = v.V2
			}
			input := mustHex(t, v.Input)
			for _, oneByte := range []bool{false, true} {
				name := v.Name + map[Mode]string{V1: "/v1", V2: "/v2"}[mode] + map[bool]string{false: "/whole", true: "/bytewise"}[oneByte]
				t.Run(name, func(t *testing.T) {
					var src io.Reader = bytes.NewReader(input)
					if oneByte {
						src = iotest.OneByteReader(src)
					}
					r := NewReader(src, mode)
					for i, w := range want {
						f, err := r.ReadFrame()
						n := w.Consumed
						checkOutcome(t, f, n, err, w)
						_ = i
					}
					if want[len(want)-1].Fatal {
						if _, err := r.ReadFrame(); err == nil || errors.Is(err, io.EOF) {
							t.Fatalf("after a fatal error ReadFrame must keep failing, got %v", err)
						}
						return
					}
					if _, err := r.ReadFrame(); err != io.EOF {
						t.Fatalf("want io.EOF at the end, got %v", err)
					}
				})
			}
			// Decode on the whole buffer gives the same first outcome, except
			// that a truncated frame is "need more" mid-stream.
			f, n, err := Decode(input, mode)
			if v.Midstream == "wait" {
				if err != ErrShortBuffer {
					t.Errorf("%s: Decode mid-stream = %v, want ErrShortBuffer", v.Name, err)
				}
				continue
			}
			t.Run(v.Name+"/Decode", func(t *testing.T) { checkOutcome(t, f, n, err, want[0]) })
		}
	}
}

// TestNeedMoreNeverForCompleteFrame checks §2.6: a complete frame never
// makes the receiver wait, and every strict prefix of a frame does.
func TestNeedMoreNeverForCompleteFrame(t *testing.T) {
	g := loadGolden(t)
	var inputs [][]byte
	for _, v := range g.Decoder {
		inputs = append(inputs, mustHex(t, v.Input))
	}
	for _, v := range g.Encoder {
		f := Frame{Type: FrameType(v.Type), Channel: v.Channel, Sequence: v.Sequence, Payload: mustHex(t, v.PayloadHex)}
		b, _ := AppendFrame(nil, f)
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		fl, pl, err := PeekFrameLen(in)
		if err != nil {
			continue // fatal prefix errors are decided without the body
		}
		total := fl + pl
		for cut := 0; cut < total && cut <= len(in); cut++ {
			if _, _, err := Decode(in[:cut], V2); err != ErrShortBuffer {
				t.Fatalf("%x cut at %d: %v, want ErrShortBuffer", in, cut, err)
			}
		}
		if total <= len(in) {
			if _, _, err := Decode(in[:total], V1); err == ErrShortBuffer {
				t.Fatalf("%x: complete frame reported as short", in)
			}
		}
	}
}

func TestVarints(t *testing.T) {
	cases := map[uint64]string{0: "00", 127: "7f", 128: "8001", 300: "ac02", 16384: "808001", 16777216: "80808008", 4294967295: "ffffffff0f"}
	for v, h := range cases {
		if got := hex.EncodeToString(AppendUvarint(nil, v)); got != h {
			t.Errorf("AppendUvarint(%d) = %s, want %s", v, got, h)
		}
		if UvarintLen(v) != len(h)/2 {
			t.Errorf("UvarintLen(%d) = %d", v, UvarintLen(v))
		}
		if got, n := uvarint(mustHex(t, h)); got != v || n != len(h)/2 {
			t.Errorf("uvarint(%s) = %d,%d", h, got, n)
		}
	}
	// non-minimal accepted
	if got, n := uvarint([]byte{0x87, 0x00}); got != 7 || n != 2 {
		t.Errorf("non-minimal: %d %d", got, n)
	}
	// max value in 10 bytes
	if got, n := uvarint(mustHex(t, "ffffffffffffffffff01")); got != ^uint64(0) || n != 10 {
		t.Errorf("max: %d %d", got, n)
	}
	for _, h := range []string{"ffffffffffffffffff02", "ffffffffffffffffff80", "ffffffffffffffffffff", "8080808080808080808000"} {
		if _, n := uvarint(mustHex(t, h)); n >= 0 {
			t.Errorf("uvarint(%s) n=%d, want overflow", h, n)
		}
	}
	if _, n := uvarint(mustHex(t, "ffffffffffffffffff")); n != 0 {
		t.Errorf("9 continuation bytes: n=%d, want 0 (need more)", n)
	}
}

func TestEncoderRefusesLimits(t *testing.T) {
	if _, err := AppendFrame(nil, Frame{Type: 0x14}); !errors.Is(err, ErrInvalidFrameType) || !errors.Is(err, ErrEncode) {
		t.Errorf("type 0x14: %v", err)
	}
	if _, err := AppendFrame(nil, Frame{Type: 0}); !errors.Is(err, ErrInvalidFrameType) {
		t.Errorf("type 0: %v", err)
	}
	big := make([]byte, MaxControlPayload+1)
	if _, err := AppendFrame(nil, Frame{Type: Join, Channel: 1, Payload: big}); !errors.Is(err, ErrControlTooLarge) {
		t.Errorf("control too large: %v", err)
	}
	if _, err := AppendFrame(nil, Frame{Type: Msg, Channel: 1, Payload: big}); err != nil {
		t.Errorf("opaque 256 KiB+1: %v", err)
	}
	// The largest opaque payload whose body is exactly 16 MiB.
	hdr := 1 + 1 + 1 + UvarintLen(MaxFrameLen)
	exact := make([]byte, MaxFrameLen-hdr)
	b, err := AppendFrame(nil, Frame{Type: Msg, Channel: 1, Sequence: 1, Payload: exact})
	if err != nil {
		t.Fatalf("16 MiB body: %v", err)
	}
	if fl, _, err := PeekFrameLen(b); err != nil || fl != MaxFrameLen {
		t.Fatalf("frame_len %d %v", fl, err)
	}
	if f, n, err := Decode(b, V2); err != nil || n != len(b) || len(f.Payload) != len(exact) {
		t.Fatalf("decode 16 MiB body: %v", err)
	}
	if _, err := AppendFrame(nil, Frame{Type: Msg, Channel: 1, Sequence: 1, Payload: make([]byte, len(exact)+1)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("16 MiB + 1: %v", err)
	}
}

func TestControlPayloadRules(t *testing.T) {
	enc := func(p string) []byte {
		// Build by hand: AppendFrame does not validate JSON.
		b, err := AppendFrame(nil, Frame{Type: Join, Channel: 1, Sequence: 1, Payload: []byte(p)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := []string{`{}`, ` [1] `, `"s"`, `1`, `true`, `null`, "\t{\"a\":\"\u00e9\"}\r\n"}
	bad := []string{``, ` `, `{`, `1 2`, `{}x`, "\"\xff\"", `{'a':1}`}
	for _, p := range good {
		if _, _, err := Decode(enc(p), V2); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range bad {
		if _, _, err := Decode(enc(p), V2); !errors.Is(err, ErrInvalidControlJSON) {
			t.Errorf("%q: %v, want Invalid Control Json", p, err)
		}
	}
	// 256 KiB exactly is allowed, one more byte is Control Too Large.
	p := `"` + strings.Repeat("a", MaxControlPayload-2) + `"`
	if _, _, err := Decode(enc(p), V2); err != nil {
		t.Errorf("256 KiB control: %v", err)
	}
	over := []byte{}
	body := append([]byte{byte(Join), 1, 1}, AppendUvarint(nil, MaxControlPayload+1)...)
	body = append(body, []byte(`"`+strings.Repeat("a", MaxControlPayload-1)+`"`)...)
	over = AppendUvarint(over, uint64(len(body)))
	over = append(over, body...)
	_, _, err := Decode(over, V2)
	var fe *FrameError
	if !errors.As(err, &fe) || fe.Err != ErrControlTooLarge || fe.Consumed != len(over) || fe.Fatal {
		t.Errorf("control over 256 KiB: %v", err)
	}
}

func TestOpaquePayloadNotCopied(t *testing.T) {
	b, _ := AppendFrame(nil, Frame{Type: Msg, Channel: 1, Sequence: 2, Payload: []byte("hello")})
	f, _, err := Decode(b, V2)
	if err != nil {
		t.Fatal(err)
	}
	if &f.Payload[0] != &b[len(b)-5] {
		t.Fatal("payload was copied")
	}
	if cap(f.Payload) != len(f.Payload) {
		t.Fatal("payload capacity exposes the following bytes")
	}
}

func TestReaderBufferedAndLargeFrames(t *testing.T) {
	// The bytes after a frame that arrived in the same read are returned by
	// Buffered (the first v2 records after the client's AUTH).
	var stream []byte
	stream, _ = AppendFrame(stream, Frame{Type: Auth, Channel: 0, Sequence: 2, Payload: []byte(`{"handshake":"00"}`)})
	tail := []byte{0x00, 0x20, 0xde, 0xad}
	r := NewReader(&chunkSource{chunks: [][]byte{append(stream, tail...)}}, V1)
	f, err := r.ReadFrame()
	if err != nil || f.Type != Auth {
		t.Fatalf("first frame: %v %v", f, err)
	}
	if !bytes.Equal(r.Buffered(), tail) {
		t.Fatalf("Buffered = %x, want %x", r.Buffered(), tail)
	}

	// A 1 MiB frame delivered in small pieces, then a cut-off frame.
	big := bytes.Repeat([]byte{7}, 1<<20)
	stream, _ = AppendFrame(nil, Frame{Type: Msg, Channel: 1, Sequence: 3, Payload: big})
	stream = append(stream, 0x05, 0x05)
	r = NewReader(iotest.HalfReader(bytes.NewReader(stream)), V1)
	f, err = r.ReadFrame()
	if err != nil || !bytes.Equal(f.Payload, big) {
		t.Fatalf("1 MiB frame: %v", err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, ErrTruncatedFrame) {
		t.Fatalf("tail at EOF: %v, want Truncated Frame", err)
	}
	if cap(r.buf) > keepReadBuf {
		t.Fatalf("buffer of %d bytes kept after the large frame", cap(r.buf))
	}
}

// TestReaderReturnsWithoutFurtherInput checks §3.3 step 5: frames already
// received are returned without another read of the source.
func TestReaderReturnsWithoutFurtherInput(t *testing.T) {
	var chunk []byte
	chunk, _ = AppendFrame(chunk, Frame{Type: Auth, Sequence: 2, Payload: []byte(`{}`)})
	chunk, _ = AppendFrame(chunk, Frame{Type: Msg, Channel: 1, Sequence: 3, Payload: []byte("x")})
	src := &chunkSource{chunks: [][]byte{chunk}}
	r := NewReader(src, V1)
	for i := 0; i < 2; i++ {
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if src.reads != 1 {
		t.Fatalf("source read %d times, want 1", src.reads)
	}
}

// chunkSource returns its chunks one per Read and then blocks forever is
// modelled by failing the test: a further read is an error.
type chunkSource struct {
	chunks [][]byte
	reads  int
}

func (c *chunkSource) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, errors.New("unexpected read: the reader waited for more input")
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestFrameTooLargeDecidedWithoutBody(t *testing.T) {
	src := &chunkSource{chunks: [][]byte{mustHex(t, "81808008")}}
	r := NewReader(src, V1)
	if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v", err)
	}
	if src.reads != 1 {
		t.Fatalf("reads = %d", src.reads)
	}
}

func TestFrameTypeNames(t *testing.T) {
	if len(AllFrameTypes()) != 19 {
		t.Fatal("want 19 frame types")
	}
	for _, ft := range AllFrameTypes() {
		got, ok := ParseFrameType(ft.String())
		if !ok || got != ft {
			t.Errorf("%v does not round-trip", ft)
		}
	}
	if FrameType(0x14).Valid() || FrameType(0).Valid() || FrameType(0x14).String() != "0x14" {
		t.Error("0x00/0x14 must not be frame types")
	}
	opaque := map[FrameType]bool{Msg: true, KeyUpdate: true, VoiceFrame: true, VideoFrame: true}
	for _, ft := range AllFrameTypes() {
		if (ft.Class() == Opaque) != opaque[ft] {
			t.Errorf("%v class %v", ft, ft.Class())
		}
	}
}

func TestProblemJSON(t *testing.T) {
	// The example of §6.4.
	_, _, err := Decode(mustHex(t, "04ff030400"), V2)
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatal(err)
	}
	want := `{"detail":"unknown frame type 0xff","error":"decode","frame_type":255,"status":400,"title":"Invalid Frame Type","type":"urn:commucat:problem:invalid-frame-type"}`
	if got := string(fe.Problem().JSON()); got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	if fe.ReplyChannel() != 0 {
		t.Fatal("unknown type: reply on channel 0")
	}
	p := NewProblem(TitlePairingRequired, "pairing required")
	p.PairingRequired = true
	p.SetRetryAfter(3)
	p.SetSequence(9)
	got := string(p.JSON())
	want = `{"detail":"pairing required","error":"handshake","pairing_required":true,"retry_after":3,"sequence":9,"status":403,"title":"PairingRequired","type":"urn:commucat:problem:pairing-required"}`
	if got != want {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
	back, err := ParseProblem([]byte(got))
	if err != nil || back != p {
		t.Fatalf("ParseProblem: %+v %v", back, err)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("invalid JSON")
	}
	if u := NewProblem("No Such Title", "x"); u.Title != TitleInternalError {
		t.Fatalf("unknown title: %+v", u)
	}
	for _, k := range ProblemKinds {
		if p := NewProblem(k.Title, ""); p.Status != k.Status || p.Type != ProblemTypePrefix+k.Slug || p.Error != k.Class {
			t.Errorf("%s: %+v", k.Title, p)
		}
	}
	if len(ProblemKinds) != 27 {
		t.Errorf("§6.4 has 27 rows, table has %d", len(ProblemKinds))
	}
}

// Sequence Too Large carries frame_type but no sequence (§13a.1).
func TestSequenceTooLargeProblemMembers(t *testing.T) {
	_, _, err := Decode(mustHex(t, "080501808080801000"), V2)
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatal(err)
	}
	p := fe.Problem()
	if !p.HasFrameType || p.HasSequence || fe.ReplyChannel() != 1 {
		t.Fatalf("%+v channel %d", p, fe.ReplyChannel())
	}
}
