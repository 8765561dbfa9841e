package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/store"
)

// limits.max_inbox_entries / max_inbox_bytes: a durable frame for a
// recipient that is away and whose inbox is full is refused with Too Many
// Requests and not stored; once the recipient has taken its inbox the
// sender can send again. A connected recipient is not held to the bound.
func TestInboxQuota(t *testing.T) {
	for _, tc := range []struct {
		name           string
		entries, bytes int64
	}{
		{"entries", 3, 0},
		{"bytes", 0, 3 * 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, func(c *Config) { c.MaxInboxEntries, c.MaxInboxBytes = tc.entries, tc.bytes })
			b := n.dial(clientOpts{device: "quota-b"})
			b.close()
			a := n.dial(clientOpts{device: "quota-a"})
			a.mustOK(ccp.Join, 5, `{"members":["quota-b"]}`)
			for i := range 3 {
				a.mustOK(ccp.Msg, 5, fmt.Sprintf("message-%d", i)) // 9 bytes each
			}
			p := a.mustErr(ccp.Msg, 5, "message-3", ccp.TitleTooManyRequests)
			if p["status"] != float64(429) || !strings.Contains(fmt.Sprint(p["detail"]), "quota-b") {
				t.Fatalf("refusal %v", p)
			}
			if got := n.inboxLen(t, "quota-b"); got != 3 {
				t.Fatalf("inbox holds %d entries, want 3 (the refused frame is not stored)", got)
			}
			if got := counterOf(t, n.metrics.RelayInboxFull); got != 1 {
				t.Errorf("commucat_relay_inbox_full = %v, want 1", got)
			}

			// The recipient takes its inbox; the sender may send again.
			b = n.dial(clientOpts{device: "quota-b"})
			for i := range 3 {
				f := b.expectAfterPresence(ccp.Msg)
				if want := fmt.Sprintf("message-%d", i); string(f.Payload) != want {
					t.Fatalf("b got %q, want %q", f.Payload, want)
				}
				b.ackFrame(f)
			}
			n.waitInboxLen(t, "quota-b", 0)
			n.waitLive(t, "quota-b")
			// Connected: not held to the bound, even without ACKs.
			for i := range 5 {
				a.mustOK(ccp.Msg, 5, fmt.Sprintf("online-%d", i))
			}
			b.close()
			// Away again with 5 unacknowledged entries: refused, until the
			// inbox is emptied and a's view of it (quotaViewTTL) renewed.
			a.mustErr(ccp.Msg, 5, "late", ccp.TitleTooManyRequests)
			b = n.dial(clientOpts{device: "quota-b"})
			for range 5 {
				b.ackFrame(b.expectAfterPresence(ccp.Msg))
			}
			n.waitInboxLen(t, "quota-b", 0)
			b.close()
			time.Sleep(quotaViewTTL)
			a.mustOK(ccp.Msg, 5, "later")
			a.close()
		})
	}
}

// GROUP_CREATE and GROUP_INVITE are durable frames too: when one would go
// to an away member whose inbox is full, it is refused with Too Many
// Requests before the group changes (no group, no membership).
func TestGroupFramesInboxQuota(t *testing.T) {
	n := newTestNode(t, func(c *Config) { c.MaxInboxEntries = 2 })
	ctx := context.Background()
	b := n.dial(clientOpts{device: "gq-b"})
	b.close()
	a := n.dial(clientOpts{device: "gq-a"})
	a.mustOK(ccp.Join, 5, `{"members":["gq-b"]}`)
	a.mustOK(ccp.Msg, 5, "one")
	a.mustOK(ccp.Msg, 5, "two")
	// a's view of b's inbox expires: the check reads it anew, inside the
	// group's transaction.
	time.Sleep(quotaViewTTL)

	p := a.mustErr(ccp.GroupCreate, 6, `{"group_id":"g-full","members":["gq-b"]}`, ccp.TitleTooManyRequests)
	if !strings.Contains(fmt.Sprint(p["detail"]), "gq-b") {
		t.Fatalf("refusal %v", p)
	}
	if _, err := n.st.GetGroup(ctx, "g-full"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused GROUP_CREATE created the group (err %v)", err)
	}
	a.mustOK(ccp.GroupCreate, 7, `{"group_id":"g-open","members":[]}`)
	a.mustErr(ccp.GroupInvite, 7, `{"group_id":"g-open","device":"gq-b"}`, ccp.TitleTooManyRequests)
	if _, err := n.st.GetGroupMember(ctx, "g-open", "gq-b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused GROUP_INVITE added the member (err %v)", err)
	}
	if got := n.inboxLen(t, "gq-b"); got != 2 {
		t.Fatalf("inbox holds %d entries, want 2", got)
	}

	// Connected, b is not held to the bound: the invitation goes through.
	b = n.dial(clientOpts{device: "gq-b"})
	n.waitLive(t, "gq-b")
	a.mustOK(ccp.GroupInvite, 7, `{"group_id":"g-open","device":"gq-b"}`)
	if _, err := n.st.GetGroupMember(ctx, "g-open", "gq-b"); err != nil {
		t.Fatalf("member after the accepted GROUP_INVITE: %v", err)
	}
	b.close()
	a.close()
}
