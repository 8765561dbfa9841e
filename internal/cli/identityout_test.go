package cli

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/servertest"
)

// TestRotateKeysIdentityOut: rotate-keys --identity-out writes a Go SDK
// identity (mode 0600) for the new device key, and a client using it is
// admitted as that known device by a server that approves no new devices;
// an existing file is never overwritten and then nothing is rotated.
func TestRotateKeysIdentityOut(t *testing.T) {
	n := newNode(t, true)
	user := n.ok(t, "register-user", "dora")
	path := filepath.Join(t.TempDir(), "phone.json")
	out := n.ok(t, "rotate-keys", "--handle", "dora", "--identity-out", path, "phone")
	if out.get("identity_file") != path {
		t.Fatalf("identity_file=%q, want %q", out.get("identity_file"), path)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v, want 0600", st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var id client.Identity
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatalf("identity file: %v", err)
	}
	if pub := id.DevicePublic(); id.DeviceID != "phone" || hex.EncodeToString(pub[:]) != out.get("public_key") {
		t.Fatalf("identity device %q key %x, printed %s", id.DeviceID, pub, out.get("public_key"))
	}
	if c := id.CurrentCertificate(); c == nil || string(c.AppendCanonical(nil)) != out.get("certificate") {
		t.Fatal("identity certificate differs from the printed one")
	}

	// The same path again: refused before anything changes.
	if _, _, code := n.run(t, "rotate-keys", "--handle", "dora", "--identity-out", path, "phone"); code == ExitOK {
		t.Fatal("rotate-keys overwrote an existing identity file")
	}
	d, err := n.store(t).GetDevice(context.Background(), "phone")
	if err != nil || hex.EncodeToString(d.PublicKey[:]) != out.get("public_key") {
		t.Fatalf("device key changed by the refused run: %v", err)
	}

	// A server that admits no unknown device lets it in.
	cfg := n.config(t)
	cfg.Server.Bind = "127.0.0.1:0"
	cfg.Server.AutoApproveDevices = false
	pool := x509.NewCertPool()
	certPEM, err := os.ReadFile(n.init["tls_cert"])
	if err != nil || !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("reading the init certificate", err)
	}
	srv := servertest.StartWith(t, cfg, pool, n.dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := client.Dial(ctx, client.Options{URL: srv.URL, TLSConfig: srv.TLS(), Identity: &id})
	if err != nil {
		t.Fatalf("dial with the rotate-keys identity: %v", err)
	}
	defer conn.Close()
	if conn.UserID() != user.get("user_id") {
		t.Errorf("connected as user %q, want %q", conn.UserID(), user.get("user_id"))
	}
}
