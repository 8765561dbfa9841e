package storetest

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

// entry builds an inbox entry created at created, expiring one hour later.
func entry(env, recipient string, created time.Time, payload []byte) store.InboxEntry {
	return store.InboxEntry{
		EnvelopeID: env, Recipient: recipient, Sender: "sender", Channel: 42, FrameType: 3,
		Payload: payload, CreatedAt: created, ExpiresAt: created.Add(time.Hour),
	}
}

func enqueue(t testing.TB, s store.Store, entries ...store.InboxEntry) []int64 {
	t.Helper()
	ids, err := s.EnqueueInbox(t.Context(), entries)
	noErr(t, err, "EnqueueInbox")
	if len(ids) != len(entries) {
		t.Fatalf("EnqueueInbox returned %d ids for %d entries", len(ids), len(entries))
	}
	return ids
}

func increasing(t testing.TB, ids []int64, what string) {
	t.Helper()
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("%s: queue ids not increasing: %v", what, ids)
			return
		}
	}
}

func listAll(t testing.TB, s store.Store, recipient string, now time.Time) []store.InboxEntry {
	t.Helper()
	l, err := s.ListInbox(t.Context(), recipient, 0, now, 100000)
	noErr(t, err, "ListInbox")
	return l
}

func envelopes(l []store.InboxEntry) []string {
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = e.EnvelopeID
	}
	return out
}

func testInbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	for _, d := range []string{"r1", "r2", "r3", "sender"} {
		mustDevice(t, s, "u1", d, t0)
	}
	now := at(0)

	count, oldest, err := s.InboxStats(ctx)
	noErr(t, err, "InboxStats")
	if count != 0 || !oldest.IsZero() {
		t.Errorf("InboxStats of an empty inbox = %d, %v", count, oldest)
	}

	ids, err := s.EnqueueInbox(ctx, nil)
	noErr(t, err, "EnqueueInbox(nil)")
	if len(ids) != 0 {
		t.Errorf("EnqueueInbox(nil) = %v", ids)
	}

	// Queue ids increase in input order, across calls.
	b1 := []store.InboxEntry{
		entry("a1", "r1", at(1), []byte("one")),
		entry("a2", "r2", at(2), []byte("two")),
		entry("a3", "r1", at(3), []byte("three")),
	}
	b1[2].Channel = math.MaxUint32
	b1[2].FrameType = 255
	ids1 := enqueue(t, s, b1...)
	increasing(t, ids1, "batch 1")
	b2 := []store.InboxEntry{entry("a4", "r1", at(4), []byte("four")), entry("a5", "r2", at(5), nil)}
	ids2 := enqueue(t, s, b2...)
	increasing(t, append(slices.Clone(ids1), ids2...), "batches 1 and 2")

	want := []store.InboxEntry{b1[0], b1[2], b2[0]}
	want[0].QueueID, want[1].QueueID, want[2].QueueID = ids1[0], ids1[2], ids2[0]
	same(t, listAll(t, s, "r1", now), want, "ListInbox(r1)")

	count, oldest, err = s.InboxStats(ctx)
	noErr(t, err, "InboxStats")
	if count != 5 || !oldest.Equal(at(1)) || oldest.Location() != time.UTC {
		t.Errorf("InboxStats = %d, %v; want 5, %v", count, oldest, at(1))
	}

	// A duplicate envelope id is a conflict and the whole call is undone.
	_, err = s.EnqueueInbox(ctx, []store.InboxEntry{entry("fresh", "r3", at(6), []byte("x")), entry("a1", "r3", at(6), []byte("y"))})
	isErr(t, err, store.ErrConflict, "EnqueueInbox duplicate envelope")
	if l := listAll(t, s, "r3", now); len(l) != 0 {
		t.Errorf("a failed EnqueueInbox left entries: %s", show(envelopes(l)))
	}
	// A recipient that is not a device is refused (foreign key).
	_, err = s.EnqueueInbox(ctx, []store.InboxEntry{entry("ghost", "no-such-device", at(6), []byte("x"))})
	anyErr(t, err, "EnqueueInbox for an unknown device")

	// Paging with after and limit.
	var page []store.InboxEntry
	for i := range 10 {
		page = append(page, entry(fmt.Sprintf("p%02d", i), "r3", at(10+i), []byte{byte(i)}))
	}
	pageIDs := enqueue(t, s, page...)
	var got []string
	after := int64(0)
	for calls := 0; ; calls++ {
		if calls > 10 {
			t.Fatal("paging does not end")
		}
		l, err := s.ListInbox(ctx, "r3", after, now, 4)
		noErr(t, err, "ListInbox page")
		if len(l) > 4 {
			t.Fatalf("ListInbox returned %d entries, limit 4", len(l))
		}
		if len(l) == 0 {
			break
		}
		for _, e := range l {
			if e.QueueID <= after {
				t.Fatalf("ListInbox(after %d) returned queue id %d", after, e.QueueID)
			}
			after = e.QueueID
			got = append(got, e.EnvelopeID)
		}
	}
	sameStrings(t, got, envelopes(page), "paged ListInbox")
	l, err := s.ListInbox(ctx, "r3", pageIDs[6], now, 2)
	noErr(t, err, "ListInbox")
	sameStrings(t, envelopes(l), []string{"p07", "p08"}, "ListInbox(after p06, limit 2)")

	// Expired entries (expires_at <= now) are not listed.
	exp := []store.InboxEntry{
		entry("e-past", "r3", at(-100), nil),
		entry("e-now", "r3", at(-100), nil),
		entry("e-future", "r3", at(-100), nil),
	}
	exp[0].ExpiresAt = now.Add(-time.Second)
	exp[1].ExpiresAt = now
	exp[2].ExpiresAt = now.Add(time.Microsecond)
	expIDs := enqueue(t, s, exp...)
	l, err = s.ListInbox(ctx, "r3", pageIDs[9], now, 10)
	noErr(t, err, "ListInbox")
	sameStrings(t, envelopes(l), []string{"e-future"}, "ListInbox excludes expired")

	// DeleteInbox deletes only the recipient's own ids.
	noErr(t, s.DeleteInbox(ctx, "r1", []int64{ids1[0], ids1[1], ids2[1], 1 << 60}), "DeleteInbox")
	sameStrings(t, envelopes(listAll(t, s, "r1", now)), []string{"a3", "a4"}, "r1 after DeleteInbox")
	sameStrings(t, envelopes(listAll(t, s, "r2", now)), []string{"a2", "a5"}, "r2 after DeleteInbox of r1")
	noErr(t, s.DeleteInbox(ctx, "r1", nil), "DeleteInbox(nil)")
	noErr(t, s.DeleteInbox(ctx, "r3", pageIDs[2:5]), "DeleteInbox r3")
	sameStrings(t, envelopes(listAll(t, s, "r3", now)),
		[]string{"p00", "p01", "p05", "p06", "p07", "p08", "p09", "e-future"}, "r3 after DeleteInbox")

	// DeleteInboxOf.
	noErr(t, s.DeleteInboxOf(ctx, "r2"), "DeleteInboxOf")
	sameStrings(t, envelopes(listAll(t, s, "r2", now)), nil, "r2 after DeleteInboxOf")
	sameStrings(t, envelopes(listAll(t, s, "r1", now)), []string{"a3", "a4"}, "r1 after DeleteInboxOf(r2)")
	noErr(t, s.DeleteInboxOf(ctx, "nobody"), "DeleteInboxOf(nobody)")

	// Remaining: r1 a3 a4; r3 p00 p01 p05-p09 e-past e-now e-future.
	count, oldest, err = s.InboxStats(ctx)
	noErr(t, err, "InboxStats")
	if count != 12 {
		t.Errorf("InboxStats count = %d, want 12", count)
	}
	if !oldest.Equal(at(-100)) {
		t.Errorf("InboxStats oldest = %v, want %v (the e-* entries)", oldest, at(-100))
	}

	// PurgeExpiredInbox deletes expires_at <= now and reports the count.
	n, err := s.PurgeExpiredInbox(ctx, now)
	noErr(t, err, "PurgeExpiredInbox")
	if n != 2 {
		t.Errorf("PurgeExpiredInbox = %d, want 2", n)
	}
	n, err = s.PurgeExpiredInbox(ctx, now)
	noErr(t, err, "PurgeExpiredInbox again")
	if n != 0 {
		t.Errorf("PurgeExpiredInbox again = %d, want 0", n)
	}
	// Listing at a later time hides what expired meanwhile; the purge at
	// that time removes it.
	later := now.Add(time.Hour).Add(4 * time.Second) // a3 (at 3) and a4 (at 4) expired, p00 (at 10) not
	sameStrings(t, envelopes(listAll(t, s, "r1", later)), nil, "r1 listed later")
	n, err = s.PurgeExpiredInbox(ctx, later)
	noErr(t, err, "PurgeExpiredInbox later")
	if n != 3 { // a3, a4, e-future
		t.Errorf("PurgeExpiredInbox later = %d, want 3", n)
	}
	count, _, err = s.InboxStats(ctx)
	noErr(t, err, "InboxStats")
	if count != 7 {
		t.Errorf("InboxStats count = %d, want 7", count)
	}
	_ = expIDs

	// Queue ids are never reused, even after deletions.
	noErr(t, s.DeleteInboxOf(ctx, "r3"), "DeleteInboxOf")
	last := enqueue(t, s, entry("after-delete", "r3", at(100), nil))
	if last[0] <= expIDs[2] {
		t.Errorf("queue id %d after deleting everything, want > %d", last[0], expIDs[2])
	}
}

