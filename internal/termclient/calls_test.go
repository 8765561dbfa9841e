package termclient

import (
	"path/filepath"
	"testing"

	"github.com/commucat/commucat/client"
	"github.com/commucat/commucat/internal/media/opus"
	"github.com/commucat/commucat/internal/servertest"
)

// TestCall: Alice calls Bob on a channel, Bob answers, Alice sends a
// one-second test tone (Opus encoded here when this build has libopus,
// else raw PCM that the server transcodes), hangs up, and Bob's client
// reports the 50 voice frames it received.
func TestCall(t *testing.T) {
	s := servertest.Start(t, nil) // media.transcode defaults to true
	ca := filepath.Join(s.Dir, "server.crt")
	dir := t.TempDir()
	var all []*termProc
	bob := startTerm(t, &all, "bob", Options{StatePath: filepath.Join(dir, "b.json"), Server: s.URL, CAFile: ca, Handle: "bob", Device: "dev-b"})
	bob.expect("* connected as dev-b")
	alice := startTerm(t, &all, "alice", Options{StatePath: filepath.Join(dir, "a.json"), Server: s.URL, CAFile: ca, Handle: "alice", Device: "dev-a", Transport: client.HTTP1})
	alice.expect("* connected as dev-a")

	// Errors before any call.
	alice.send("/answer")
	alice.expect("! no incoming call to answer")
	alice.send("/tone")
	alice.expect("! no active call")
	alice.send("/hangup")
	alice.expect("! no call")
	alice.send("/call")
	alice.expect("! usage: /call [channel] (no current channel)")

	alice.send("/join 5 dev-b")
	alice.expect("* joined channel 5 with dev-b")
	alice.send("/call")
	alice.expect("* calling on ch 5")
	bob.expect("* incoming call from dev-a on ch 5 (/answer to accept")
	alice.send("/call 5")
	alice.expect("! already in a call on ch 5")
	bob.send("/answer")
	bob.expect("* call answered on ch 5")
	alice.expect("* call accepted by dev-b on ch 5")

	alice.send("/tone 0")
	alice.expect("! usage: /tone [seconds]")
	alice.send("/tone 1")
	if !opus.Available() {
		// This build has no libopus: neither the client can encode nor
		// the server transcode raw PCM (it does not accept
		// media.raw-audio, §7.9), so there is no tone to send.
		alice.expect("! tone stopped after 0 frames: this client has no Opus encoder")
		alice.send("/hangup")
		bob.expect("* call ended by dev-a (hangup): received 0 voice frames")
		return
	}
	alice.expect("* sending a 440 Hz tone for 1 s")
	alice.expect("* tone done: sent 50 voice frames")
	alice.send("/media")
	alice.expect("* call on ch 5: received 0 voice frames, 0 video frames; sent 50 voice frames")
	alice.send("/hangup")
	alice.expect("* call on ch 5 ended: received 0 voice frames, 0 video frames; sent 50 voice frames")
	// The frames were relayed before the CALL_END (one connection, in
	// order), so Bob has counted all of them.
	bob.expect("* call ended by dev-a (hangup): received 50 voice frames, 0 video frames; sent 0 voice frames")

	// A declined call.
	bob.send("/call 5")
	bob.expect("* calling on ch 5")
	alice.expect("* incoming call from dev-b on ch 5")
	alice.send("/hangup")
	alice.expect("* call on ch 5 ended")
	bob.expect("* call declined by dev-a (decline)")

	// The callee sends a tone, then quits: the disconnect ends the call.
	alice.send("/call 5")
	alice.expect("* calling on ch 5")
	bob.expect("* incoming call from dev-a")
	bob.send("/answer")
	alice.expect("* call accepted by dev-b")
	bob.send("/tone 1")
	bob.expect("* tone done: sent 50 voice frames")
	// Bob's frames precede his disconnect on his connection, so the
	// server-generated CALL_END (§6.10) comes after all of them.
	bob.send("/quit")
	bob.wait()
	alice.expect("* call ended by the server (failure): received 50 voice frames")
	alice.send("/quit")
	alice.wait()
}
