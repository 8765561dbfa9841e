package cli

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/sqlite"
)

// testNode is a configuration written by init in a temporary directory.
type testNode struct {
	dir, cfg string
	bind     string            // server.bind as written by init
	init     map[string]string // the output of init
}

// closedPort returns a loopback port nothing listens on (it was free a
// moment ago), so that the running-server checks of diagnose fail fast.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

// newNode runs init (bind on a closed loopback port) and, when migrate is
// set, migrate.
func newNode(t *testing.T, migrate bool) *testNode {
	t.Helper()
	dir := t.TempDir()
	bind := "127.0.0.1:" + closedPort(t)
	_, vals := runInitOK(t, "--dir", dir, "--bind", bind)
	n := &testNode{dir: dir, cfg: vals["config"], bind: bind, init: vals}
	if migrate {
		n.ok(t, "migrate")
	}
	return n
}

// run runs a command with --config.
func (n *testNode) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return run(t, "", append([]string{"--config", n.cfg}, args...)...)
}

// ok runs a command that must succeed without stderr output and returns
// its key=value lines.
func (n *testNode) ok(t *testing.T, args ...string) *kv {
	t.Helper()
	out, errOut, code := n.run(t, args...)
	if code != ExitOK || errOut != "" {
		t.Fatalf("%v: exit %d, stderr %q, stdout %q", args, code, errOut, out)
	}
	return parseKV(t, out)
}

// edit replaces old by new in the configuration file (exactly once).
func (n *testNode) edit(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(b), old); c != 1 {
		t.Fatalf("%q occurs %d times in the configuration", old, c)
	}
	if err := os.WriteFile(n.cfg, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// setLedgerFile switches the node to a file ledger and returns its path.
func (n *testNode) setLedgerFile(t *testing.T) string {
	t.Helper()
	n.edit(t, "mode = \"null\"   # null, debug or file\ntarget = \"\"", "mode = \"file\"\ntarget = \"data/ledger.jsonl\"")
	return filepath.Join(n.dir, "data", "ledger.jsonl")
}

func (n *testNode) config(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load(n.cfg, true, initNoEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// store opens the node's SQLite database directly.
func (n *testNode) store(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), n.config(t).Storage.SQLitePath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

var _ store.Store = (*sqlite.Store)(nil)

// kv is parsed key=value output.
type kv struct {
	keys []string
	m    map[string]string
}

func parseKV(t *testing.T, out string) *kv {
	t.Helper()
	r := &kv{m: map[string]string{}}
	if out == "" {
		return r
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("bad output line %q", line)
		}
		if _, dup := r.m[k]; dup {
			t.Fatalf("key %s printed twice", k)
		}
		r.keys = append(r.keys, k)
		r.m[k] = v
	}
	return r
}

func (r *kv) get(k string) string { return r.m[k] }

func (r *kv) has(k string) bool {
	_, ok := r.m[k]
	return ok
}

func (r *kv) int(t *testing.T, k string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(r.m[k], 10, 64)
	if err != nil {
		t.Fatalf("%s=%q is not an integer", k, r.m[k])
	}
	return n
}
