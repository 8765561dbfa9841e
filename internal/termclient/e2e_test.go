package termclient

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/servertest"
)

const waitTimeout = 20 * time.Second

// lineBuf collects output lines and lets tests wait for them.
type lineBuf struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced when a line arrives
}

func newLineBuf() *lineBuf { return &lineBuf{changed: make(chan struct{})} }

func (b *lineBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
		added = true
	}
	if added {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return len(p), nil
}

// find returns the index of the first line at or after from containing
// substr, or -1, and a channel that is closed on the next line.
func (b *lineBuf) find(from int, substr string) (int, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := from; i < len(b.lines); i++ {
		if strings.Contains(b.lines[i], substr) {
			return i, nil
		}
	}
	return -1, b.changed
}

func (b *lineBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n") + string(b.partial)
}

func (b *lineBuf) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// termProc is one terminal client running in the test.
type termProc struct {
	t      *testing.T
	name   string
	in     *io.PipeWriter
	out    *lineBuf
	done   chan error
	cancel context.CancelFunc
	cursor int
	all    *[]*termProc // every process of the test, for failure dumps
}

func startTerm(t *testing.T, all *[]*termProc, name string, o Options) *termProc {
	t.Helper()
	if o.ReconnectMin == 0 {
		o.ReconnectMin, o.ReconnectMax = 50*time.Millisecond, 500*time.Millisecond
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	p := &termProc{t: t, name: name, in: pw, out: newLineBuf(), done: make(chan error, 1), cancel: cancel, all: all}
	*all = append(*all, p)
	go func() {
		err := Run(ctx, o, pr, p.out)
		pr.CloseWithError(io.ErrClosedPipe)
		p.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		pw.Close()
		select {
		case <-p.done:
		case <-time.After(waitTimeout):
			t.Errorf("%s: Run did not return", name)
		}
	})
	return p
}

func (p *termProc) fatalf(format string, a ...any) {
	p.t.Helper()
	var dump strings.Builder
	for _, q := range *p.all {
		fmt.Fprintf(&dump, "\n--- output of %s ---\n%s\n", q.name, q.out.String())
	}
	p.t.Fatalf("%s: %s%s", p.name, fmt.Sprintf(format, a...), dump.String())
}

func (p *termProc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		p.fatalf("writing %q: %v", line, err)
	}
}

// expect waits for a line containing substr after the previous expected
// line, and returns it.
func (p *termProc) expect(substr string) string {
	p.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		i, changed := p.out.find(p.cursor, substr)
		if i >= 0 {
			p.cursor = i + 1
			p.out.mu.Lock()
			l := p.out.lines[i]
			p.out.mu.Unlock()
			return l
		}
		select {
		case <-changed:
		case err := <-p.done:
			p.done <- err
			if i, _ := p.out.find(p.cursor, substr); i >= 0 {
				continue
			}
			p.fatalf("client ended (%v) without printing %q", err, substr)
		case <-deadline.C:
			p.fatalf("no line containing %q within %v", substr, waitTimeout)
		}
	}
}

// wait waits for Run to return.
func (p *termProc) wait() error {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(waitTimeout):
		p.fatalf("Run did not return")
		return nil
	}
}

type variant struct {
	name         string
	alice, bob   func(*Options)
	aliceConnect string
	bobConnect   string
}

// TestChat is the newcomer's session: two devices, a channel, messages
// live and while offline, presence, typing, errors and the state files.
func TestChat(t *testing.T) {
	variants := []variant{
		{
			name:         "h2-v2",
			alice:        func(o *Options) { o.PQ = true },
			bob:          func(o *Options) {},
			aliceConnect: "* connected as dev-a (user alice, v2, pq)",
			bobConnect:   "* connected as dev-b (user bob, v2)",
		},
		{
			name:         "ws-v1-and-http1-IK",
			alice:        func(o *Options) { o.Transport, o.Versions = client.WebSocket, []int{1} },
			bob:          func(o *Options) { o.Transport, o.Pattern, o.PQ = client.HTTP1, client.PatternIK, true },
			aliceConnect: "* connected as dev-a (user alice, v1)",
			bobConnect:   "* connected as dev-b (user bob, v2, pq)",
		},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) { testChat(t, v) })
	}
}

