package termclient

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/commucat/commucat/internal/servertest"
)

// TestBurstRelay sends many messages back to back and expects each one
// exactly once. It guards against a regression of the relay payload
// aliasing bug (a MSG relayed live carried the payload of the sender's
// next frame, so one message showed twice and another was lost).
func TestBurstRelay(t *testing.T) {
	s := servertest.Start(t, nil)
	ca := filepath.Join(s.Dir, "server.crt")
	dir := t.TempDir()
	var all []*termProc
	bob := startTerm(t, &all, "bob", Options{StatePath: filepath.Join(dir, "b.json"), Server: s.URL, CAFile: ca, Handle: "bob", Device: "dev-b"})
	bob.expect("* connected as dev-b")
	alice := startTerm(t, &all, "alice", Options{StatePath: filepath.Join(dir, "a.json"), Server: s.URL, CAFile: ca, Handle: "alice", Device: "dev-a"})
	alice.expect("* connected as dev-a")
	alice.send("/join 3 dev-b")
	alice.expect("* joined channel 3")
	const n = 200
	for i := range n {
		alice.send(fmt.Sprintf("message number %04d", i))
	}
	for i := range n {
		bob.expect(fmt.Sprintf("[ch 3] dev-a: message number %04d", i))
	}
}
