package session

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/commucat/commucat/ccp"
)

// Issue 7: log lines of a connection carry its connection number and,
// once known, the device; no line carries key material, session tokens
// or message payloads.
func TestLogsCarryIDsAndNoSecrets(t *testing.T) {
	n := newTestNode(t, nil)
	a := n.dial(clientOpts{device: "log-a"})
	b := n.dial(clientOpts{device: "log-b"})
	a.mustOK(ccp.Join, 11, `{"members":["log-b"]}`)
	const payload = "PAYLOAD-MUST-NOT-BE-LOGGED"
	a.mustOK(ccp.Msg, 11, payload)
	if f := b.expectAfterPresence(ccp.Msg); string(f.Payload) != payload {
		t.Fatalf("b got %q", f.Payload)
	}
	// A bad frame makes the server log the problem.
	a.send(ccp.Join, 0, `{}`)
	a.expect(ccp.Error)
	tokens := []string{a.ack.Session, b.ack.Session}
	a.close()
	b.close()
	n.cancel()
	n.wg.Wait()

	logs := n.logs.String()
	if strings.TrimSpace(logs) == "" {
		t.Fatal("nothing was logged")
	}
	key := n.keys[0]
	secrets := map[string]string{
		"noise private key (hex)": hex.EncodeToString(key.Private[:]),
		"device CA key (hex)":     hex.EncodeToString(n.ca.Seed()),
		"message payload":         payload,
	}
	for i, tok := range tokens {
		if tok == "" {
			t.Fatal("empty session token")
		}
		secrets["session token "+string(rune('a'+i))] = tok
	}
	for what, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the %s", what)
		}
	}
	sawDevice := false
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !strings.Contains(line, "conn=") {
			// Lines of the node itself (router, writer) have no connection.
			if strings.Contains(line, "device=") {
				t.Errorf("a connection line without conn=: %s", line)
			}
			continue
		}
		if strings.Contains(line, "device=log-") {
			sawDevice = true
		}
	}
	if !sawDevice {
		t.Errorf("no connection line names its device:\n%s", logs)
	}
}
