package client

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/noiseconn"
)

// captureStream records every Write.
type captureStream struct {
	msgs   bool
	writes [][]byte
}

func (s *captureStream) Read([]byte) (int, error) { select {} }
func (s *captureStream) Write(p []byte) (int, error) {
	s.writes = append(s.writes, bytes.Clone(p))
	return len(p), nil
}
func (s *captureStream) messages() bool    { return s.msgs }
func (s *captureStream) CloseWrite() error { return nil }
func (s *captureStream) Close(bool)        {}
func (s *captureStream) proto() string     { return "capture" }

func frameBytes(t *testing.T, seq uint32, n int) []byte {
	t.Helper()
	b, err := ccp.AppendFrame(nil, ccp.Frame{Type: ccp.Msg, Channel: 1, Sequence: seq, Payload: bytes.Repeat([]byte{byte(seq)}, n)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBatchWriter: the unit of writing per transport and version.
func TestBatchWriter(t *testing.T) {
	frames := [][]byte{frameBytes(t, 3, 10), frameBytes(t, 4, 70000), frameBytes(t, 5, 0)}
	batch := make([]writeReq, len(frames))
	for i, f := range frames {
		batch[i] = writeReq{data: f}
	}
	stream := slices.Concat(frames...)
	key := [32]byte{1, 2, 3}

	// v1 on WebSocket: one message per frame.
	cs := &captureStream{msgs: true}
	if err := (&batchWriter{c: &Conn{st: cs}}).write(batch); err != nil {
		t.Fatal(err)
	}
	if len(cs.writes) != 3 || !bytes.Equal(slices.Concat(cs.writes...), stream) || !bytes.Equal(cs.writes[1], frames[1]) {
		t.Fatalf("v1 websocket writes %d", len(cs.writes))
	}
	// v1 on HTTP: one write for the batch.
	cs = &captureStream{}
	if err := (&batchWriter{c: &Conn{st: cs}}).write(batch); err != nil {
		t.Fatal(err)
	}
	if len(cs.writes) != 1 || !bytes.Equal(cs.writes[0], stream) {
		t.Fatalf("v1 http writes %d", len(cs.writes))
	}

	// v2: records; on WebSocket one message per record; with buckets every
	// record has one of the four sizes of §5.5.
	for _, pad := range []noiseconn.Padding{noiseconn.PaddingNone, noiseconn.PaddingBuckets} {
		for _, msgs := range []bool{false, true} {
			cs = &captureStream{msgs: msgs}
			c := &Conn{st: cs, sealer: noiseconn.NewSealer(key, 1, pad)}
			if err := (&batchWriter{c: c}).write(batch); err != nil {
				t.Fatal(err)
			}
			all := slices.Concat(cs.writes...)
			if !msgs && len(cs.writes) != 1 {
				t.Fatalf("%v: %d writes on a byte stream", pad, len(cs.writes))
			}
			o := noiseconn.NewOpener(key, 1)
			var plain []byte
			records := 0
			for len(all) > 0 {
				data, n, err := o.OpenRecord(all)
				if err != nil {
					t.Fatalf("%v: record %d: %v", pad, records, err)
				}
				if msgs && n != len(cs.writes[records]) {
					t.Fatalf("message %d holds %d bytes, record %d", records, len(cs.writes[records]), n)
				}
				if pad == noiseconn.PaddingBuckets && !slices.Contains([]int{274, 1042, 4114, 16402}, n) {
					t.Fatalf("bucket record of %d bytes", n)
				}
				plain = append(plain, data...)
				all = all[n:]
				records++
			}
			if !bytes.Equal(plain, stream) || records < 2 {
				t.Fatalf("%v: %d records, stream intact %v", pad, records, bytes.Equal(plain, stream))
			}
		}
	}
}

func TestIdentityJSON(t *testing.T) {
	id := newTestIdentity(t, "dev-json")
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["certificate"] != nil || len(m["device_seed"].(string)) != 64 {
		t.Fatalf("state %s", b)
	}
	var back Identity
	if err := json.Unmarshal(b, &back); err != nil || back.DeviceSeed != id.DeviceSeed || back.StaticKey != id.StaticKey || back.Certificate != nil {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{
		`{"device_id":"a@b","device_seed":"` + hex64zero + `","static_key":"` + hex64zero + `"}`,
		`{"device_id":"d","device_seed":"00","static_key":"` + hex64zero + `"}`,
		`{"device_id":"d","device_seed":"` + hex64zero + `","static_key":"` + hex64zero + `","certificate":{"serial":1}}`,
	} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if _, err := NewIdentity("bad id", nil); err == nil {
		t.Error("NewIdentity accepted a device id with a space")
	}
}

const hex64zero = "0000000000000000000000000000000000000000000000000000000000000000"

func TestParseTransport(t *testing.T) {
	for in, want := range map[string]Transport{"": HTTP2, "h2": HTTP2, "HTTP1": HTTP1, "http/1.1": HTTP1, "ws": WebSocket, "websocket": WebSocket} {
		if got, err := ParseTransport(in); err != nil || got != want {
			t.Errorf("ParseTransport(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseTransport("quic"); err == nil {
		t.Error("accepted quic")
	}
}
