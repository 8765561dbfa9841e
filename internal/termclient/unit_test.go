package termclient

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

func newTestTerm(t *testing.T) (*term, *bytes.Buffer) {
	t.Helper()
	id, err := client.NewIdentity("dev-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sf := &stateFile{path: filepath.Join(t.TempDir(), "s.json"), st: State{Server: "https://x", Identity: id}}
	return &term{
		out:   &printer{w: &buf},
		state: sf,
		self:  "dev-a",
		who:   map[string]presenceInfo{},
		seen:  newSeenSet(8, nil),
	}, &buf
}

func msg(ch uint32, payload []byte) *client.Message {
	return &client.Message{Type: ccp.Msg, Channel: ch, Payload: payload, Durable: true}
}

func TestMessageRendering(t *testing.T) {
	tm, buf := newTestTerm(t)
	env, _ := newEnvelope("dev-b", "hi\x1b[31m there\nsecond line", time.Now())
	tm.handleEvent(msg(5, env))
	tm.handleEvent(msg(5, env)) // redelivered duplicate: dropped
	tm.handleEvent(msg(5, []byte("plain text from another client")))
	tm.handleEvent(msg(5, []byte{0xff, 0x00, 0x01}))
	tm.handleEvent(msg(5, []byte(`{"text":"no id","from":"dev-c"}`)))
	tm.handleEvent(msg(5, []byte(`{"text":"no id","from":"dev-c"}`))) // no id: cannot be deduplicated
	old, _ := json.Marshal(envelope{ID: "x1", From: "dev-b", Text: "old news", TS: time.Now().Add(-time.Hour).Unix()})
	tm.handleEvent(msg(6, old))
	tm.handleEvent(&client.Message{Type: ccp.Typing, Channel: 5, Sender: "dev-b", Payload: []byte(`{"sender":"dev-b"}`)})
	tm.handleEvent(&client.Message{Type: ccp.GroupEvent, Channel: 5, Sender: "dev-b", Payload: []byte(`{}`)})
	tm.handleEvent(&client.Presence{Entity: "dev-b", State: "online"})
	tm.handleEvent(&client.Presence{Entity: "dev-b", State: "online"}) // unchanged: quiet
	tm.handleEvent(&client.Presence{Entity: "dev-a", State: "online"}) // ourselves: quiet
	tm.handleEvent(&client.ServerError{Problem: ccp.Problem{Title: "Forbidden", Detail: "not a member of the channel"}})

	want := []string{
		`[ch 5] dev-b: hi\x1b[31m there`,
		`              second line`,
		`* current channel: 5 (plain text goes there; /ch to change)`,
		`[ch 5] ?: plain text from another client`,
		`[ch 5] ?: (binary, 3 bytes) ff0001`,
		`[ch 5] dev-c: no id`,
		`[ch 5] dev-c: no id`,
		`[ch 6] dev-b: old news  (sent `,
		`[ch 5] dev-b is typing...`,
		`[ch 5] (GROUP_EVENT from dev-b, not supported by this client)`,
		`* dev-b is online`,
		`! error: Forbidden (not a member of the channel)`,
	}
	got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("got %d lines:\n%s", len(got), buf.String())
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d: %q, want prefix %q", i, got[i], want[i])
		}
	}
	if tm.current != 5 || len(tm.channels) != 2 {
		t.Errorf("current %d channels %v", tm.current, tm.channels)
	}
	// The seen ids are saved, so a redelivery after a restart is dropped.
	b, err := os.ReadFile(tm.state.path)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Seen) != 2 {
		t.Fatalf("saved seen ids %v", st.Seen)
	}
	if s := newSeenSet(8, st.Seen); s.add(st.Seen[0]) {
		t.Error("a saved id is not recognized")
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain":             "plain",
		"\x1b]0;pwned\x07":  `\x1b]0;pwned\x07`,
		"a\rb":              `a\x0db`,
		"tab\tok":           "tab\tok",
		"\u202eevil":        `\u202eevil`,
		"caf\xc3\xa9 \xff":  `café \xff`,
		"\u0085next":        `\u0085next`,
		"multi\nline":       "multi\n  line",
		"del\x7f":           `del\x7f`,
		"emoji \U0001F431!": "emoji \U0001F431!",
	} {
		if got := sanitize(in, true, "  "); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sanitize("a\nb", false, ""); got != `a\x0ab` {
		t.Errorf("single line: %q", got)
	}
}

