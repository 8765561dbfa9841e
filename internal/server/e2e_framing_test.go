package server_test

// §14 "Framing (after the handshake unless stated)", items 14-24: raw bytes
// sent with client.Conn.SendRaw on version 1 and version 2 (inside records)
// connections over HTTP/2.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/servertest"
)

// eachVersion runs f as parallel subtests on a v1 and a v2 connection of
// one server, over HTTP/2.
func eachVersion(t *testing.T, f func(t *testing.T, s *servertest.Server, c *client.Conn, version int)) {
	eachTransportVersion(t, []client.Transport{client.HTTP2}, f)
}

// eachTransportVersion runs f as parallel subtests on v1 and v2
// connections over each transport, all on one server.
func eachTransportVersion(t *testing.T, transports []client.Transport, f func(t *testing.T, s *servertest.Server, c *client.Conn, version int)) {
	s := startServer(t, nil)
	for _, tr := range transports {
		for _, v := range []int{1, 2} {
			t.Run(fmt.Sprintf("%v-v%d", tr, v), func(t *testing.T) {
				t.Parallel()
				c := dial(t, s, newIdentity(t, fmt.Sprintf("framing-v%d", v)), uniqueHandle("framing"), withVersions(v), withTransport(tr))
				if c.Version() != v {
					t.Fatalf("negotiated version %d", c.Version())
				}
				f(t, s, c, v)
			})
		}
	}
}

var allTransports = []client.Transport{client.HTTP2, client.HTTP1, client.WebSocket}

// sendRaw writes b into c's stream as it is.
func sendRaw(t *testing.T, c *client.Conn, b []byte) {
	t.Helper()
	if err := c.SendRaw(ctxWait(t), b); err != nil {
		t.Fatal(err)
	}
}

// stillOpen checks that c's connection works: a JOIN creating a fresh
// channel is acknowledged.
func stillOpen(t *testing.T, c *client.Conn) {
	t.Helper()
	ch := freshChannel()
	if _, err := c.Join(ctxWait(t), ch, nil, ""); err != nil {
		t.Fatalf("connection no longer works: %v", err)
	}
}

// rawFrame encodes a frame without the encoder's limit checks.
func rawFrame(typ byte, ch, seq uint64, payload []byte) []byte {
	body := []byte{typ}
	body = binary.AppendUvarint(body, ch)
	body = binary.AppendUvarint(body, seq)
	body = binary.AppendUvarint(body, uint64(len(payload)))
	body = append(body, payload...)
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

// Item 14: `04ff030400` yields ERROR titled `Invalid Frame Type` (status
// 400, `error` `decode`) and the next valid frame on the connection is still
// acknowledged.
func TestItem14UnknownTypeThenAck(t *testing.T) {
	t.Parallel()
	eachVersion(t, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		sendRaw(t, c, mustHex(t, "04ff030400"))
		wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleInvalidFrameType, 400, ccp.ClassDecode)
		stillOpen(t, c)
	})
}

// Item 15: `0400000000` (type 0x00) yields `Invalid Frame Type` and the
// connection stays open.
func TestItem15ZeroTypeKeepsConnection(t *testing.T) {
	t.Parallel()
	eachVersion(t, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		sendRaw(t, c, mustHex(t, "0400000000"))
		wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleInvalidFrameType, 400, ccp.ClassDecode)
		stillOpen(t, c)
	})
}

// Item 16: `080501808080801000` yields `Sequence Too Large` and
// `080580808080100100` yields `Channel Id Too Large`; the connection stays
// open.
func TestItem16SequenceAndChannelTooLarge(t *testing.T) {
	t.Parallel()
	eachVersion(t, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		sendRaw(t, c, mustHex(t, "080501808080801000"))
		wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleSequenceTooLarge, 400, ccp.ClassDecode)
		stillOpen(t, c)
		sendRaw(t, c, mustHex(t, "080580808080100100"))
		wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleChannelIDTooLarge, 400, ccp.ClassDecode)
		stillOpen(t, c)
	})
}

