package noiseconn

import (
	"testing"

	"github.com/commucat/commucat/ccp"
)

func helloSeeds(f *testing.F) {
	fx := newFixture(&testing.T{}, PatternXK, []int{1, 2})
	fx.client.PQ = true
	_, hello, err := NewClientHandshake(fx.client)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(hello)
	f.Add([]byte(`{"pattern":"IK","device_id":"d","handshake":"00","client_static":"` + hex64zero + `","device_public":"` + hex64zero + `","zkp":{"commitment":"` + hex64zero + `","response":"` + hex64zero + `"},"user":{"id":"a","handle":"h"},"certificate":{"serial":1}}`))
	f.Add([]byte(`{"supported_versions":[1,2,65536]}`))
	f.Add([]byte(`[1]`))
}

const hex64zero = "0000000000000000000000000000000000000000000000000000000000000000"

// FuzzHello runs the HELLO parsers (§4.3, §4.4) on arbitrary payloads: no
// panic, and an accepted HELLO satisfies the validation rules.
func FuzzHello(f *testing.F) {
	helloSeeds(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		obj, herr := parseHelloObject(payload)
		if herr != nil {
			return
		}
		for _, s := range [][]int{{1, 2}, {2}} {
			v, herr := NegotiateVersion(obj, s)
			if herr == nil && v != 1 && v != 2 {
				t.Fatalf("negotiated %d", v)
			}
		}
		h, herr := validateHello(obj)
		if herr != nil {
			if herr.Title != ccp.TitleInvalidHandshake {
				t.Fatalf("validation gave %s", herr.Title)
			}
			return
		}
		if !ValidDeviceID(h.DeviceID) || len(h.Capabilities) > MaxCapabilities || (h.Pattern != PatternXK && h.Pattern != PatternIK) {
			t.Fatalf("accepted an invalid HELLO: %+v", h)
		}
		if h.User.Handle != nil && !ValidHandle(*h.User.Handle) {
			t.Fatal("accepted an invalid handle")
		}
	})
}

// FuzzServerReadHello drives the whole server-side HELLO processing,
// Noise included.
func FuzzServerReadHello(f *testing.F) {
	helloSeeds(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		fx := newFixture(t, PatternXK, []int{1, 2})
		sh, herr := fx.srv.ReadHello(ccp.Frame{Type: ccp.Hello, Payload: payload}, fx.keys)
		if herr == nil && sh == nil {
			t.Fatal("no handshake and no error")
		}
	})
}

// FuzzMsg1Payload checks §4.6 processing of the decrypted msg1 payload.
func FuzzMsg1Payload(f *testing.F) {
	f.Add([]byte(`{"supported_versions":[1,2],"capabilities":["pq.mlkem768"],"pq_kem":"ML-KEM-768","pq_public":"00"}`))
	f.Add([]byte(`{"pq_kem":"ML-KEM-768"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, v := range []int{1, 2} {
			s := &ServerHandshake{cfg: &ServerConfig{}, Version: v, Hello: &Hello{
				Capabilities: []string{CapPQ},
				echoVersions: []byte(`[1,2]`),
				echoCaps:     []byte(`["pq.mlkem768"]`),
			}}
			herr := s.readMsg1Payload(p)
			if herr != nil && herr.Title != ccp.TitleInvalidHandshake && herr.Title != ccp.TitleAuthenticationFailed {
				t.Fatalf("unexpected title %s", herr.Title)
			}
			if s.PQ && (v != 2 || len(s.pqShared) != 32 || len(s.pqCiphertext) != pqCiphertextBytes) {
				t.Fatal("PQ in effect with bad state")
			}
		}
	})
}

// FuzzClientAuth checks the parser of the client's AUTH payload (§4.12).
func FuzzClientAuth(f *testing.F) {
	f.Add([]byte(`{"handshake":"00ff"}`))
	f.Add([]byte(`{"handshake":1}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		b, herr := parseClientAuth(ccp.Frame{Type: ccp.Auth, Payload: p})
		if herr == nil && b == nil {
			t.Fatal("nil handshake accepted")
		}
	})
}

// FuzzClientReadAuth feeds arbitrary server AUTH payloads to the client.
func FuzzClientReadAuth(f *testing.F) {
	f.Add([]byte(`{"accepted_capabilities":["noise"],"device_id":"d","handshake":"00","protocol_version":1,"server_static":"","session":"s","supported_versions":[1,2]}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		fx := newFixture(t, PatternIK, []int{1, 2})
		ch, _, err := NewClientHandshake(fx.client)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.ReadAuth(p); err == nil {
			t.Fatal("random AUTH accepted")
		}
	})
}

// FuzzHandshakeAck checks the client's ACK parser.
func FuzzHandshakeAck(f *testing.F) {
	f.Add([]byte(`{"handshake":"ok","certificate":{"serial":1},"device_certificate":null}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		if a, err := ParseHandshakeAck(p); err == nil && a.Handshake != "ok" {
			t.Fatal("ACK without ok")
		}
	})
}