func TestSeenSetBounded(t *testing.T) {
	s := newSeenSet(3, nil)
	for _, k := range []string{"a", "b", "c", "d"} {
		if !s.add(k) {
			t.Fatalf("%s not new", k)
		}
	}
	if s.add("d") || s.add("b") {
		t.Error("recent key not recognized")
	}
	if !s.add("a") {
		t.Error("evicted key still known")
	}
	if len(s.m) != 3 || len(s.order) != 3 {
		t.Errorf("size %d/%d", len(s.m), len(s.order))
	}
	if got := s.last(2); strings.Join(got, "") != "da" {
		t.Errorf("last = %v", got)
	}
}

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	in := "one\r\ntwo\n" + long + "\nthree\nlast-without-newline"
	var got []string
	tooLong := 0
	err := readLines(strings.NewReader(in), func(l string) bool { got = append(got, l); return true }, func() { tooLong++ })
	if err == nil || err.Error() != "EOF" {
		t.Fatalf("err %v", err)
	}
	if strings.Join(got, "|") != "one|two|three|last-without-newline" || tooLong != 1 {
		t.Errorf("lines %q, too long %d", got, tooLong)
	}
}

func TestStateFileAtomicAndPrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "p.json")
	id, _ := client.NewIdentity("dev-x", nil)
	sf := &stateFile{path: path, st: State{Server: "https://h", Identity: id, Channels: []uint32{1}}}
	if err := sf.save(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Dir(path)); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", fi.Mode().Perm())
	}
	// A file someone made world-readable is restricted on load.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	got, exists, fixed, err := loadState(path)
	if err != nil || !exists || !fixed {
		t.Fatalf("load: %v %v %v", exists, fixed, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after load %v", fi.Mode().Perm())
	}
	if got.st.Identity.DeviceID != "dev-x" || got.st.Identity.DeviceSeed != id.DeviceSeed || got.st.Server != "https://h" {
		t.Errorf("loaded %+v", got.st)
	}
}

func TestOpenStateRules(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	out := &printer{w: &buf}
	path := filepath.Join(dir, "s.json")
	if _, err := openState(Options{StatePath: path, Server: "https://h:1", Handle: "al", Device: "d1"}, out); err != nil {
		t.Fatal(err)
	}
	// Never admitted: the device id and the handle may still change.
	sf, err := openState(Options{StatePath: path, Handle: "alice", Device: "d2"}, out)
	if err != nil {
		t.Fatal(err)
	}
	if st := sf.snapshot(); st.Identity.DeviceID != "d2" || st.Handle != "alice" || st.Server != "https://h:1" {
		t.Fatalf("state %+v", st)
	}
	// Once admitted (a certificate is stored) they are fixed.
	sf.update(func(st *State) { st.Identity.Certificate = &client.Certificate{DeviceID: "d2"} })
	if err := sf.save(); err != nil {
		t.Fatal(err)
	}
	if _, err := openState(Options{StatePath: path, Device: "d3"}, out); err == nil || !strings.Contains(err.Error(), "holds device") {
		t.Errorf("device change accepted: %v", err)
	}
	if _, err := openState(Options{StatePath: path, Handle: "mallory"}, out); err == nil || !strings.Contains(err.Error(), "belongs to handle") {
		t.Errorf("handle change accepted: %v", err)
	}
	if _, err := openState(Options{StatePath: path, Device: "d2", Handle: "alice"}, out); err != nil {
		t.Errorf("same device and handle: %v", err)
	}
}

// TestOpenStateImportsIdentity: --identity puts the file's device into a
// new state (no handle needed: the device is known to the server), is a
// no-op for the same device, and refuses a state holding another admitted
// device; a malformed file is an error.
func TestOpenStateImportsIdentity(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	out := &printer{w: &buf}
	id, err := client.NewIdentity("phone", nil)
	if err != nil {
		t.Fatal(err)
	}
	id.Certificate = &client.Certificate{DeviceID: "phone"}
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	idPath := filepath.Join(dir, "phone.json")
	if err := os.WriteFile(idPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.json")
	sf, err := openState(Options{StatePath: path, Server: "https://h:1", IdentityPath: idPath}, out)
	if err != nil {
		t.Fatal(err)
	}
	if st := sf.snapshot(); st.Identity.DeviceID != "phone" || st.Identity.DeviceSeed != id.DeviceSeed || st.Identity.StaticKey != id.StaticKey {
		t.Fatalf("imported identity %+v", st.Identity)
	}
	if _, err := openState(Options{StatePath: path, IdentityPath: idPath}, out); err != nil {
		t.Errorf("importing the same device again: %v", err)
	}
	other, _ := client.NewIdentity("tablet", nil)
	ob, _ := json.Marshal(other)
	otherPath := filepath.Join(dir, "tablet.json")
	if err := os.WriteFile(otherPath, ob, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openState(Options{StatePath: path, IdentityPath: otherPath}, out); err == nil || !strings.Contains(err.Error(), "holds device") {
		t.Errorf("another device imported over an admitted one: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"device_id":"x","device_seed":"zz"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openState(Options{StatePath: filepath.Join(dir, "s2.json"), Server: "https://h:1", IdentityPath: bad}, out); err == nil {
		t.Error("a malformed identity file was accepted")
	}
}