// Item 17: `09050102060102030405` and `00` each yield `Malformed Frame`
// immediately (no stall) and the connection stays open.
func TestItem17MalformedFrameNoStall(t *testing.T) {
	t.Parallel()
	eachVersion(t, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		for _, in := range []string{"09050102060102030405", "00"} {
			// Nothing follows the bytes: the ERROR must come without
			// further input.
			sendRaw(t, c, mustHex(t, in))
			wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleMalformedFrame, 400, ccp.ClassDecode)
			stillOpen(t, c)
		}
	})
}

// Item 18: `ffffffffffffffffffff` yields ERROR `Varint Overflow` and the
// stream ends.
func TestItem18VarintOverflowEndsStream(t *testing.T) {
	t.Parallel()
	eachTransportVersion(t, allTransports, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		sendRaw(t, c, mustHex(t, "ffffffffffffffffffff"))
		wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleVarintOverflow, 400, ccp.ClassDecode)
		expectEnded(t, c, wait)
	})
}

// Item 19: `81808008` yields ERROR `Frame Too Large` at once and the stream
// ends.
func TestItem19FrameTooLargeEndsStream(t *testing.T) {
	t.Parallel()
	eachTransportVersion(t, allTransports, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		// Only the length prefix of a 16 MiB + 1 frame is sent.
		sendRaw(t, c, mustHex(t, "81808008"))
		wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleFrameTooLarge, 413, ccp.ClassDecode)
		expectEnded(t, c, wait)
	})
}

// Item 20: A control frame with payload `abcd` yields `Invalid Control
// Json` and the connection stays open; the same bytes as the first frame of
// a stream end the stream after the ERROR.
func TestItem20InvalidControlJSON(t *testing.T) {
	t.Parallel()
	t.Run("after-handshake", func(t *testing.T) {
		t.Parallel()
		eachVersion(t, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
			sendRaw(t, c, mustHex(t, "0601000002abcd"))
			wantProblem(t, recvNonPresence(t, c, wait), ccp.TitleInvalidControlJSON, 400, ccp.ClassDecode)
			stillOpen(t, c)
		})
	})
	t.Run("first-frame", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, nil)
		r := openRawHTTP(t, s, true)
		if err := r.writeRaw(mustHex(t, "0601000002abcd")); err != nil {
			t.Fatal(err)
		}
		expectHandshakeError(t, r, 1, ccp.TitleInvalidControlJSON, ccp.ClassDecode, "")
	})
}

// Item 21: Ending the request body in the middle of a frame yields ERROR
// `Truncated Frame` (when still writable) and the end of the stream.
//
// Over WebSocket the client's end of the stream is its Close frame, after
// which the server may no longer send data, so only the POST transports are
// checked.
func TestItem21TruncatedFrame(t *testing.T) {
	t.Parallel()
	eachTransportVersion(t, []client.Transport{client.HTTP2, client.HTTP1}, func(t *testing.T, s *servertest.Server, c *client.Conn, v int) {
		// 5 of the 11 bytes of a MSG frame, then the end of the body (in v2
		// at a record boundary: the frame, not the record, is cut).
		sendRaw(t, c, mustHex(t, "0a05070c04"))
		_ = c.Close() // the stream's end is checked below
		rest := expectEnded(t, c, wait)
		var found bool
		for _, f := range rest {
			if f.Type == ccp.Error {
				wantProblem(t, f, ccp.TitleTruncatedFrame, 400, ccp.ClassDecode)
				found = true
			}
		}
		if !found {
			t.Fatalf("no Truncated Frame ERROR before the end of the stream (frames %v)", rest)
		}
	})
}

