package storetest

import (
	"strconv"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// BenchEnqueue measures EnqueueInbox (each call its own transaction) with
// batches of 1 and of 256 entries of 100-byte payloads, and reports
// entries/s. open returns a fresh, migrated, empty store and owns its
// cleanup.
func BenchEnqueue(b *testing.B, open func(b *testing.B) store.Store) {
	for _, size := range []int{1, 256} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) {
			s := open(b)
			mustUser(b, s, "u")
			mustDevice(b, s, "u", "r", t0)
			payload := make([]byte, 100)
			for i := range payload {
				payload[i] = byte(i)
			}
			entries := make([]store.InboxEntry, size)
			for i := range entries {
				entries[i] = store.InboxEntry{
					Recipient: "r", Sender: "s", Channel: 1, FrameType: 3, Payload: payload,
					CreatedAt: t0, ExpiresAt: t0.Add(time.Hour),
				}
			}
			ctx := b.Context()
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				for i := range entries {
					entries[i].EnvelopeID = "env-" + strconv.Itoa(n)
					n++
				}
				if _, err := s.EnqueueInbox(ctx, entries); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
