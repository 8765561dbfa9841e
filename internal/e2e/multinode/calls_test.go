package multinode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// Scenario: a call between devices on different nodes (§7.2 node pinning,
// §9.4 call:/callchan: and the call/call_reply bus messages).
func TestCrossNodeCall(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	a, b := newDevice(t, c, "caller"), newDevice(t, c, "callee")
	sa := a.mustConnect(n1)
	sb := b.mustConnect(n2)
	const ch = 31
	sa.join(t, ch, b.ID)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	// 1. The caller on node 1 offers: node 1 owns the call.
	ack, err := sa.Conn.OfferCall(ctx, ch, client.CallOffer{To: []string{b.ID}})
	if err != nil {
		t.Fatalf("CALL_OFFER: %v", err)
	}
	callID := ack.CallID
	offer := b.waitMsgs(wait, ccp.CallOffer, ch, 1)[0]
	var o client.CallOffer
	if err := json.Unmarshal(offer.Payload, &o); err != nil || o.CallID != callID || o.Sender != a.ID {
		t.Fatalf("callee got offer %s (%v)", offer.Payload, err)
	}
	// A second offer on the channel from the other node fails the SET NX
	// of callchan:<channel>.
	_, err = sb.Conn.OfferCall(ctx, ch, client.CallOffer{To: []string{a.ID}})
	if title := problemTitle(err); title != ccp.TitleConflict {
		t.Fatalf("second offer from node 2: %v, want Conflict", err)
	}

	// 2. The callee on node 2 answers: forwarded to node 1, which replies.
	ans, err := sb.Conn.AnswerCall(ctx, ch, client.CallAnswer{CallID: callID, Accept: true})
	if err != nil {
		t.Fatalf("CALL_ANSWER through node 2: %v", err)
	}
	if ans.CallID != callID || ans.Accept == nil || !*ans.Accept {
		t.Fatalf("CALL_ANSWER ack %+v", ans)
	}
	answer := a.waitMsgs(wait, ccp.CallAnswer, ch, 1)[0]
	var an client.CallAnswer
	if err := json.Unmarshal(answer.Payload, &an); err != nil || an.Sender != b.ID || !an.Accept {
		t.Fatalf("caller got answer %s (%v)", answer.Payload, err)
	}
	st, err := sb.Conn.SendCallStats(ctx, ch, client.CallStats{CallID: callID, Direction: "receive"})
	if err != nil || st.Direction != "receive" {
		t.Fatalf("CALL_STATS through node 2: %+v %v", st, err)
	}
	// A CALL_ANSWER naming the call on another channel is Not Found at the
	// owner, and the owner's ERROR comes back.
	sb.join(t, ch+1, a.ID)
	if _, err := sb.Conn.AnswerCall(ctx, ch+1, client.CallAnswer{CallID: callID, Accept: true}); problemTitle(err) != ccp.TitleNotFound {
		t.Fatalf("answer on another channel: %v, want Not Found", err)
	}

	// 3. Encoded media both ways arrives byte for byte.
	checkMedia(t, ctx, sa, b, ccp.VoiceFrame, ch, 0, "a->b voice")
	checkMedia(t, ctx, sb, a, ccp.VoiceFrame, ch, 0, "b->a voice")
	checkMedia(t, ctx, sa, b, ccp.VideoFrame, ch, 1, "a->b video")
	checkMedia(t, ctx, sb, a, ccp.VideoFrame, ch, 1, "b->a video")

	// A media frame the owner rejects comes back to the sender's node as
	// an ERROR (header version 2: Unsupported Media).
	if _, err := sb.Conn.Send(ctx, ccp.VoiceFrame, ch, []byte{2, 0, 0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(wait, "ERROR Unsupported Media", func() bool {
		for _, p := range sb.errs {
			if p.Title == ccp.TitleUnsupportedMedia {
				return true
			}
		}
		return false
	})

	// 4. The callee hangs up through node 2.
	end, err := sb.Conn.EndCall(ctx, ch, client.CallEnd{CallID: callID, Reason: "hangup"})
	if err != nil || end.CallID != callID || end.Reason != "hangup" {
		t.Fatalf("CALL_END through node 2: %+v %v", end, err)
	}
	got := a.waitMsgs(wait, ccp.CallEnd, ch, 1)[0]
	var e client.CallEnd
	if err := json.Unmarshal(got.Payload, &e); err != nil || e.CallID != callID || e.Reason != "hangup" || e.Sender != b.ID {
		t.Fatalf("caller got CALL_END %s (%v)", got.Payload, err)
	}
	// The call's keys are gone: the channel takes a new call, now owned by
	// node 2.
	ack2, err := sb.Conn.OfferCall(ctx, ch, client.CallOffer{To: []string{a.ID}})
	if err != nil {
		t.Fatalf("offer from node 2 after the end: %v", err)
	}
	a.waitMsgs(wait, ccp.CallOffer, ch, 1)
	if _, err := sa.Conn.AnswerCall(ctx, ch, client.CallAnswer{CallID: ack2.CallID, Accept: true}); err != nil {
		t.Fatalf("answer through node 1: %v", err)
	}
	checkMedia(t, ctx, sa, b, ccp.VoiceFrame, ch, 0, "a->b voice, owner node 2")
	if _, err := sa.Conn.EndCall(ctx, ch, client.CallEnd{CallID: ack2.CallID, Reason: "hangup"}); err != nil {
		t.Fatalf("CALL_END through node 1: %v", err)
	}
	b.waitMsgs(wait, ccp.CallEnd, ch, 1)

	// 5. A third call, owned by node 1; the callee's disconnect from node 2
	// ends it with CALL_END reason failure (§6.10).
	ack3, err := sa.Conn.OfferCall(ctx, ch, client.CallOffer{To: []string{b.ID}})
	if err != nil {
		t.Fatalf("third offer: %v", err)
	}
	b.waitMsgs(wait, ccp.CallOffer, ch, 2)
	if _, err := sb.Conn.AnswerCall(ctx, ch, client.CallAnswer{CallID: ack3.CallID, Accept: true}); err != nil {
		t.Fatalf("third answer: %v", err)
	}
	a.waitMsgs(wait, ccp.CallAnswer, ch, 1)
	sb.Conn.CloseAbruptly()
	ends := a.waitMsgs(wait, ccp.CallEnd, ch, 2)
	var fe client.CallEnd
	if err := json.Unmarshal(ends[1].Payload, &fe); err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Cause  string `json:"cause"`
		Device string `json:"device"`
	}
	_ = json.Unmarshal(fe.Metadata, &meta)
	if fe.CallID != ack3.CallID || fe.Reason != "failure" || meta.Cause != "disconnect" || !fe.System() {
		t.Fatalf("caller got %s, want CALL_END failure/disconnect", ends[1].Payload)
	}
	// The call and its keys are gone: a new offer on the channel works.
	ack4, err := sa.Conn.OfferCall(ctx, ch, client.CallOffer{To: []string{b.ID}})
	if err != nil {
		t.Fatalf("offer after the disconnect: %v", err)
	}
	// 6. A callee that has not answered is a participant too: its
	// disconnect from node 2 ends the ringing call.
	sb2 := b.mustConnect(n2)
	sb2.Conn.CloseAbruptly()
	ends = a.waitMsgs(wait, ccp.CallEnd, ch, 3)
	if err := json.Unmarshal(ends[2].Payload, &fe); err != nil || fe.CallID != ack4.CallID || fe.Reason != "failure" {
		t.Fatalf("caller got %s, want CALL_END failure for the ringing call", ends[2].Payload)
	}
}

// checkMedia sends an encoded media frame (codec: 0 Opus / 1 VP8) and
// waits until the other device got it unchanged.
func checkMedia(t *testing.T, ctx context.Context, from *session, to *device, ft ccp.FrameType, ch uint32, codec byte, what string) {
	t.Helper()
	payload := append([]byte{1, 0, codec}, binaryPayload(what)...)
	before := 0
	to.mu.Lock()
	before = to.countLocked(ft, ch)
	to.mu.Unlock()
	if _, err := from.Conn.Send(ctx, ft, ch, payload); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	got := to.waitMsgs(wait, ft, ch, before+1)
	if p := got[len(got)-1].Payload; !bytes.Equal(p, payload) {
		t.Fatalf("%s: got %x, want %x", what, p, payload)
	}
}

// problemTitle returns the title of an ERROR reply (or "").
func problemTitle(err error) string {
	var ef *client.ErrorFrame
	if errors.As(err, &ef) {
		return ef.Problem.Title
	}
	return ""
}
