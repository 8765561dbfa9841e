package httpapi

import (
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/store"
)

func TestDevicesList(t *testing.T) {
	e := newEnv(t, nil)
	name := "Phone"
	e.clock.Advance(time.Second)
	b := e.mkDevice(e.user.ID, "dev-b", &name)
	e.clock.Advance(1500 * time.Microsecond)
	c := e.mkDevice(e.user.ID, "dev-c", nil)
	if err := e.st.SetDeviceStatus(t.Context(), c.ID, store.DeviceRevoked, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	other := e.mkUser("bob")
	e.mkDevice(other.ID, "dev-bob", nil)

	w := e.do("GET", "/api/devices", bearer(e.tok), "")
	okJSON(t, w)
	want := `{"devices":[` +
		`{"created_at":"2025-01-01T00:00:00+00:00","current":true,"device_id":"dev-a","device_name":null,"public_key":"` + hex.EncodeToString(e.dev.PublicKey[:]) + `","status":"active"},` +
		`{"created_at":"2025-01-01T00:00:01+00:00","current":false,"device_id":"dev-b","device_name":"Phone","public_key":"` + hex.EncodeToString(b.PublicKey[:]) + `","status":"active"},` +
		`{"created_at":"2025-01-01T00:00:01.001500+00:00","current":false,"device_id":"dev-c","device_name":null,"public_key":"` + hex.EncodeToString(c.PublicKey[:]) + `","status":"revoked"}]}`
	if w.Body.String() != want {
		t.Fatalf("body\n%s\nwant\n%s", w.Body.String(), want)
	}
	m := okJSON(t, w)
	devs := m["devices"].([]any)
	if len(devs) != 3 {
		t.Fatalf("%v", devs)
	}
	ids := []string{}
	for _, d := range devs {
		dm := d.(map[string]any)
		ids = append(ids, dm["device_id"].(string))
		wantMembers(t, dm, "created_at", "current", "device_id", "device_name", "public_key", "status")
	}
	if !slices.Equal(ids, []string{"dev-a", "dev-b", "dev-c"}) {
		t.Fatal(ids)
	}
	d0, d1, d2 := devs[0].(map[string]any), devs[1].(map[string]any), devs[2].(map[string]any)
	if d0["current"] != true || d1["current"] != false || d0["device_name"] != nil || d1["device_name"] != "Phone" ||
		d2["status"] != "revoked" || d1["created_at"] != "2025-01-01T00:00:01+00:00" || d2["created_at"] != "2025-01-01T00:00:01.001500+00:00" ||
		d0["public_key"] != hex.EncodeToString(e.dev.PublicKey[:]) {
		t.Fatalf("%v", devs)
	}
	// From dev-b's point of view.
	tok := e.mkSession(e.user.ID, "dev-b")
	devs = okJSON(t, e.do("GET", "/api/devices", bearer(tok), ""))["devices"].([]any)
	if devs[0].(map[string]any)["current"] != false || devs[1].(map[string]any)["current"] != true {
		t.Fatalf("%v", devs)
	}
	wantUnauthorized(t, e.do("GET", "/api/devices", "", ""))
}

func TestRevoke(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	b := e.mkDevice(e.user.ID, "dev-b", nil)
	tokB := e.mkSession(e.user.ID, b.ID)
	bob := e.mkUser("bob")
	e.mkDevice(bob.ID, "dev-bob", nil)

	// Inbox entries, channels and a group for dev-b.
	now := e.clock.Now()
	if _, err := e.st.EnqueueInbox(ctx, []store.InboxEntry{
		{EnvelopeID: "env-1", Recipient: b.ID, Sender: e.dev.ID, Channel: 5, FrameType: 5, Payload: []byte("x"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		{EnvelopeID: "env-2", Recipient: b.ID, Sender: e.dev.ID, Channel: 5, FrameType: 5, Payload: []byte("y"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
		{EnvelopeID: "env-3", Recipient: e.dev.ID, Sender: b.ID, Channel: 5, FrameType: 5, Payload: []byte("z"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateChannel(ctx, store.Channel{ID: 5, CreatedBy: e.dev.ID, CreatedAt: now}, []string{e.dev.ID, b.ID}, now); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateChannel(ctx, store.Channel{ID: 6, CreatedBy: b.ID, CreatedAt: now}, []string{b.ID}, now); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateGroup(ctx, store.Group{ID: "g1", OwnerDevice: e.dev.ID, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.UpsertGroupMember(ctx, store.GroupMember{GroupID: "g1", DeviceID: b.ID, Role: store.RoleMember, JoinedAt: now}); err != nil {
		t.Fatal(err)
	}

	// Errors first (table of §8.4.5).
	cases := []struct {
		body   string
		status int
		title  string
		detail string
	}{
		{`{}`, 400, "BadRequest", "device_id is required"},
		{`{"device_id":null}`, 400, "BadRequest", "device_id is required"},
		{`{"device_id":""}`, 400, "BadRequest", "device_id is required"},
		{`{"device_id":"  "}`, 400, "BadRequest", "device_id is required"},
		{`{"device_id":5}`, 400, "BadRequest", "invalid JSON payload"},
		{`{"device_id":"dev-a"}`, 409, "Conflict", "cannot revoke active session device"},
		{`{"device_id":"dev-nope"}`, 404, "NotFound", "resource not found"},
		{`{"device_id":"dev-bob"}`, 403, "Forbidden", "access denied"},
	}
	for _, c := range cases {
		wantProblem(t, e.do("POST", "/api/devices/revoke", bearer(e.tok), c.body), c.status, c.title, c.detail)
	}
	if len(e.revokedCalls()) != 0 || len(e.ledger.all()) != 0 {
		t.Fatal("side effects of failed revocations")
	}
	if d, _ := e.st.GetDevice(ctx, "dev-bob"); d.Status != store.DeviceActive {
		t.Fatal("bob's device changed")
	}
	wantUnauthorized(t, e.do("POST", "/api/devices/revoke", "", `{"device_id":"dev-b"}`))

	e.clock.Advance(time.Minute)
	w := e.do("POST", "/api/devices/revoke", bearer(e.tok), `{"device_id":"dev-b"}`)
	okJSON(t, w)
	const wantBody = `{"device_id":"dev-b","status":"revoked"}`
	if w.Body.String() != wantBody {
		t.Fatal(w.Body.String())
	}
	d, _ := e.st.GetDevice(ctx, b.ID)
	if d.Status != store.DeviceRevoked || d.RevokedAt == nil || !d.RevokedAt.Equal(e.clock.Now()) {
		t.Fatalf("%+v", d)
	}
	ev, err := e.st.LatestKeyEvent(ctx, b.ID, []string{store.KeyRevoke})
	if err != nil || ev.PublicKey != b.PublicKey || !ev.RecordedAt.Equal(e.clock.Now()) {
		t.Fatalf("%+v %v", ev, err)
	}
	recs := e.ledger.all()
	if len(recs) != 1 || recs[0].digest != b.PublicKey || recs[0].meta != `{"action":"revoke","device":"dev-b","source":"rest","user":"user-alice"}` {
		t.Fatalf("%+v", recs)
	}
	if got := e.revokedCalls(); !slices.Equal(got, []string{"dev-b"}) {
		t.Fatal(got)
	}
	if in, _ := e.st.ListInbox(ctx, b.ID, 0, e.clock.Now(), 100); len(in) != 0 {
		t.Fatalf("inbox %v", in)
	}
	if in, _ := e.st.ListInbox(ctx, e.dev.ID, 0, e.clock.Now(), 100); len(in) != 1 {
		t.Fatalf("other inbox %v", in)
	}
	if chs, _ := e.st.ChannelsOf(ctx, b.ID); len(chs) != 0 {
		t.Fatalf("channels %v", chs)
	}
	if m, _ := e.st.ChannelMembers(ctx, 5); !slices.Equal(m, []string{e.dev.ID}) {
		t.Fatalf("channel 5 %v", m)
	}
	if _, err := e.st.GetChannel(ctx, 6); err == nil {
		t.Fatal("empty channel 6 kept")
	}
	if gm, _ := e.st.GroupMembers(ctx, "g1"); len(gm) != 0 {
		t.Fatalf("group %v", gm)
	}
	// Its token is refused (§13a.9), including for revoking.
	wantForbidden(t, e.do("GET", "/api/devices", bearer(tokB), ""))

	// Again: 200, same body, no new key event or ledger record.
	w = e.do("POST", "/api/devices/revoke", bearer(e.tok), `{"device_id":"dev-b"}`)
	if w.Code != 200 || w.Body.String() != wantBody {
		t.Fatal(w.Body.String())
	}
	if len(e.ledger.all()) != 1 {
		t.Fatal("second ledger record")
	}
	devs := okJSON(t, e.do("GET", "/api/devices", bearer(e.tok), ""))["devices"].([]any)
	if devs[1].(map[string]any)["status"] != "revoked" {
		t.Fatal(devs)
	}
}