// Item 22: `0905070c040102030499` (trailing byte) is accepted as a MSG on a
// v1 connection and rejected with `Malformed Frame` on a v2 connection.
func TestItem22TrailingByte(t *testing.T) {
	t.Parallel()
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			s := startServer(t, nil)
			var mods []func(*client.Options)
			if v == 1 {
				mods = append(mods, withVersions(1))
			}
			peer := newIdentity(t, "peer")
			register(t, s, peer, uniqueHandle("peer"))
			c := dial(t, s, newIdentity(t, "trailing"), uniqueHandle("trailing"), mods...)
			if c.Version() != v {
				t.Fatalf("version %d", c.Version())
			}
			if _, err := c.Join(ctxWait(t), 7, []string{peer.DeviceID}, ""); err != nil {
				t.Fatal(err)
			}
			// MSG channel 7 sequence 12, payload 01020304, trailing 99.
			sendRaw(t, c, mustHex(t, "0905070c040102030499"))
			f := recvNonPresence(t, c, wait)
			if v == 2 {
				wantProblem(t, f, ccp.TitleMalformedFrame, 400, ccp.ClassDecode)
				stillOpen(t, c)
				return
			}
			if f.Type != ccp.Ack || f.Channel != 7 || string(f.Payload) != `{"ack":12}` {
				t.Fatalf("got %v %s, want ACK {\"ack\":12} on channel 7", f, f.Payload)
			}
			p := dial(t, s, peer, "")
			got := recvNonPresence(t, p, wait)
			if got.Type != ccp.Msg || got.Channel != 7 || !bytes.Equal(got.Payload, []byte{1, 2, 3, 4}) {
				t.Fatalf("peer got %v %x, want MSG 01020304 on channel 7", got, got.Payload)
			}
		})
	}
}

// Item 23: A control payload over 262 144 bytes yields `Control Too
// Large`; a 1 MiB MSG is accepted and relayed intact.
func TestItem23ControlTooLargeAnd1MiBMsg(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			var mods []func(*client.Options)
			if v == 1 {
				mods = append(mods, withVersions(1))
			}
			idb := newIdentity(t, "big-b")
			b := dial(t, s, idb, uniqueHandle("big-b"), mods...)
			a := dial(t, s, newIdentity(t, "big-a"), uniqueHandle("big-a"), mods...)
			ch := uint32(100 + v)

			big := []byte(`"` + strings.Repeat("a", 262143) + `"`) // 262 145 bytes of valid JSON
			sendRaw(t, a, rawFrame(byte(ccp.Join), uint64(ch), 1000, big))
			wantProblem(t, recvNonPresence(t, a, wait), ccp.TitleControlTooLarge, 413, ccp.ClassDecode)

			if _, err := a.Join(ctxWait(t), ch, []string{idb.DeviceID}, ""); err != nil {
				t.Fatal(err)
			}
			msg := make([]byte, 1<<20)
			for i := range msg {
				msg[i] = byte(i*7 + i>>8)
			}
			if err := a.SendMessage(ctxWait(t), ch, msg); err != nil {
				t.Fatalf("1 MiB MSG: %v", err)
			}
			f := recvNonPresence(t, b, wait)
			if f.Type != ccp.Msg || f.Channel != ch || !bytes.Equal(f.Payload, msg) {
				t.Fatalf("relayed %v (%d bytes), want the 1 MiB MSG intact", f, len(f.Payload))
			}
		})
	}
}

// Item 23 (relay part), §2.4 "Opaque: relayed byte for byte": MSGs relayed
// live to an online recipient arrive intact while their sender keeps
// sending.
func TestItem23MsgsRelayedIntactWhileSenderContinues(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	idb := newIdentity(t, "intact-b")
	b := dial(t, s, idb, uniqueHandle("intact-b"))
	r := openRawHTTP(t, s, true)
	r.connect(r.clientConfig(newIdentity(t, "intact-a"), uniqueHandle("intact-a"), []int{1}, nil))
	seq := r.next(ccp.Join, 5, []byte(`{"members":["`+idb.DeviceID+`"]}`))
	r.expectAck(5, seq)
	const n = 150 // below the default frame burst of 200
	want := func(i int) string { return fmt.Sprintf("payload-%04d-%s", i, strings.Repeat("x", 40)) }
	for i := 0; i < n; i++ {
		r.next(ccp.Msg, 5, []byte(want(i))) // one write per frame
	}
	for i := 0; i < n; i++ {
		f := recvNonPresence(t, b, wait)
		if f.Type != ccp.Msg || string(f.Payload) != want(i) {
			t.Fatalf("MSG %d relayed as %v %q, want %q", i, f, f.Payload, want(i))
		}
	}
}

