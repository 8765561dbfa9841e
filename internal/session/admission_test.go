package session

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/sqlite"
)

// The re-check inside the commit transaction (signed=true) does not verify
// the certificate's signature again, but still applies every other rule:
// a certificate that expired, or names another owner, since the first
// decision is refused.
func TestAdmissionRecheckSkipsOnlyTheSignature(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir()+"/db.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	devKey, _ := identity.FromSeed(bytes.Repeat([]byte{3}, 32))
	devPub := identity.PublicKey32(devKey)
	if err := st.CreateUser(ctx, store.User{ID: "u1", Handle: "alice", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDevice(ctx, store.Device{ID: "d1", UserID: "u1", PublicKey: devPub, Status: store.DeviceActive, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	ca, _ := identity.DeviceCA(bytes.Repeat([]byte{1}, 32))
	pol := admissionPolicy{autoApprove: true, caPublic: identity.PublicKey32(ca)}
	hello := func(c identity.Certificate) *noiseconn.Hello {
		return &noiseconn.Hello{DeviceID: "d1", DevicePublic: devPub, Certificate: &c}
	}
	good := identity.IssueCertificate(ca, 1, "u1", "d1", devPub, now.Unix())
	forged := good
	forged.Signature[0] ^= 1

	check := func(name string, h *noiseconn.Hello, at time.Time, signed bool, wantTitle string) {
		t.Helper()
		_, herr := decideAdmission(ctx, st, pol, h, "new-user", at, signed)
		switch {
		case wantTitle == "" && herr != nil:
			t.Errorf("%s: refused: %v", name, herr)
		case wantTitle != "" && (herr == nil || herr.Title != wantTitle):
			t.Errorf("%s: got %v, want %s", name, herr, wantTitle)
		}
	}
	check("valid certificate", hello(good), now, false, "")
	check("forged signature, first decision", hello(forged), now, false, ccp.TitleAuthenticationFailed)
	check("valid certificate, re-check", hello(good), now, true, "")
	// The contract: signed=true trusts the first decision's signature
	// check (which the forged certificate never passes).
	check("forged signature, re-check", hello(forged), now, true, "")
	expiredAt := time.Unix(good.ExpiresAt, 0)
	check("expired by the re-check", hello(good), expiredAt, true, ccp.TitleAuthenticationFailed)
	other := identity.IssueCertificate(ca, 2, "u2", "d1", devPub, now.Unix())
	check("another owner, re-check", hello(other), now, true, ccp.TitleAuthenticationFailed)
}
