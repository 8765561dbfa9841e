package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/store"
)

var rotateKeysOutput = []string{"user_id", "device_id", "public_key", "private_key", "issuer_public",
	"certificate_serial", "certificate_expires_at", "certificate"}

// checkRotateKeysOutput checks the §12.2 output of rotate-keys against the
// node's device CA and returns the certificate.
func checkRotateKeysOutput(t *testing.T, n *testNode, out *kv, userID, deviceID string) identity.Certificate {
	t.Helper()
	if !reflect.DeepEqual(out.keys, rotateKeysOutput) {
		t.Fatalf("output keys %v, want %v", out.keys, rotateKeysOutput)
	}
	if out.get("user_id") != userID || out.get("device_id") != deviceID {
		t.Errorf("user_id=%s device_id=%s", out.get("user_id"), out.get("device_id"))
	}
	for _, k := range []string{"public_key", "private_key", "issuer_public"} {
		if !initHex32.MatchString(out.get(k)) {
			t.Errorf("%s=%q is not hex32", k, out.get(k))
		}
	}
	// private_key is the 32-byte Ed25519 secret key of public_key.
	secret, _ := hex.DecodeString(out.get("private_key"))
	priv := ed25519.NewKeyFromSeed(secret)
	if pub := identity.PublicKey32(priv); hex.EncodeToString(pub[:]) != out.get("public_key") {
		t.Error("private_key does not belong to public_key")
	}
	if out.get("issuer_public") != n.init["device_ca_public"] {
		t.Errorf("issuer_public=%s, device_ca_public=%s", out.get("issuer_public"), n.init["device_ca_public"])
	}

	// The certificate is canonical JSON and verifies under the device CA
	// (§14 item 107).
	raw := out.get("certificate")
	cert, err := identity.ParseCertificate([]byte(raw))
	if err != nil {
		t.Fatalf("certificate: %v", err)
	}
	if v, err := canonjson.Parse([]byte(raw)); err != nil || string(v.Canonical()) != raw {
		t.Errorf("certificate is not canonical JSON: %v", err)
	}
	ca, _ := identity.DecodeHex32(n.init["device_ca_public"])
	now := time.Now().Unix()
	if err := cert.Verify(ca, deviceID, userID, now); err != nil {
		t.Errorf("certificate does not verify: %v", err)
	}
	if hex.EncodeToString(cert.PublicKey[:]) != out.get("public_key") {
		t.Error("certificate is for another key")
	}
	if cert.ExpiresAt-cert.IssuedAt != 2592000 || cert.IssuedAt > now || now-cert.IssuedAt > 300 {
		t.Errorf("issued_at %d expires_at %d (now %d)", cert.IssuedAt, cert.ExpiresAt, now)
	}
	if out.get("certificate_serial") != strconv.FormatUint(cert.Serial, 10) ||
		out.get("certificate_expires_at") != strconv.FormatInt(cert.ExpiresAt, 10) {
		t.Errorf("serial/expires lines %s %s differ from the certificate", out.get("certificate_serial"), out.get("certificate_expires_at"))
	}
	return cert
}

// keyEvents returns which of the actions register and rotate the
// device has key events for.
func keyEvents(t *testing.T, st store.Store, device string) (actions []string) {
	t.Helper()
	for _, a := range []string{store.KeyRegister, store.KeyRotate} {
		if _, err := st.LatestKeyEvent(context.Background(), device, []string{a}); err == nil {
			actions = append(actions, a)
		}
	}
	return actions
}

