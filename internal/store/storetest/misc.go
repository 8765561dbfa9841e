package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

func noiseKey(version int, b byte) store.NoiseKey {
	var seed [64]byte
	for i := range seed {
		seed[i] = b ^ byte(i)
	}
	return store.NoiseKey{
		Version: version, Private: key32(b), Public: key32(b + 100), KEMSeed: seed,
		ValidAfter: at(version), RotatesAt: at(version + 3600),
		// 100-year validity (§10.4, rotation off).
		ExpiresAt: at(version).AddDate(100, 0, 0),
		CreatedAt: at(version),
	}
}

func testNoiseKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	l, err := s.ListNoiseKeys(ctx)
	noErr(t, err, "ListNoiseKeys")
	if len(l) != 0 {
		t.Fatalf("ListNoiseKeys of a fresh store = %d keys", len(l))
	}
	k1, k2, k3 := noiseKey(1, 10), noiseKey(2, 20), noiseKey(3, 30)
	for _, k := range []store.NoiseKey{k1, k3, k2} {
		noErr(t, s.InsertNoiseKey(ctx, k), fmt.Sprintf("InsertNoiseKey %d", k.Version))
	}
	l, err = s.ListNoiseKeys(ctx)
	noErr(t, err, "ListNoiseKeys")
	same(t, l, []store.NoiseKey{k3, k2, k1}, "ListNoiseKeys (newest first)")

	isErr(t, s.InsertNoiseKey(ctx, noiseKey(2, 99)), store.ErrConflict, "InsertNoiseKey existing version")

	noErr(t, s.DeleteNoiseKey(ctx, 2), "DeleteNoiseKey")
	l, err = s.ListNoiseKeys(ctx)
	noErr(t, err, "ListNoiseKeys")
	same(t, l, []store.NoiseKey{k3, k1}, "ListNoiseKeys after delete")
	// Deleting a missing version is not an error (nodes prune concurrently).
	noErr(t, s.DeleteNoiseKey(ctx, 2), "DeleteNoiseKey missing")

	// A deleted version can be inserted again.
	noErr(t, s.InsertNoiseKey(ctx, k2), "InsertNoiseKey again")
	l, err = s.ListNoiseKeys(ctx)
	noErr(t, err, "ListNoiseKeys")
	same(t, l, []store.NoiseKey{k3, k2, k1}, "ListNoiseKeys after re-insert")
}

func testNoiseConfig(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.NoiseConfig(ctx)
	isErr(t, err, store.ErrNotFound, "NoiseConfig before any")
	noErr(t, s.SetNoiseConfig(ctx, key32(1), at(0)), "SetNoiseConfig")
	got, err := s.NoiseConfig(ctx)
	noErr(t, err, "NoiseConfig")
	if got != key32(1) {
		t.Errorf("NoiseConfig = %x, want %x", got, key32(1))
	}
	noErr(t, s.SetNoiseConfig(ctx, key32(2), at(10)), "SetNoiseConfig overwrite")
	got, err = s.NoiseConfig(ctx)
	noErr(t, err, "NoiseConfig")
	if got != key32(2) {
		t.Errorf("NoiseConfig = %x, want %x", got, key32(2))
	}
}