func testInboxPayloads(t *testing.T, s store.Store) {
	mustUser(t, s, "u1")
	mustDevice(t, s, "u1", "r1", t0)

	big := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	payloads := [][]byte{
		nil,
		{},
		{0},
		{0, 0, 0, 0xff, 0, 0x80},
		[]byte("plain text \x00 with a NUL and utf-8 ✓"),
		bytes.Repeat([]byte{0xff}, 4096),
		big,
	}
	var entries []store.InboxEntry
	for i, p := range payloads {
		entries = append(entries, entry(fmt.Sprintf("pl%d", i), "r1", at(i), p))
	}
	enqueue(t, s, entries...)
	l := listAll(t, s, "r1", at(0))
	if len(l) != len(payloads) {
		t.Fatalf("ListInbox = %d entries, want %d", len(l), len(payloads))
	}
	for i, e := range l {
		if !bytes.Equal(e.Payload, payloads[i]) {
			t.Errorf("payload %d: got %d bytes, want %d bytes (contents differ)", i, len(e.Payload), len(payloads[i]))
		}
	}
}

func testInboxLargeBatch(t *testing.T, s store.Store) {
	mustUser(t, s, "u1")
	mustDevice(t, s, "u1", "r1", t0)
	mustDevice(t, s, "u1", "r2", t0)

	// Larger than any sensible statement chunk: ids must still come back
	// in input order.
	const n = 5000
	entries := make([]store.InboxEntry, n)
	for i := range entries {
		r := "r1"
		if i%3 == 0 {
			r = "r2"
		}
		entries[i] = entry(fmt.Sprintf("big-%05d", i), r, at(i%100), []byte(fmt.Sprint(i)))
	}
	ids := enqueue(t, s, entries...)
	increasing(t, ids, "large batch")
	byID := make(map[int64]string, n)
	for _, r := range []string{"r1", "r2"} {
		for _, e := range listAll(t, s, r, at(0)) {
			byID[e.QueueID] = e.EnvelopeID
		}
	}
	if len(byID) != n {
		t.Fatalf("listed %d entries, want %d", len(byID), n)
	}
	for i, id := range ids {
		if byID[id] != entries[i].EnvelopeID {
			t.Fatalf("queue id %d (input %d) holds %q, want %q", id, i, byID[id], entries[i].EnvelopeID)
		}
	}
}

// usageOf returns the recipients' inbox usage, zero for those missing.
func usageOf(t testing.TB, s store.Store, recipients ...string) []store.InboxUsage {
	t.Helper()
	m, err := s.InboxUsage(t.Context(), recipients)
	noErr(t, err, "InboxUsage")
	out := make([]store.InboxUsage, len(recipients))
	for i, r := range recipients {
		out[i] = m[r]
	}
	return out
}

func wantUsage(t testing.TB, s store.Store, what string, recipients []string, want ...store.InboxUsage) {
	t.Helper()
	if got := usageOf(t, s, recipients...); !slices.Equal(got, want) {
		t.Errorf("%s: InboxUsage(%v) = %v, want %v", what, recipients, got, want)
	}
}