func testChat(t *testing.T, v variant) {
	s := servertest.Start(t, nil)
	ca := filepath.Join(s.Dir, "server.crt") // written by servertest
	dir := t.TempDir()
	var all []*termProc

	bobState := filepath.Join(dir, "bob", "state.json")
	bobOpts := Options{StatePath: bobState, Server: s.URL, CAFile: ca, Handle: "bob", Device: "dev-b"}
	v.bob(&bobOpts)
	bob := startTerm(t, &all, "bob", bobOpts)
	bob.expect("* new device dev-b for user bob")
	bob.expect(v.bobConnect)

	aliceOpts := Options{StatePath: filepath.Join(dir, "alice.json"), Server: s.URL, CAFile: ca, Handle: "alice", Device: "dev-a"}
	v.alice(&aliceOpts)
	alice := startTerm(t, &all, "alice", aliceOpts)
	alice.expect(v.aliceConnect)

	// Alice creates channel 7 with Bob's device and says hello.
	alice.send("/join 7 dev-b")
	alice.expect("* joined channel 7 with dev-b")
	alice.send("hello")
	bob.expect("[ch 7] dev-a: hello")
	bob.expect("* current channel: 7")
	bob.send("hi alice")
	alice.expect("[ch 7] dev-b: hi alice")

	// Bob leaves; Alice sees him go offline and writes to him anyway.
	bob.send("/quit")
	if err := bob.wait(); err != nil {
		t.Fatalf("bob: Run: %v", err)
	}
	alice.expect("* dev-b is offline")
	alice.send("while you were away")
	alice.send("/leave 99") // answered only after the message was stored
	alice.expect("! error: Not Found")

	// Bob comes back with the same state file (no flags needed) and gets
	// what arrived meanwhile; Alice sees him online.
	bob2 := startTerm(t, &all, "bob2", Options{StatePath: bobState, Transport: bobOpts.Transport, Pattern: bobOpts.Pattern, PQ: bobOpts.PQ})
	bob2.expect("* channels: 7 (current 7)")
	bob2.expect(v.bobConnect)
	bob2.expect("* dev-a is online") // presence snapshot, before the inbox
	bob2.expect("[ch 7] dev-a: while you were away")
	alice.expect("* dev-b is online")

	// Presence, /who and typing.
	bob2.send("/presence away")
	bob2.expect("* presence set to away")
	alice.expect("* dev-b is away")
	alice.send("/who")
	alice.expect("dev-b (bob): away")
	bob2.send("/typing")
	alice.expect("[ch 7] dev-b is typing")
	bob2.send("back again")
	alice.expect("[ch 7] dev-b: back again")

	// Errors: a channel Bob is not a member of, a bad command.
	alice.send("/join 9")
	alice.expect("* joined channel 9")
	alice.send("/ch 7") // /join 9 selected 9
	alice.expect("* current channel: 7")
	bob2.send("/msg 9 let me in")
	bob2.expect("! error: Forbidden (not a member of the channel); message to ch 9 not sent")
	bob2.send("/frobnicate")
	bob2.expect("! unknown command /frobnicate")
	bob2.expect("commands:")
	bob2.expect("/quit")
	bob2.send("/join")
	bob2.expect("! usage: /join <channel> [device ...]")
	bob2.send("/msg 0 x")
	bob2.expect("! invalid channel")
	alice.send("//slash")
	bob2.expect("[ch 7] dev-a: /slash")

	bob2.send("/quit")
	alice.send("/quit")
	if err := bob2.wait(); err != nil {
		t.Fatalf("bob2: Run: %v", err)
	}
	if err := alice.wait(); err != nil {
		t.Fatalf("alice: Run: %v", err)
	}

	// Every message was shown exactly once.
	if n := bob.out.count("dev-a: hello") + bob2.out.count("dev-a: hello"); n != 1 {
		t.Errorf("bob saw hello %d times", n)
	}
	if n := bob2.out.count("while you were away"); n != 1 {
		t.Errorf("bob saw the offline message %d times", n)
	}

	// The state files: 0600, the identity and channels, no server secrets.
	secrets := []string{
		hex.EncodeToString(s.Config.Crypto.NoisePrivate[:]),
		hex.EncodeToString(s.Config.Crypto.FederationSeed),
	}
	for _, f := range []struct {
		path, device string
		procs        []*termProc
	}{{bobState, "dev-b", []*termProc{bob, bob2}}, {aliceOpts.StatePath, "dev-a", []*termProc{alice}}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f.path, fi.Mode().Perm())
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		var st State
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		if st.Identity == nil || st.Identity.DeviceID != f.device || st.Identity.CurrentCertificate() == nil {
			t.Errorf("%s: identity %+v", f.path, st.Identity)
		}
		if st.Server != s.URL || st.CA != ca || st.UserID == "" {
			t.Errorf("%s: server %q ca %q user %q", f.path, st.Server, st.CA, st.UserID)
		}
		if !containsU32(st.Channels, 7) {
			t.Errorf("%s: channels %v", f.path, st.Channels)
		}
		var raw map[string]any
		json.Unmarshal(b, &raw)
		if _, ok := raw["session"]; ok || bytes.Contains(b, []byte(`"session"`)) {
			t.Errorf("%s holds a session id", f.path)
		}
		for _, sec := range secrets {
			if bytes.Contains(bytes.ToLower(b), []byte(sec)) {
				t.Errorf("%s holds a server secret", f.path)
			}
		}
		// The private keys never reach the output.
		seed := hex.EncodeToString(st.Identity.DeviceSeed[:])
		static := hex.EncodeToString(st.Identity.StaticKey[:])
		for _, p := range f.procs {
			if out := p.out.String(); strings.Contains(out, seed) || strings.Contains(out, static) {
				t.Errorf("%s printed a private key", p.name)
			}
		}
		// No temporary files are left next to the state file.
		ents, _ := os.ReadDir(filepath.Dir(f.path))
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("temporary file %s left behind", e.Name())
			}
		}
	}
	if st := readState(t, aliceOpts.StatePath); !containsU32(st.Channels, 9) || st.Current != 7 {
		t.Errorf("alice: channels %v current %d", st.Channels, st.Current)
	}
}