// Item 24: No frame the server sends has a type outside 0x01-0x13.
func TestItem24ServerFrameTypes(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			t.Parallel()
			idb := newIdentity(t, "types-b")
			b := dial(t, s, idb, uniqueHandle("types-b"))
			r := openRawHTTP(t, s, true)
			ida := newIdentity(t, "types-a")
			versions := []int{v}
			r.connect(r.clientConfig(ida, uniqueHandle("types-a"), versions, []string{"noise", "presence.push"}))
			ch := uint32(200 + v)
			ctx := ctxWait(t)
			if _, err := b.Join(ctx, ch, []string{ida.DeviceID}, ""); err != nil {
				t.Fatal(err)
			}
			// A mix of accepted frames, rejected frames and decode errors,
			// plus frames relayed and pushed by the peer.
			r.next(ccp.Join, ch, []byte(`{}`))
			// Each opaque frame is received by the peer before the next
			// frame is sent (see TestItem23MsgsRelayedIntactWhileSenderContinues).
			r.next(ccp.Msg, ch, []byte("m"))
			recvUntil(t, b, wait, "the MSG", func(f ccp.Frame) bool { return f.Type == ccp.Msg })
			r.next(ccp.KeyUpdate, ch, []byte{1})
			recvUntil(t, b, wait, "the KEY_UPDATE", func(f ccp.Frame) bool { return f.Type == ccp.KeyUpdate })
			r.next(ccp.Typing, ch, []byte(`{}`))
			r.next(ccp.Presence, 0, []byte(`{"state":"away"}`))
			r.next(ccp.GroupCreate, ch+10, []byte(`{}`))
			r.next(ccp.GroupEvent, ch, []byte(`{"e":1}`))
			r.next(ccp.CallEnd, ch, []byte(`{"call_id":"x","reason":"hangup"}`))
			r.next(ccp.VoiceFrame, ch, []byte{1, 0, 0})
			r.next(ccp.Hello, ch, []byte(`{}`))
			r.next(ccp.Msg, 999, []byte("unknown channel"))
			r.sendBytes(mustHex(t, "04ff030400"))
			r.sendBytes(mustHex(t, "00"))
			r.sendBytes(mustHex(t, "0601000002abcd"))
			if err := b.SendMessage(ctx, ch, []byte("from b")); err != nil {
				t.Fatal(err)
			}
			if err := b.Typing(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if err := b.SetPresence(ctx, "busy"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Request(ctx, ccp.GroupEvent, ch, []byte(`{"x":1}`)); err != nil {
				t.Fatal(err)
			}
			marker := r.next(ccp.Join, ch, []byte(`{}`))
			n := 0
			r.frameUntil(wait, "the marker ACK", func(f ccp.Frame) bool {
				n++
				if !f.Type.Valid() {
					t.Fatalf("server frame type %v", f.Type)
				}
				m, ok := client.AckNumber(f.Payload)
				return f.Type == ccp.Ack && f.Channel == ch && ok && m == marker
			})
			if n < 15 {
				t.Fatalf("only %d frames seen", n)
			}
		})
	}
}

// Items 18, 19 and 21 ("... and the stream ends"), with the end of the
// stream that §3.3 step 6 and §3.4 prescribe: on HTTP/2 the response ends
// with END_STREAM (a reset of the request side may only use NO_ERROR), on
// HTTP/1.1 the chunked response ends with its last chunk before the TCP
// connection closes. The reader must see a clean end of the response body
// after the ERROR.
func TestItem18To21CleanEndOfStream(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	for _, h2 := range []bool{true, false} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			t.Parallel()
			r := openRawHTTP(t, s, h2)
			r.connect(r.clientConfig(newIdentity(t, "end"), uniqueHandle("end"), []int{1}, nil))
			r.sendBytes(mustHex(t, "ffffffffffffffffffff"))
			wantProblem(t, r.frame(wait), ccp.TitleVarintOverflow, 400, ccp.ClassDecode)
			ev, ok := r.event(wait)
			if !ok {
				t.Fatal("the stream did not end")
			}
			if ev.err != io.EOF {
				t.Fatalf("the response ended with %v (frame %v), want a clean end of the body", ev.err, ev.f)
			}
		})
	}
}