func TestRotateKeysNewDevice(t *testing.T) {
	n := newNode(t, true)
	ledgerPath := n.setLedgerFile(t)
	user := n.ok(t, "register-user", "alice")

	out := n.ok(t, "rotate-keys", "--handle", "alice")
	dev := out.get("device_id")
	if !regexp.MustCompile(`^device-[0-9]{13}$`).MatchString(dev) {
		t.Errorf("default device id %q", dev)
	}
	ms, _ := strconv.ParseInt(strings.TrimPrefix(dev, "device-"), 10, 64)
	if d := time.Since(time.UnixMilli(ms)); d < 0 || d > time.Hour {
		t.Errorf("device id time %v ago", d)
	}
	cert := checkRotateKeysOutput(t, n, out, user.get("user_id"), dev)

	st := n.store(t)
	ctx := context.Background()
	d, err := st.GetDevice(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if d.UserID != user.get("user_id") || d.Status != store.DeviceActive || d.PublicKey != cert.PublicKey {
		t.Errorf("device row %+v", d)
	}
	ev, err := st.LatestKeyEvent(ctx, dev, []string{store.KeyRegister, store.KeyRotate, store.KeyPair, store.KeyCertificate})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != store.KeyRegister || ev.PublicKey != cert.PublicKey || !initHex32.MatchString(ev.ID) {
		t.Errorf("key event %+v", ev)
	}

	// One ledger record with the key-record members and source "cli".
	data, err := os.ReadFile(ledgerPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d ledger lines", len(lines))
	}
	rec, err := canonjson.Parse([]byte(lines[0]))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"action":"register","certificate_expires_at":` + strconv.FormatInt(cert.ExpiresAt, 10) +
		`,"certificate_issued_at":` + strconv.FormatInt(cert.IssuedAt, 10) +
		`,"certificate_serial":` + strconv.FormatUint(cert.Serial, 10) +
		`,"device":"` + dev + `","source":"cli","user":"` + user.get("user_id") + `"}`
	if m, ok := rec.Get("metadata"); !ok || string(m.Canonical()) != want {
		t.Errorf("ledger metadata %s, want %s", m.Canonical(), want)
	}
	if dg, ok := rec.Get("digest"); !ok || dg.Str != out.get("public_key") {
		t.Error("ledger digest is not the device public key")
	}
	if v := n.ok(t, "ledger", "verify"); v.get("ledger_status") != "ok" || v.get("ledger_records") != "1" {
		t.Errorf("ledger verify: %v", v.m)
	}
}

func TestRotateKeysExistingDevice(t *testing.T) {
	n := newNode(t, true)
	ledgerPath := n.setLedgerFile(t)
	user := n.ok(t, "register-user", "bob", "Bob")
	uid := user.get("user_id")

	// --user and a positional id: created, then rotated.
	first := n.ok(t, "rotate-keys", "--user", uid, "laptop-1")
	checkRotateKeysOutput(t, n, first, uid, "laptop-1")
	second := n.ok(t, "rotate-keys", "--device=laptop-1", "--user="+uid)
	cert := checkRotateKeysOutput(t, n, second, uid, "laptop-1")
	if first.get("public_key") == second.get("public_key") || first.get("private_key") == second.get("private_key") {
		t.Fatal("the key did not change")
	}
	st := n.store(t)
	ctx := context.Background()
	d, err := st.GetDevice(ctx, "laptop-1")
	if err != nil || d.PublicKey != cert.PublicKey {
		t.Fatalf("device %+v, %v", d, err)
	}
	ev, err := st.LatestKeyEvent(ctx, "laptop-1", []string{store.KeyRegister, store.KeyRotate})
	if err != nil || ev.Action != store.KeyRotate || ev.PublicKey != cert.PublicKey {
		t.Errorf("latest key event %+v, %v", ev, err)
	}
	if got := keyEvents(t, st, "laptop-1"); !reflect.DeepEqual(got, []string{store.KeyRegister, store.KeyRotate}) {
		t.Errorf("key events %v", got)
	}

	// A revoked device is made active again with the new key.
	if err := st.SetDeviceStatus(ctx, "laptop-1", store.DeviceRevoked, time.Now()); err != nil {
		t.Fatal(err)
	}
	third := n.ok(t, "rotate-keys", "--handle", "bob", "--device", "laptop-1")
	if d, err := st.GetDevice(ctx, "laptop-1"); err != nil || d.Status != store.DeviceActive || hex.EncodeToString(d.PublicKey[:]) != third.get("public_key") {
		t.Errorf("after rotating a revoked device: %+v, %v", d, err)
	}

	// The three ledger records chain and carry register, rotate, rotate.
	v := n.ok(t, "ledger", "verify", ledgerPath)
	if v.get("ledger_records") != "3" || v.get("ledger_status") != "ok" {
		t.Errorf("ledger verify %v", v.m)
	}
	data, _ := os.ReadFile(ledgerPath)
	for i, action := range []string{"register", "rotate", "rotate"} {
		line := strings.Split(string(data), "\n")[i]
		if !strings.Contains(line, `"action":"`+action+`"`) || !strings.Contains(line, `"source":"cli"`) {
			t.Errorf("ledger line %d: %s", i+1, line)
		}
	}
}

func TestRotateKeysFailures(t *testing.T) {
	n := newNode(t, true)
	alice := n.ok(t, "register-user", "alice")
	n.ok(t, "register-user", "mallory")
	n.ok(t, "rotate-keys", "--handle", "alice", "phone")
	st := n.store(t)
	before, err := st.GetDevice(context.Background(), "phone")
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"--handle", "nobody"}, ExitFail, "error: no user with handle \"nobody\"\n"},
		{[]string{"--user", "0000"}, ExitFail, "error: no user with id \"0000\"\n"},
		{[]string{"--handle", "mallory", "phone"}, ExitFail, "error: device \"phone\" belongs to another user\n"},
		{nil, ExitUsage, rotateKeysUsage + " (--user or --handle is required)\n"},
		{[]string{"phone"}, ExitUsage, rotateKeysUsage + " (--user or --handle is required)\n"},
		{[]string{"--user", alice.get("user_id"), "--handle", "alice"}, ExitUsage, rotateKeysUsage + " (give --user or --handle, not both)\n"},
		{[]string{"--handle", "alice", "--device", "a", "b"}, ExitUsage, rotateKeysUsage + " (give --device or a positional device id, not both)\n"},
		{[]string{"--handle", "alice", "a", "b"}, ExitUsage, rotateKeysUsage + " (unknown argument b)\n"},
		{[]string{"--handle"}, ExitUsage, rotateKeysUsage + " (--handle needs a value)\n"},
		{[]string{"--handle", "alice", "--handle", "bob"}, ExitUsage, rotateKeysUsage + " (--handle given twice)\n"},
		{[]string{"--handle", "alice", "--force"}, ExitUsage, rotateKeysUsage + " (unknown argument --force)\n"},
		{[]string{"--handle", "alice", "bad@id"}, ExitUsage, "error: invalid device id \"bad@id\": 1-128 printable ASCII characters without '@'\n"},
	}
	for _, c := range cases {
		out, errOut, code := n.run(t, append([]string{"rotate-keys"}, c.args...)...)
		if code != c.code || out != "" || errOut != c.err {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d %q", c.args, code, out, errOut, c.code, c.err)
		}
	}
	// Nothing changed for the device of alice.
	after, err := st.GetDevice(context.Background(), "phone")
	if err != nil || after.PublicKey != before.PublicKey || after.UserID != alice.get("user_id") {
		t.Errorf("device changed: %+v %v", after, err)
	}
	if got := keyEvents(t, st, "phone"); !reflect.DeepEqual(got, []string{store.KeyRegister}) {
		t.Errorf("key events %v", got)
	}

	// A configuration that does not load.
	_, errOut, code := run(t, "", "--config", n.dir+"/missing.toml", "rotate-keys", "--handle", "alice")
	if code != ExitFail || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("missing config: exit %d, %q", code, errOut)
	}
}

func TestRotateNoise(t *testing.T) {
	n := newNode(t, true)
	ctx := context.Background()

	first := n.ok(t, "rotate-noise")
	if !reflect.DeepEqual(first.keys, []string{"noise_key_version", "noise_public"}) || first.get("noise_key_version") != "1" {
		t.Fatalf("output %v", first.m)
	}
	second := n.ok(t, "rotate-noise")
	if second.get("noise_key_version") != "2" || second.get("noise_public") == first.get("noise_public") {
		t.Fatalf("second rotation %v", second.m)
	}
	if second.get("noise_public") == n.init["noise_public"] {
		t.Error("rotate-noise reused the configured key")
	}

	cfg := n.config(t)
	st := n.store(t)
	rows, err := st.ListNoiseKeys(ctx)
	if err != nil || len(rows) != 2 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	k := rows[0]
	if k.Version != 2 || hex.EncodeToString(k.Public[:]) != second.get("noise_public") {
		t.Errorf("newest row %d", k.Version)
	}
	if pub, err := identity.X25519Public(k.Private); err != nil || pub != k.Public {
		t.Error("the stored private key does not match noise_public")
	}
	if k.KEMSeed == ([64]byte{}) || k.KEMSeed == rows[1].KEMSeed {
		t.Error("no fresh ML-KEM seed")
	}
	// §10.4 with the default rotation.noise (enabled).
	if !cfg.Rotation.Noise.Enabled {
		t.Fatal("expected rotation.noise enabled by default")
	}
	if k.RotatesAt.Sub(k.ValidAfter) != cfg.Rotation.Noise.Interval || k.ExpiresAt.Sub(k.RotatesAt) != cfg.Rotation.Noise.Grace {
		t.Errorf("validity %v %v %v", k.ValidAfter, k.RotatesAt, k.ExpiresAt)
	}
	if d := time.Since(k.ValidAfter); d < 0 || d > time.Hour {
		t.Errorf("valid_after %v", k.ValidAfter)
	}
	// diagnose reports the new key.
	out, _, _ := n.run(t, "diagnose")
	if d := parseKV(t, out); d.get("noise_key_version") != "2" || d.get("noise_public") != second.get("noise_public") {
		t.Errorf("diagnose %v", d.m)
	}

	// Only the newest max_versions are kept.
	mv := cfg.Rotation.Noise.MaxVersions
	for range mv + 1 {
		n.ok(t, "rotate-noise")
	}
	rows, _ = st.ListNoiseKeys(ctx)
	if len(rows) != mv || rows[0].Version != 2+mv+1 {
		t.Errorf("%d rows (max_versions %d), newest %d", len(rows), mv, rows[0].Version)
	}

	// With rotation off the key never lapses (100 years).
	n.edit(t, "[rotation.noise]\nenabled = true", "[rotation.noise]\nenabled = false")
	last := n.ok(t, "rotate-noise")
	rows, _ = st.ListNoiseKeys(ctx)
	if strconv.Itoa(rows[0].Version) != last.get("noise_key_version") {
		t.Fatalf("newest %d, printed %s", rows[0].Version, last.get("noise_key_version"))
	}
	if y := rows[0].ExpiresAt.Sub(rows[0].ValidAfter).Hours() / 24 / 365; y < 99 || !rows[0].RotatesAt.Equal(rows[0].ExpiresAt) {
		t.Errorf("rotation off: %v years, rotates %v expires %v", y, rows[0].RotatesAt, rows[0].ExpiresAt)
	}

	// Never the private key on stdout or stderr.
	var all bytes.Buffer
	code := Run([]string{"--config", n.cfg, "rotate-noise"}, strings.NewReader(""), &all, &all)
	rows, _ = st.ListNoiseKeys(ctx)
	if code != ExitOK || strings.Contains(all.String(), hex.EncodeToString(rows[0].Private[:])) {
		t.Errorf("exit %d, output %q", code, all.String())
	}
}

func TestRotateNoiseFailures(t *testing.T) {
	n := newNode(t, true)
	if out, errOut, code := n.run(t, "rotate-noise", "now"); code != ExitUsage || out != "" || errOut != "usage: commucat-cli rotate-noise\n" {
		t.Errorf("exit %d %q %q", code, out, errOut)
	}
	// A database path that cannot be a database.
	n.edit(t, `sqlite_path = "data/commucat.db"`, `sqlite_path = "data"`)
	if out, errOut, code := n.run(t, "rotate-noise"); code != ExitFail || out != "" || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("exit %d %q %q", code, out, errOut)
	}
}
