package server_test

// §14 "Storage, configuration, CLI, ledger": items 100 and 102.
//
// Item 101 (an unknown configuration key, or a noise_public that does not
// match noise_private, makes commucat-server exit with code 2 and an
// `error:` line) is not covered here: it needs the commucat-server binary,
// and building it from a test (modernc.org/sqlite included) takes far longer
// than this suite's budget.

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/servertest"
)

// Item 100: With empty `postgres_dsn` and `redis_url` the server creates
// the SQLite database at `storage.sqlite_path`, and users, devices and
// queued messages survive a restart.
func TestItem100DataSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, pool := servertest.Config(t, dir)
	c.Storage.SQLitePath = filepath.Join(dir, "nested", "state", "db.sqlite")
	if c.Storage.PostgresDSN != "" || c.Storage.RedisURL != "" {
		t.Fatal("the test configuration names PostgreSQL or Redis")
	}
	if _, err := os.Stat(c.Storage.SQLitePath); !os.IsNotExist(err) {
		t.Fatalf("database exists before the start: %v", err)
	}

	s1 := servertest.StartWith(t, c, pool, dir)
	if fi, err := os.Stat(c.Storage.SQLitePath); err != nil || fi.Size() == 0 {
		t.Fatalf("no SQLite database at storage.sqlite_path: %v", err)
	}
	ida, idb := newIdentity(t, "alice"), newIdentity(t, "bob")
	handleA, handleB := uniqueHandle("alice"), uniqueHandle("bob")
	register(t, s1, idb, handleB)
	a := dial(t, s1, ida, handleA)
	userA := a.UserID()
	ch := channelWith(t, a, idb.DeviceID)
	if err := a.SendMessage(ctxWait(t), ch, []byte("kept across restarts")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	s1.Stop(t)

	s2 := servertest.StartWith(t, c, pool, dir)
	// bob's device is known without any user hint (an unknown device
	// without hints would be Invalid Handshake), and gets the queued MSG.
	b := dial(t, s2, idb, "")
	f := nextMsg(t, b)
	if f.Channel != ch || string(f.Payload) != "kept across restarts" {
		t.Fatalf("after the restart got %v %q", f, f.Payload)
	}
	a = dial(t, s2, ida, "")
	if a.UserID() != userA {
		t.Fatalf("alice's user id changed from %s to %s", userA, a.UserID())
	}
	if a.Ack().User.Handle != handleA {
		t.Fatalf("alice's handle is %q", a.Ack().User.Handle)
	}
}

// Item 102: `COMMUCAT_BIND` overrides `server.bind`.
//
// The configuration file names an address this host cannot listen on; the
// environment (passed to config.Load, as commucat-server does with the
// process environment) moves the server to 127.0.0.1:0.
func TestItem102BindFromEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base, pool := servertest.Config(t, dir)
	file := filepath.Join(dir, "commucat.toml")
	toml := fmt.Sprintf(`[server]
bind = "192.0.2.1:9443"
domain = "commucat.local"
tls_cert = %q
tls_key = %q
auto_approve_devices = true
max_auto_devices_per_user = 0

[storage]
sqlite_path = "data/commucat.db"

[crypto]
noise_private = %q
noise_public = %q
federation_seed = %q
`, base.Server.TLSCert, base.Server.TLSKey, hex.EncodeToString(base.Crypto.NoisePrivate[:]),
		hex.EncodeToString(base.Crypto.NoisePublic[:]), hex.EncodeToString(base.Crypto.FederationSeed))
	if err := os.WriteFile(file, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) (string, bool) {
		if k == "COMMUCAT_BIND" {
			return "127.0.0.1:0", true
		}
		return "", false
	}
	c, err := config.Load(file, true, env)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if c.Server.Bind != "127.0.0.1:0" {
		t.Fatalf("server.bind is %q, want the COMMUCAT_BIND value", c.Server.Bind)
	}
	s := servertest.StartWith(t, c, pool, dir)
	resp, body := get(t, httpClientFor(t, s, true), s.URL+"/healthz")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
}