func testTx(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustUser(t, s, "u0")
	mustDevice(t, s, "u0", "d0", t0)

	// Commit: the writes of fn are visible afterwards, and fn reads its own
	// writes.
	var ids []int64
	err := s.Tx(ctx, func(q store.Queries) error {
		if err := q.CreateUser(ctx, store.User{ID: "u1", Handle: "one", CreatedAt: t0, UpdatedAt: t0}); err != nil {
			return err
		}
		if _, err := q.GetUser(ctx, "u1"); err != nil {
			return fmt.Errorf("read own write: %w", err)
		}
		d := store.Device{ID: "d1", UserID: "u1", PublicKey: key32(1), Status: store.DeviceActive, CreatedAt: t0, UpdatedAt: t0}
		if err := q.CreateDevice(ctx, d); err != nil {
			return err
		}
		var err error
		ids, err = q.EnqueueInbox(ctx, []store.InboxEntry{entry("tx-1", "d1", t0, []byte("x")), entry("tx-2", "d1", t0, []byte("y"))})
		if err != nil {
			return err
		}
		l, err := q.ListInbox(ctx, "d1", 0, t0, 10)
		if err != nil {
			return err
		}
		if len(l) != 2 {
			return fmt.Errorf("ListInbox inside Tx = %d entries, want 2", len(l))
		}
		return q.CreateChannel(ctx, store.Channel{ID: 1, CreatedBy: "d1", CreatedAt: t0}, []string{"d1", "d0"}, t0)
	})
	noErr(t, err, "Tx commit")
	if len(ids) != 2 {
		t.Fatalf("EnqueueInbox in Tx returned %v", ids)
	}
	_, err = s.GetDevice(ctx, "d1")
	noErr(t, err, "device committed in Tx")
	sameStrings(t, envelopes(listAll(t, s, "d1", t0)), []string{"tx-1", "tx-2"}, "inbox committed in Tx")
	sameStrings(t, members(t, s, 1), []string{"d0", "d1"}, "channel committed in Tx")

	// Rollback: fn's error is returned and none of its writes remain.
	boom := errors.New("boom")
	err = s.Tx(ctx, func(q store.Queries) error {
		if err := q.CreateUser(ctx, store.User{ID: "u2", Handle: "two", CreatedAt: t0, UpdatedAt: t0}); err != nil {
			return err
		}
		if err := q.CreateDevice(ctx, store.Device{ID: "d2", UserID: "u2", PublicKey: key32(2), Status: store.DeviceActive, CreatedAt: t0, UpdatedAt: t0}); err != nil {
			return err
		}
		if _, err := q.EnqueueInbox(ctx, []store.InboxEntry{entry("rb-1", "d0", t0, []byte("z"))}); err != nil {
			return err
		}
		if err := q.SetDeviceStatus(ctx, "d0", store.DeviceRevoked, at(5)); err != nil {
			return err
		}
		if err := q.AddChannelMembers(ctx, 1, []string{"d2"}, t0); err != nil {
			return err
		}
		if err := q.DeleteInboxOf(ctx, "d1"); err != nil {
			return err
		}
		if err := q.InsertNoiseKey(ctx, noiseKey(1, 1)); err != nil {
			return err
		}
		if err := q.SetNoiseConfig(ctx, key32(7), t0); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx returned %v, want fn's error", err)
	}
	_, err = s.GetUser(ctx, "u2")
	isErr(t, err, store.ErrNotFound, "user of a rolled-back Tx")
	_, err = s.GetDevice(ctx, "d2")
	isErr(t, err, store.ErrNotFound, "device of a rolled-back Tx")
	sameStrings(t, envelopes(listAll(t, s, "d0", t0)), nil, "inbox of a rolled-back Tx")
	sameStrings(t, envelopes(listAll(t, s, "d1", t0)), []string{"tx-1", "tx-2"}, "inbox deleted in a rolled-back Tx")
	d0, err := s.GetDevice(ctx, "d0")
	noErr(t, err, "GetDevice")
	if d0.Status != store.DeviceActive || d0.RevokedAt != nil {
		t.Errorf("device status changed by a rolled-back Tx: %s", show(d0))
	}
	sameStrings(t, members(t, s, 1), []string{"d0", "d1"}, "channel members after a rolled-back Tx")
	l, err := s.ListNoiseKeys(ctx)
	noErr(t, err, "ListNoiseKeys")
	if len(l) != 0 {
		t.Errorf("noise key of a rolled-back Tx remains")
	}
	_, err = s.NoiseConfig(ctx)
	isErr(t, err, store.ErrNotFound, "noise config of a rolled-back Tx")

	// A store error returned by fn rolls back the earlier writes too.
	err = s.Tx(ctx, func(q store.Queries) error {
		if err := q.CreateUser(ctx, store.User{ID: "u3", Handle: "three", CreatedAt: t0, UpdatedAt: t0}); err != nil {
			return err
		}
		return q.CreateUser(ctx, store.User{ID: "u4", Handle: "three", CreatedAt: t0, UpdatedAt: t0})
	})
	isErr(t, err, store.ErrConflict, "Tx returning a conflict")
	_, err = s.GetUser(ctx, "u3")
	isErr(t, err, store.ErrNotFound, "user of a Tx that failed with a conflict")

	n, err := s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	if n != 2 {
		t.Errorf("CountUsers = %d, want 2", n)
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	const (
		workers = 8
		rounds  = 25
		batch   = 4
	)
	mustUser(t, s, "u")
	for w := range workers {
		mustDevice(t, s, "u", fmt.Sprintf("w%d", w), t0)
	}
	noErr(t, s.CreateChannel(ctx, store.Channel{ID: 1, CreatedBy: "w0", CreatedAt: t0}, nil, t0), "CreateChannel")

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			dev := fmt.Sprintf("w%d", w)
			fail := func(err error) { errs <- fmt.Errorf("%s: %w", dev, err) }
			var last int64
			for r := range rounds {
				entries := make([]store.InboxEntry, batch)
				for i := range entries {
					entries[i] = entry(fmt.Sprintf("%s-%d-%d", dev, r, i), dev, at(r), []byte(dev))
				}
				var ids []int64
				var err error
				if r%2 == 0 {
					ids, err = s.EnqueueInbox(ctx, entries)
				} else {
					err = s.Tx(ctx, func(q store.Queries) error {
						var err error
						ids, err = q.EnqueueInbox(ctx, entries)
						if err != nil {
							return err
						}
						return q.AddChannelMembers(ctx, 1, []string{dev}, at(r))
					})
				}
				if err != nil {
					fail(err)
					return
				}
				if len(ids) != batch || ids[0] <= last {
					fail(fmt.Errorf("round %d: ids %v after %d", r, ids, last))
					return
				}
				last = ids[batch-1]
				l, err := s.ListInbox(ctx, dev, 0, t0, 1000)
				if err != nil {
					fail(err)
					return
				}
				if len(l) != (r+1)*batch {
					fail(fmt.Errorf("round %d: listed %d entries, want %d", r, len(l), (r+1)*batch))
					return
				}
				if _, _, err := s.InboxStats(ctx); err != nil {
					fail(err)
					return
				}
				if _, err := s.CoMembers(ctx, dev); err != nil {
					fail(err)
					return
				}
				if err := s.TouchSession(ctx, "none", at(r)); !errors.Is(err, store.ErrNotFound) {
					fail(fmt.Errorf("TouchSession: %v", err))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	count, _, err := s.InboxStats(ctx)
	noErr(t, err, "InboxStats")
	if count != workers*rounds*batch {
		t.Errorf("InboxStats count = %d, want %d", count, workers*rounds*batch)
	}
	seen := map[int64]bool{}
	for w := range workers {
		l := listAll(t, s, fmt.Sprintf("w%d", w), t0)
		for i, e := range l {
			if seen[e.QueueID] {
				t.Fatalf("queue id %d assigned twice", e.QueueID)
			}
			seen[e.QueueID] = true
			if i > 0 && e.QueueID <= l[i-1].QueueID {
				t.Fatalf("ListInbox not ascending")
			}
		}
	}
	if m := members(t, s, 1); len(m) != workers {
		t.Errorf("channel members = %q, want %d", m, workers)
	}
}

func testTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	zone := time.FixedZone("UTC+05:30", 5*3600+1800)
	cases := []time.Time{
		time.Date(2025, 1, 2, 3, 4, 5, 123456000, zone),          // microseconds, not UTC
		time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC), // before the epoch
		time.Date(1970, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(2125, 6, 30, 12, 0, 0, 1000, time.UTC), // 100-year validity
	}
	for i, tm := range cases {
		id := fmt.Sprintf("t%d", i)
		noErr(t, s.CreateUser(ctx, store.User{ID: id, Handle: id, CreatedAt: tm, UpdatedAt: tm}), "CreateUser")
		u, err := s.GetUser(ctx, id)
		noErr(t, err, "GetUser")
		if !u.CreatedAt.Equal(tm) || u.CreatedAt.Location() != time.UTC || u.CreatedAt.Nanosecond() != tm.Nanosecond() {
			t.Errorf("time %v read back as %v (%v)", tm, u.CreatedAt, u.CreatedAt.Location())
		}
	}

	// Below a microsecond: stored at microsecond precision (truncated or
	// rounded, never off by more than 1 µs).
	fine := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	noErr(t, s.CreateUser(ctx, store.User{ID: "fine", Handle: "fine", CreatedAt: fine, UpdatedAt: fine}), "CreateUser")
	u, err := s.GetUser(ctx, "fine")
	noErr(t, err, "GetUser")
	if u.CreatedAt.Nanosecond()%1000 != 0 {
		t.Errorf("sub-microsecond part kept: %v", u.CreatedAt)
	}
	if d := u.CreatedAt.Sub(fine).Abs(); d >= time.Microsecond {
		t.Errorf("time %v read back as %v", fine, u.CreatedAt)
	}

	// Nullable times and the inbox too.
	mustDevice(t, s, "fine", "d1", cases[0])
	noErr(t, s.SetDeviceStatus(ctx, "d1", store.DeviceRevoked, cases[0].Add(time.Microsecond)), "SetDeviceStatus")
	d, err := s.GetDevice(ctx, "d1")
	noErr(t, err, "GetDevice")
	if d.RevokedAt == nil || !d.RevokedAt.Equal(cases[0].Add(time.Microsecond)) || d.RevokedAt.Location() != time.UTC {
		t.Errorf("RevokedAt = %v", d.RevokedAt)
	}
	e := entry("time", "d1", cases[0], nil)
	e.ExpiresAt = cases[3].In(zone)
	enqueue(t, s, e)
	l := listAll(t, s, "d1", cases[0])
	if len(l) != 1 {
		t.Fatalf("ListInbox = %d entries", len(l))
	}
	e.QueueID = l[0].QueueID
	same(t, l[0], e, "inbox entry times")
}

// testTxPanic: a panic in fn reaches the caller of Tx, the transaction's
// writes are rolled back, and the store works afterwards.
func testTxPanic(t *testing.T, s store.Store) {
	ctx := t.Context()
	var got any
	func() {
		defer func() { got = recover() }()
		_ = s.Tx(ctx, func(q store.Queries) error {
			if err := q.CreateUser(ctx, store.User{ID: "u1", Handle: "a", CreatedAt: t0, UpdatedAt: t0}); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if got != "boom" {
		t.Fatalf("Tx: panic %v reached the caller, want \"boom\"", got)
	}
	if _, err := s.GetUser(ctx, "u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user of a panicked Tx: %v", err)
	}
	if err := s.CreateUser(ctx, store.User{ID: "u2", Handle: "b", CreatedAt: t0, UpdatedAt: t0}); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
}