// InboxUsage follows every way an entry comes or goes: insert, delete,
// delete-all, purge; a failed or rolled-back insert changes nothing.
func testInboxUsage(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u1")
	for _, d := range []string{"r1", "r2", "sender"} {
		mustDevice(t, s, "u1", d, t0)
	}
	both := []string{"r1", "r2"}
	wantUsage(t, s, "empty", both, store.InboxUsage{}, store.InboxUsage{})
	if m, err := s.InboxUsage(ctx, nil); err != nil || len(m) != 0 {
		t.Errorf("InboxUsage(nil) = %v, %v", m, err)
	}

	ids := enqueue(t, s, entry("u-a", "r1", at(1), []byte("aa")), entry("u-b", "r1", at(2), []byte("bbb")), entry("u-c", "r2", at(3), nil))
	wantUsage(t, s, "after insert", both, store.InboxUsage{Entries: 2, Bytes: 5}, store.InboxUsage{Entries: 1})

	_, err := s.EnqueueInbox(ctx, []store.InboxEntry{entry("u-d", "r1", at(4), []byte("dddd")), entry("u-a", "r1", at(4), []byte("x"))})
	isErr(t, err, store.ErrConflict, "EnqueueInbox duplicate envelope")
	wantUsage(t, s, "after a failed insert", both, store.InboxUsage{Entries: 2, Bytes: 5}, store.InboxUsage{Entries: 1})

	errRollback := fmt.Errorf("roll back")
	err = s.Tx(ctx, func(q store.Queries) error {
		if _, err := q.EnqueueInbox(ctx, []store.InboxEntry{entry("u-e", "r2", at(5), []byte("eeeee"))}); err != nil {
			return err
		}
		if u, err := q.InboxUsage(ctx, []string{"r2"}); err != nil || u["r2"] != (store.InboxUsage{Entries: 2, Bytes: 5}) {
			t.Errorf("InboxUsage inside the transaction = %v, %v", u, err)
		}
		return errRollback
	})
	isErr(t, err, errRollback, "Tx")
	wantUsage(t, s, "after a rolled-back insert", both, store.InboxUsage{Entries: 2, Bytes: 5}, store.InboxUsage{Entries: 1})

	noErr(t, s.DeleteInbox(ctx, "r1", ids[:1]), "DeleteInbox")
	wantUsage(t, s, "after DeleteInbox", both, store.InboxUsage{Entries: 1, Bytes: 3}, store.InboxUsage{Entries: 1})
	noErr(t, s.DeleteInbox(ctx, "r2", ids[:1]), "DeleteInbox of another recipient's id")
	wantUsage(t, s, "after deleting nothing", both, store.InboxUsage{Entries: 1, Bytes: 3}, store.InboxUsage{Entries: 1})

	// r2's entry expires at at(3)+1h; r1's at at(2)+1h.
	n, err := s.PurgeExpiredInbox(ctx, at(3).Add(time.Hour))
	noErr(t, err, "PurgeExpiredInbox")
	if n != 2 {
		t.Errorf("PurgeExpiredInbox removed %d entries, want 2", n)
	}
	wantUsage(t, s, "after the purge", both, store.InboxUsage{}, store.InboxUsage{})

	enqueue(t, s, entry("u-f", "r1", at(6), []byte("f")), entry("u-g", "r1", at(7), []byte("gg")))
	noErr(t, s.DeleteInboxOf(ctx, "r1"), "DeleteInboxOf")
	wantUsage(t, s, "after DeleteInboxOf", both, store.InboxUsage{}, store.InboxUsage{})

	// More recipients than one query takes at once.
	var many []string
	var entries []store.InboxEntry
	for i := range 150 {
		d := fmt.Sprintf("m%03d", i)
		mustDevice(t, s, "u1", d, t0)
		many = append(many, d)
		entries = append(entries, entry("u-m"+d, d, at(8), make([]byte, i)))
	}
	enqueue(t, s, entries...)
	got := usageOf(t, s, many...)
	for i, u := range got {
		if u != (store.InboxUsage{Entries: 1, Bytes: int64(i)}) {
			t.Fatalf("InboxUsage(%s) = %v, want 1 entry of %d bytes", many[i], u, i)
		}
	}
}

// InboxUsageBackfill checks the migration that adds inbox_usage: s is a
// store at the schema version before it; migrate applies the rest. The
// usage of the entries queued before must be there afterwards.
func InboxUsageBackfill(t *testing.T, s store.Store, migrate func()) {
	t.Helper()
	mustUser(t, s, "u1")
	for _, d := range []string{"r1", "r2", "r3"} {
		mustDevice(t, s, "u1", d, t0)
	}
	enqueue(t, s, entry("b-1", "r1", at(1), make([]byte, 10)), entry("b-2", "r1", at(2), make([]byte, 20)),
		entry("b-3", "r2", at(3), make([]byte, 30)))
	migrate()
	wantUsage(t, s, "after the migration", []string{"r1", "r2", "r3"},
		store.InboxUsage{Entries: 2, Bytes: 30}, store.InboxUsage{Entries: 1, Bytes: 30}, store.InboxUsage{})
	// And the triggers run from then on.
	enqueue(t, s, entry("b-4", "r3", at(4), make([]byte, 5)))
	wantUsage(t, s, "after an insert", []string{"r3"}, store.InboxUsage{Entries: 1, Bytes: 5})
}