func readState(t *testing.T, path string) State {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func containsU32(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestReconnectAndReplaced: text typed while the server is down is sent
// after the reconnect; a second client with the same state file takes the
// device over and the first one gives up instead of fighting back.
func TestReconnectAndReplaced(t *testing.T) {
	for _, tr := range []client.Transport{client.HTTP2, client.HTTP1, client.WebSocket} {
		t.Run(tr.String(), func(t *testing.T) { testReconnectAndReplaced(t, tr) })
	}
}

func testReconnectAndReplaced(t *testing.T, tr client.Transport) {
	s := servertest.Start(t, nil)
	ca := filepath.Join(s.Dir, "server.crt")
	dir := t.TempDir()
	var all []*termProc
	bob := startTerm(t, &all, "bob", Options{StatePath: filepath.Join(dir, "b.json"), Server: s.URL, CAFile: ca, Handle: "bob", Device: "dev-b"})
	bob.expect("* connected as dev-b")
	alice := startTerm(t, &all, "alice", Options{StatePath: filepath.Join(dir, "a.json"), Server: s.URL, CAFile: ca, Handle: "alice", Device: "dev-a", Transport: tr})
	alice.expect("* connected as dev-a")
	alice.send("/join 3 dev-b")
	alice.expect("* joined channel 3")

	// The server restarts on the same address and storage.
	addr := strings.TrimPrefix(s.URL, "https://")
	s.Stop(t)
	alice.expect("* disconnected, retrying in")
	bob.expect("* disconnected, retrying in")
	alice.send("typed while the server was down")
	cfg := *s.Config
	cfg.Server.Bind = addr
	servertest.StartWith(t, &cfg, s.CertPool, s.Dir)
	alice.expect("* connected as dev-a")
	bob.expect("* connected as dev-b")
	bob.expect("[ch 3] dev-a: typed while the server was down")

	// A second client with Alice's state file takes over her device: the
	// first one is Replaced and gives up, with an explanation.
	alice2 := startTerm(t, &all, "alice2", Options{StatePath: filepath.Join(dir, "a.json"), Transport: tr})
	alice2.expect("* connected as dev-a")
	alice.expect("! error: Replaced")
	alice.expect("! giving up: Replaced")
	alice.expect("! hint:")
	if err := alice.wait(); !client.IsProblem(err, "Replaced") {
		t.Fatalf("alice: Run returned %v, want Replaced", err)
	}
	alice2.send("from the second terminal")
	bob.expect("[ch 3] dev-a: from the second terminal")
	if n := alice2.out.count("* connected as dev-a"); n != 1 {
		t.Errorf("alice2 connected %d times", n)
	}
}

// TestMain exercises the flag handling of Main.
func TestMainFlags(t *testing.T) {
	dir := t.TempDir()
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), args, strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, _, e := run("", "--state", filepath.Join(dir, "x.json"), "--handle", "a"); code != 2 || !strings.Contains(e, "--server") {
		t.Errorf("no server: %d %q", code, e)
	}
	if code, _, e := run("", "--state", filepath.Join(dir, "x.json"), "--server", "https://127.0.0.1:1"); code != 2 || !strings.Contains(e, "--handle") {
		t.Errorf("no handle: %d %q", code, e)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.json")); err == nil {
		t.Error("a failed first run left a state file")
	}
	if code, _, e := run("", "--state", filepath.Join(dir, "x.json"), "--handle", "a", "--server", "http://example.com"); code != 1 || !strings.Contains(e, "https://host:port") {
		t.Errorf("http server URL: %d %q", code, e)
	}
	if code, _, _ := run("", "--version", "3"); code != 2 {
		t.Errorf("--version 3: %d", code)
	}
	if code, _, _ := run("", "--transport", "carrier-pigeon"); code != 2 {
		t.Errorf("bad transport: %d", code)
	}
	if code, _, _ := run("", "--ca", "x.pem", "--insecure"); code != 2 {
		t.Errorf("--ca with --insecure: %d", code)
	}
	if code, _, e := run("", "--state", filepath.Join(dir, "x.json"), "--handle", "a", "--server", "https://127.0.0.1:1", "--fallback", "ftp://x"); code != 1 || !strings.Contains(e, "--fallback must look like") {
		t.Errorf("bad --fallback URL: %d %q", code, e)
	}
	if code, _, _ := run("", "--fallback", "https://a:1", "--no-fallback"); code != 2 {
		t.Errorf("--fallback with --no-fallback: %d", code)
	}
	if code, _, _ := run("", "extra"); code != 2 {
		t.Errorf("positional argument: %d", code)
	}
	if code, _, e := run("", "-h"); code != 0 || !strings.Contains(e, "--server") && !strings.Contains(e, "-server") {
		t.Errorf("-h: %d %q", code, e)
	}

	// The default state path follows XDG_CONFIG_HOME and --profile.
	t.Setenv("XDG_CONFIG_HOME", dir)
	p, err := DefaultStatePath("work")
	if err != nil || p != filepath.Join(dir, "commucat-client", "work.json") {
		t.Errorf("DefaultStatePath = %q, %v", p, err)
	}
	if _, err := DefaultStatePath("../x"); err == nil {
		t.Error("profile ../x accepted")
	}
}

// TestInsecure: --insecure connects to a server whose certificate is not
// trusted, and says loudly that it does not verify it.
func TestInsecure(t *testing.T) {
	s := servertest.Start(t, nil)
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	pr, pw := io.Pipe()
	out := newLineBuf()
	done := make(chan int, 1)
	go func() {
		done <- Main(context.Background(), []string{"--profile", "p1", "--server", s.URL, "--handle", "carol", "--insecure"}, pr, out, io.Discard)
	}()
	var all []*termProc
	p := &termProc{t: t, name: "carol", out: out, done: make(chan error, 1), all: &all}
	all = append(all, p)
	p.expect("WARNING: --insecure")
	p.expect("* connected as term-")
	pw.Close() // end of input: quit
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Main did not return")
	}
	st := readState(t, filepath.Join(dir, "commucat-client", "p1.json"))
	if !strings.HasPrefix(st.Identity.DeviceID, "term-") || len(st.Identity.DeviceID) != 13 || st.CA != "" {
		t.Errorf("state %+v", st)
	}
	// Without --insecure and without --ca the certificate is not trusted:
	// the client says so and how to fix it.
	pr2, pw2 := io.Pipe()
	out2 := newLineBuf()
	done2 := make(chan int, 1)
	go func() { done2 <- Main(context.Background(), []string{"--profile", "p1"}, pr2, out2, io.Discard) }()
	p2 := &termProc{t: t, name: "carol2", out: out2, done: make(chan error, 1), all: &all}
	all = append(all, p2)
	p2.expect("TLS certificate is not trusted")
	p2.expect("hint: pass --ca")
	pw2.Close()
	select {
	case <-done2:
	case <-time.After(waitTimeout):
		t.Fatal("Main did not return")
	}
}

