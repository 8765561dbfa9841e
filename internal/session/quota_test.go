package session

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
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
