package sqlite

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

func mustMembers(t *testing.T, q store.Queries, id uint32, want ...string) {
	t.Helper()
	got, err := q.ChannelMembers(t.Context(), id)
	if err != nil {
		t.Fatalf("ChannelMembers(%d): %v", id, err)
	}
	if len(got) != 0 || len(want) != 0 {
		if !slices.Equal(got, want) {
			t.Fatalf("ChannelMembers(%d) = %q, want %q", id, got, want)
		}
	}
}

func mustIsMember(t *testing.T, q store.Queries, id uint32, member string, want bool) {
	t.Helper()
	got, err := q.IsChannelMember(t.Context(), id, member)
	if err != nil || got != want {
		t.Fatalf("IsChannelMember(%d, %s) = %v, %v; want %v", id, member, got, err, want)
	}
}

func setupDevices(t *testing.T, s *Store, devices ...string) {
	t.Helper()
	ctx := t.Context()
	now := time.Unix(1_700_000_000, 0).UTC()
	if err := s.CreateUser(ctx, store.User{ID: "u1", Handle: "h1", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, d := range devices {
		if err := s.CreateDevice(ctx, store.Device{ID: d, UserID: "u1", Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
}

// Every membership write is visible to the next ChannelMembers and
// IsChannelMember, although both are served from the cache once read.
func TestMembershipCacheSeesEveryChange(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	now := time.Unix(1_700_000_000, 0).UTC()
	setupDevices(t, s, "a", "b", "c")
	ch := store.Channel{ID: 5, CreatedBy: "a", CreatedAt: now}

	mustMembers(t, s, 5) // unknown channel: nothing cached
	if err := s.CreateChannel(ctx, ch, []string{"a", "b"}, now); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a", "b")
	if _, ok := s.sh.members.get(5); !ok {
		t.Fatal("members not cached after a read")
	}

	// The caller may modify the returned slice (session.recipients does).
	l, _ := s.ChannelMembers(ctx, 5)
	l[0] = "mutated"
	mustMembers(t, s, 5, "a", "b")

	if err := s.AddChannelMembers(ctx, 5, []string{"c"}, now); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a", "b", "c")
	mustIsMember(t, s, 5, "c", true)

	if err := s.RemoveChannelMember(ctx, 5, "b"); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a", "c")
	mustIsMember(t, s, 5, "b", false)

	// Inside Tx: visible to the transaction at once, to everyone after the
	// commit.
	err := s.Tx(ctx, func(q store.Queries) error {
		if err := q.AddChannelMembers(ctx, 5, []string{"b"}, now); err != nil {
			return err
		}
		mustMembers(t, q, 5, "a", "b", "c")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a", "b", "c")

	// A rolled back change is never seen.
	errRollback := errors.New("rollback")
	err = s.Tx(ctx, func(q store.Queries) error {
		if err := q.RemoveChannelMember(ctx, 5, "a"); err != nil {
			return err
		}
		mustMembers(t, q, 5, "b", "c")
		mustMembers(t, s, 5, "a", "b", "c") // committed state, from the cache
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a", "b", "c")

	// RemoveDeviceMemberships, outside and inside Tx.
	if err := s.RemoveDeviceMemberships(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a", "c")
	if err := s.Tx(ctx, func(q store.Queries) error { return q.RemoveDeviceMemberships(ctx, "c") }); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a")

	// DeleteChannel (members go by cascade), then re-creation.
	if err := s.DeleteChannel(ctx, 5); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5)
	mustIsMember(t, s, 5, "a", false)
	if err := s.Tx(ctx, func(q store.Queries) error { return q.CreateChannel(ctx, ch, []string{"c"}, now) }); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "c")
	if err := s.Tx(ctx, func(q store.Queries) error { return q.DeleteChannel(ctx, 5) }); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5)

	// The last member leaving deletes the channel (RemoveDeviceMemberships).
	if err := s.CreateChannel(ctx, ch, []string{"a"}, now); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5, "a")
	if err := s.RemoveDeviceMemberships(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	mustMembers(t, s, 5)
}

// Readers racing with membership writes never leave a stale list cached.
func TestMembershipCacheConcurrent(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	now := time.Unix(1_700_000_000, 0).UTC()
	setupDevices(t, s, "a")
	const channels = 4
	for i := range channels {
		if err := s.CreateChannel(ctx, store.Channel{ID: uint32(i + 1), CreatedBy: "a", CreatedAt: now}, []string{"a"}, now); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.ChannelMembers(ctx, uint32(i%channels+1)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 200 {
		id := uint32(i%channels + 1)
		m := fmt.Sprintf("m%d", i)
		if err := s.AddChannelMembers(ctx, id, []string{m}, now); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.IsChannelMember(ctx, id, m); err != nil || !ok {
			t.Fatalf("IsChannelMember after add = %v, %v", ok, err)
		}
		if i%3 == 0 {
			if err := s.RemoveChannelMember(ctx, id, m); err != nil {
				t.Fatal(err)
			}
			if ok, _ := s.IsChannelMember(ctx, id, m); ok {
				t.Fatal("member still seen after its removal")
			}
		}
	}
	close(stop)
	wg.Wait()
	// The cache agrees with the database.
	for i := range channels {
		id := uint32(i + 1)
		want, err := s.strings(ctx, "check", `SELECT member FROM channel_members WHERE channel_id = ? ORDER BY member`, id)
		if err != nil {
			t.Fatal(err)
		}
		mustMembers(t, s, id, want...)
	}
}

func TestMemberCacheBounds(t *testing.T) {
	c := newMemberCache()
	big := make([]string, memberCacheMembers/2+1)
	c.put(1, big, c.generation())
	c.put(2, big, c.generation())
	if _, ok := c.get(1); ok && c.members > memberCacheMembers {
		t.Fatalf("cache holds %d members", c.members)
	}
	for i := range memberCacheChannels + 10 {
		c.put(uint32(i+10), []string{"x"}, c.generation())
	}
	if len(c.m) > memberCacheChannels || c.members > memberCacheMembers {
		t.Fatalf("cache holds %d channels, %d members", len(c.m), c.members)
	}
	// A fill that raced with an invalidation is dropped.
	gen := c.generation()
	c.invalidate(false, 99)
	c.put(99, []string{"stale"}, gen)
	if _, ok := c.get(99); ok {
		t.Fatal("stale fill cached")
	}
}

// The hot statements end up prepared, including those first run inside a
// transaction (prepared once it ended).
func TestHotStatementsPrepared(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	now := time.Unix(1_700_000_000, 0).UTC()
	setupDevices(t, s, "a", "b")
	for range 2 {
		err := s.Tx(ctx, func(q store.Queries) error {
			ids, err := q.EnqueueInbox(ctx, []store.InboxEntry{{
				EnvelopeID: fmt.Sprint("e", now.UnixNano()), Recipient: "b", Sender: "a", Channel: 1,
				Payload: []byte("x"), CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			}})
			if err != nil {
				return err
			}
			now = now.Add(time.Second)
			return q.DeleteInbox(ctx, "b", ids)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	s.sh.wstmts.mu.Lock()
	_, ins := s.sh.wstmts.m[insertInboxSQL(1)]
	_, del := s.sh.wstmts.m[deleteInboxSQL(1)]
	s.sh.wstmts.mu.Unlock()
	if !ins || !del {
		t.Fatalf("prepared after Tx: insert %v, delete %v", ins, del)
	}
	if _, err := s.ListInbox(ctx, "b", 0, now, 0); err != nil {
		t.Fatal(err)
	}
	s.sh.rstmts.mu.Lock()
	n := len(s.sh.rstmts.m)
	s.sh.rstmts.mu.Unlock()
	if n == 0 {
		t.Fatal("no reader statement prepared")
	}
}

func BenchmarkChannelMembers(b *testing.B) {
	s := openTemp(b)
	now := time.Unix(1_700_000_000, 0).UTC()
	if err := s.CreateChannel(b.Context(), store.Channel{ID: 1, CreatedBy: "a", CreatedAt: now}, []string{"a", "b"}, now); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.ChannelMembers(b.Context(), 1); err != nil {
			b.Fatal(err)
		}
	}
}