// --fallback: with the saved server unreachable, the client connects to
// another node of the deployment; the list is saved, and --no-fallback
// forgets it.
func TestFallbackNode(t *testing.T) {
	s := servertest.Start(t, nil)
	ca := filepath.Join(s.Dir, "server.crt")
	state := filepath.Join(t.TempDir(), "f.json")
	var all []*termProc
	dead := "https://127.0.0.1:1" // nothing listens on port 1
	p := startTerm(t, &all, "f", Options{StatePath: state, Server: dead, Fallbacks: []string{s.URL}, CAFile: ca,
		Handle: "fallback", Device: "dev-f", ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond})
	p.expect("* other nodes, tried when it is unreachable: " + s.URL)
	p.expect("* connected as dev-f")
	p.send("/quit")
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, state); st.Server != dead || !slices.Equal(st.Fallbacks, []string{s.URL}) {
		t.Fatalf("saved server %q, fallbacks %v", st.Server, st.Fallbacks)
	}
	q := startTerm(t, &all, "f2", Options{StatePath: state, NoFallbacks: true, Server: s.URL})
	q.expect("* connected as dev-f")
	q.send("/quit")
	if err := q.wait(); err != nil {
		t.Fatal(err)
	}
	if st := readState(t, state); len(st.Fallbacks) != 0 {
		t.Fatalf("fallbacks %v kept after --no-fallback", st.Fallbacks)
	}
}
