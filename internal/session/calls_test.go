package session

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
)

func TestCallSignallingAndPassthrough(t *testing.T) {
	n := newTestNode(t, nil)
	a := n.dial(clientOpts{device: "dev-a"})
	b := n.dial(clientOpts{device: "dev-b"})
	v1 := n.dial(clientOpts{device: "dev-c", versions: []int{1}})
	a.mustOK(ccp.Join, 7, `{"members":["dev-b","dev-c"]}`)

	ack := a.mustOK(ccp.CallOffer, 7, `{"call_id":"c1","from":"dev-a","to":["dev-b"],"sender":"forged"}`)
	if ack["call_id"] != "c1" {
		t.Fatalf("offer ack %v", ack)
	}
	for _, c := range []*testClient{b, v1} {
		// The presence snapshot may or may not already count dev-a.
		f := c.expectAfterPresence(ccp.CallOffer)
		var m map[string]any
		json.Unmarshal(f.Payload, &m)
		if m["sender"] != "dev-a" || m["call_id"] != "c1" {
			t.Fatalf("relayed offer %s", f.Payload)
		}
	}
	a.mustErr(ccp.CallOffer, 7, `{"call_id":"c1","from":"dev-a","to":[]}`, "Conflict")
	// Media before accepting: Forbidden.
	b.mustErr(ccp.VoiceFrame, 7, "\x01\x00\x00opus", "Forbidden")
	ack = b.mustOK(ccp.CallAnswer, 7, `{"call_id":"c1","accept":true}`)
	if ack["accept"] != true {
		t.Fatalf("answer ack %v", ack)
	}
	a.expect(ccp.CallAnswer)
	v1.expect(ccp.CallAnswer)
	v1.mustOK(ccp.CallAnswer, 7, `{"call_id":"c1","accept":true}`)
	a.expect(ccp.CallAnswer)
	b.expect(ccp.CallAnswer)

	// Encoded Opus passes through: byte for byte to v2, without header to v1.
	pkt := []byte("\x01\x00\x00opus-packet")
	a.send(ccp.VoiceFrame, 7, string(pkt))
	if f := b.expect(ccp.VoiceFrame); !bytes.Equal(f.Payload, pkt) {
		t.Fatalf("v2 got %q", f.Payload)
	}
	if f := v1.expect(ccp.VoiceFrame); string(f.Payload) != "opus-packet" {
		t.Fatalf("v1 got %q", f.Payload)
	}
	a.none(100 * time.Millisecond) // media is never acknowledged

	// Header version 2: Unsupported Media, connection stays.
	_, m := a.request(ccp.VoiceFrame, 7, "\x02\x00\x00x")
	if m["title"] != "Unsupported Media" {
		t.Fatalf("got %v", m)
	}
	ack = a.mustOK(ccp.CallEnd, 7, `{"call_id":"c1","reason":"hangup"}`)
	if ack["reason"] != "hangup" {
		t.Fatalf("end ack %v", ack)
	}
	b.expect(ccp.CallEnd)
	v1.expect(ccp.CallEnd)
	time.Sleep(1100 * time.Millisecond) // media ERRORs are limited to one per second
	a.mustErr(ccp.VoiceFrame, 7, "\x01\x00\x00x", "Not Found")
	// Unknown call_id: idempotent END.
	a.mustOK(ccp.CallEnd, 7, `{"call_id":"nope","reason":"hangup"}`)
}

func TestCallEndsOnDisconnect(t *testing.T) {
	n := newTestNode(t, nil)
	a := n.dial(clientOpts{device: "dev-a"})
	b := n.dial(clientOpts{device: "dev-b"})
	a.mustOK(ccp.Join, 8, `{"members":["dev-b"]}`)
	a.mustOK(ccp.CallOffer, 8, `{"call_id":"c2","from":"dev-a","to":["dev-b"]}`)
	b.expectAfterPresence(ccp.CallOffer)
	b.close()
	f := a.expectAfterPresence(ccp.CallEnd) // after dev-b's offline push, if any
	var m map[string]any
	json.Unmarshal(f.Payload, &m)
	meta, _ := m["metadata"].(map[string]any)
	if m["reason"] != "failure" || meta["cause"] != "disconnect" || meta["device"] != "dev-b" || m["sender"] != nil {
		t.Fatalf("CALL_END %s", f.Payload)
	}
}
