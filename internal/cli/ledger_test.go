package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The two-record vector of §11.1, copied from the spec.
const ledgerVector = `{"digest":"0b02743d4e830925d305b5f156a26a1f0a3772715c8cd9fa59378367fb2c1f8d","hash":"fc1f3c3e4b14ac0a8043a173c85b0541aacb634289c2bbabf1482e2e2b95b122","metadata":{"device":"device-1","session":"session-1","user":"user-1"},"prev":"0000000000000000000000000000000000000000000000000000000000000000","recorded_at":"2025-01-01T00:00:00+00:00","seq":1}
{"digest":"933b55e385320c2c67492a48f0a487fc1c84eef7aee6120fccd6e530fc497250","hash":"474cd14b095f7acbac6c39bf961cc6fa0ace36851e0faf9efec1fc0aabf10f23","metadata":{"call_id":"call-xyz","data":{"channel_id":7},"event":"offer","scope":"call"},"prev":"fc1f3c3e4b14ac0a8043a173c85b0541aacb634289c2bbabf1482e2e2b95b122","recorded_at":"2025-01-01T00:00:05+00:00","seq":2}
`

func writeLedger(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ledger.jsonl")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLedgerVerifyVector(t *testing.T) {
	out, errOut, code := run(t, "", "ledger", "verify", writeLedger(t, ledgerVector))
	want := "ledger_records=2\nledger_head=474cd14b095f7acbac6c39bf961cc6fa0ace36851e0faf9efec1fc0aabf10f23\nledger_status=ok\n"
	if code != ExitOK || errOut != "" || out != want {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// An empty ledger is valid.
	out, _, code = run(t, "", "ledger", "verify", writeLedger(t, ""))
	if code != ExitOK || out != "ledger_records=0\nledger_head=none\nledger_status=ok\n" {
		t.Errorf("empty: exit %d, %q", code, out)
	}
}

func TestLedgerVerifyBroken(t *testing.T) {
	lines := strings.SplitAfter(ledgerVector, "\n")
	cases := []struct {
		name, content string
		records       string
		head          string
		line, reason  string
	}{
		{"edited metadata", strings.Replace(ledgerVector, "session-1", "session-2", 1), "0", "none", "1", "hash does not match the record"},
		{"edited second record", strings.Replace(ledgerVector, `"channel_id":7`, `"channel_id":8`, 1), "1",
			"fc1f3c3e4b14ac0a8043a173c85b0541aacb634289c2bbabf1482e2e2b95b122", "2", "hash does not match the record"},
		{"missing first record", lines[1], "0", "none", "1", "seq 2, expected 1"},
		{"duplicated record", lines[0] + lines[0], "1", "fc1f3c3e4b14ac0a8043a173c85b0541aacb634289c2bbabf1482e2e2b95b122", "2", "seq 1, expected 2"},
		{"not JSON", lines[0] + "garbage\n", "1", "fc1f3c3e4b14ac0a8043a173c85b0541aacb634289c2bbabf1482e2e2b95b122", "2", "invalid JSON"},
		{"incomplete last line", strings.TrimSuffix(ledgerVector, "\n"), "1", "fc1f3c3e4b14ac0a8043a173c85b0541aacb634289c2bbabf1482e2e2b95b122", "2", "incomplete last line (no trailing newline)"},
	}
	for _, c := range cases {
		out, errOut, code := run(t, "", "ledger", "verify", writeLedger(t, c.content))
		r := parseKV(t, out)
		want := []string{"ledger_records", "ledger_head", "ledger_status", "ledger_error_line", "ledger_error"}
		if code != ExitLedger || errOut != "" || !reflect.DeepEqual(r.keys, want) {
			t.Errorf("%s: exit %d, stderr %q, keys %v", c.name, code, errOut, r.keys)
			continue
		}
		if r.get("ledger_status") != "broken" || r.get("ledger_records") != c.records || r.get("ledger_head") != c.head ||
			r.get("ledger_error_line") != c.line || r.get("ledger_error") != c.reason {
			t.Errorf("%s: %v", c.name, r.m)
		}
	}
}

func TestLedgerVerifyDefaultTarget(t *testing.T) {
	n := newNode(t, false)
	// ledger.target is empty by default.
	out, errOut, code := n.run(t, "ledger", "verify")
	if code != ExitFail || out != "" || errOut != "error: ledger.target is not set; give the ledger file as PATH\n" {
		t.Errorf("no target: exit %d, %q, %q", code, out, errOut)
	}
	p := n.setLedgerFile(t)
	// The target does not exist yet.
	if out, errOut, code := n.run(t, "ledger", "verify"); code != ExitFail || out != "" || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("missing file: exit %d, %q, %q", code, out, errOut)
	}
	if err := os.WriteFile(p, []byte(ledgerVector), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := n.ok(t, "ledger", "verify"); r.get("ledger_records") != "2" || r.get("ledger_status") != "ok" {
		t.Errorf("%v", r.m)
	}
	// An explicit PATH wins and needs no configuration.
	_, _, code = run(t, "", "--config", filepath.Join(n.dir, "nope.toml"), "ledger", "verify", p)
	if code != ExitOK {
		t.Errorf("explicit path with a missing configuration: exit %d", code)
	}
	// A configuration that does not load, without PATH.
	if _, errOut, code := run(t, "", "--config", filepath.Join(n.dir, "nope.toml"), "ledger", "verify"); code != ExitFail || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("missing configuration: exit %d %q", code, errOut)
	}
	// A directory is not a ledger.
	if _, errOut, code := run(t, "", "ledger", "verify", n.dir); code != ExitFail || !strings.HasPrefix(errOut, "error: ") {
		t.Errorf("directory: exit %d %q", code, errOut)
	}
}

func TestLedgerUsage(t *testing.T) {
	for _, args := range [][]string{{"ledger"}, {"ledger", "check"}, {"ledger", "verify", "a", "b"}, {"ledger", "verify", "--strict"}} {
		out, errOut, code := run(t, "", args...)
		if code != ExitUsage || out != "" || errOut != ledgerUsage+"\n" {
			t.Errorf("%v: exit %d, %q, %q", args, code, out, errOut)
		}
	}
}

// The usage text lists every command of §12.2.
func TestUsageListsAllCommands(t *testing.T) {
	out, errOut, code := run(t, "")
	if code != ExitUsage || out != "" || !strings.HasPrefix(errOut, "usage: commucat-cli <command>\n") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	for _, c := range []string{"init ", "migrate", "register-user ", "rotate-keys ", "rotate-noise", "diagnose", "call-simulate ", "frame decode", "frame encode", "ledger verify"} {
		if !strings.Contains(errOut, "\n  "+c) && !strings.Contains(errOut, "| "+c) {
			t.Errorf("usage lacks %q:\n%s", c, errOut)
		}
	}
	if _, errOut, code := run(t, "", "bogus"); code != ExitUsage || errOut != "unknown command: bogus\n" {
		t.Errorf("unknown command: exit %d %q", code, errOut)
	}
}
