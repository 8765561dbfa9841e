package noiseconn

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/flynn/noise"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
)

// errString is err's message, or "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestX25519DHMatchesDH25519 checks x25519DH against noise.DH25519: the
// same randomness consumed, the same key pairs, shared secrets and errors.
func TestX25519DHMatchesDH25519(t *testing.T) {
	if got, want := newCipherSuite(new(x25519DH)).Name(), noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s).Name(); !bytes.Equal(got, want) {
		t.Fatalf("suite name %q, want %q", got, want)
	}
	d := new(x25519DH)
	if d.DHLen() != noise.DH25519.DHLen() || d.DHName() != noise.DH25519.DHName() {
		t.Fatalf("DHLen %d DHName %q", d.DHLen(), d.DHName())
	}
	src := make([]byte, 32*8+5)
	if _, err := rand.Read(src); err != nil {
		t.Fatal(err)
	}
	oldR, newR := bytes.NewReader(src), bytes.NewReader(src)
	var pairs []noise.DHKey
	for range 8 {
		want, err := noise.DH25519.GenerateKeypair(oldR)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.GenerateKeypair(newR)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Private, want.Private) || !bytes.Equal(got.Public, want.Public) {
			t.Fatal("GenerateKeypair differs from noise.DH25519")
		}
		if oldR.Len() != newR.Len() {
			t.Fatalf("GenerateKeypair left %d random bytes, noise.DH25519 %d", newR.Len(), oldR.Len())
		}
		pairs = append(pairs, got)
	}
	// A short read fails the same way.
	_, errOld := noise.DH25519.GenerateKeypair(oldR)
	_, errNew := d.GenerateKeypair(newR)
	if errNew == nil || errString(errNew) != errString(errOld) {
		t.Fatalf("short read: %v, want %v", errNew, errOld)
	}
	if len(d.keys) != maxPreparedKeys {
		t.Fatalf("%d prepared keys, want the bound %d", len(d.keys), maxPreparedKeys)
	}

	// Shared secrets: prepared keys, and keys seen for the first time
	// (a fresh x25519DH, and one more key than the bound).
	fresh := new(x25519DH)
	for _, a := range pairs {
		for _, b := range pairs {
			want, err := noise.DH25519.DH(a.Private, b.Public)
			if err != nil {
				t.Fatal(err)
			}
			for _, dh := range []*x25519DH{d, fresh} {
				got, err := dh.DH(a.Private, b.Public)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("DH = %x, %v; want the noise.DH25519 result", got, err)
				}
			}
		}
	}
	if len(fresh.keys) != len(pairs) {
		t.Fatalf("fresh x25519DH prepared %d keys, want %d", len(fresh.keys), len(pairs))
	}

	// A private slice changed after it was prepared is parsed again.
	priv := bytes.Clone(pairs[0].Private)
	e := new(x25519DH)
	if _, err := e.DH(priv, pairs[1].Public); err != nil {
		t.Fatal(err)
	}
	priv[0] ^= 0x80
	want, _ := noise.DH25519.DH(priv, pairs[1].Public)
	if got, err := e.DH(priv, pairs[1].Public); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("DH after the private key changed = %x, %v", got, err)
	}

	// Errors: low-order points (all-zero shared secret) and bad lengths,
	// with both a prepared and an unknown private key.
	lowOrder := [][]byte{
		make([]byte, 32),
		append([]byte{1}, make([]byte, 31)...),
		mustHex(t, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
		mustHex(t, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
	}
	cases := [][2][]byte{
		{pairs[0].Private, make([]byte, 31)},
		{pairs[0].Private, make([]byte, 33)},
		{pairs[0].Private, nil},
		{make([]byte, 31), pairs[0].Public},
		{nil, pairs[0].Public},
		{make([]byte, 31), make([]byte, 31)},
	}
	for _, p := range lowOrder {
		cases = append(cases, [2][]byte{pairs[0].Private, p}, [2][]byte{seq32(0x99), p})
	}
	for i, c := range cases {
		want, errOld := noise.DH25519.DH(c[0], c[1])
		got, errNew := d.DH(c[0], c[1])
		if errOld == nil || errString(errNew) != errString(errOld) || got != nil || want != nil {
			t.Errorf("case %d: DH = %x, %v; noise.DH25519 = %x, %v", i, got, errNew, want, errOld)
		}
	}
}

// TestHandshakeMixedDH runs handshakes with noise.DH25519 on one side and
// x25519DH on the other, in both directions: the transcripts must equal the
// recordings (made with noise.DH25519 on both sides) and the keys agree.
func TestHandshakeMixedDH(t *testing.T) {
	for _, pattern := range []string{PatternXK, PatternIK} {
		for _, tc := range []struct {
			name     string
			versions []int
			pq       bool
		}{
			{"v1", []int{1}, false},
			{"v2", []int{1, 2}, false},
			{"v2-pq", []int{1, 2}, true},
		} {
			for _, side := range []string{"old-server", "old-client", "old-both"} {
				t.Run(pattern+"/"+tc.name+"/"+side, func(t *testing.T) {
					fx := newFixture(t, pattern, tc.versions)
					fx.client.PQ = tc.pq
					if side != "old-client" {
						fx.srv.testDH = noise.DH25519
					}
					if side != "old-server" {
						fx.client.testDH = noise.DH25519
					}
					o := fx.run()
					o.mustSucceed(t)
					if !bytes.Equal(o.server.HandshakeHash, o.client.HandshakeHash) {
						t.Fatal("handshake hashes differ")
					}
					if o.server.Version == Version2 {
						checkRecords(t, o.client, o.server)
					}
					checkTranscript(t, pattern+"_"+tc.name, o.tr)
				})
			}
		}
	}
}

// TestLowOrderEphemeral sends msg1 with a low-order ephemeral: the DH
// error reaches ReadMessage unchanged, as with noise.DH25519, and the
// server finds no key that reads msg1.
func TestLowOrderEphemeral(t *testing.T) {
	key := serverKey(t, 1, 0x77)
	msg1 := make([]byte, 32+16) // e = 0, then an empty payload's tag
	var errs []string
	for _, dh := range []noise.DHFunc{noise.DH25519, new(x25519DH)} {
		hs, err := noise.NewHandshakeState(noise.Config{
			CipherSuite:   newCipherSuite(dh),
			Pattern:       noise.HandshakeXK,
			Prologue:      []byte("commucat"),
			StaticKeypair: noise.DHKey{Private: key.Private[:], Public: key.Public[:]},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, err = hs.ReadMessage(nil, msg1)
		if err == nil {
			t.Fatal("msg1 with a low-order ephemeral reads")
		}
		errs = append(errs, err.Error())
	}
	if errs[0] != errs[1] || !strings.Contains(errs[1], "low order point") {
		t.Fatalf("errors %q", errs)
	}
	for _, old := range []bool{false, true} {
		fx := newFixture(t, PatternXK, []int{1, 2})
		if old {
			fx.srv.testDH = noise.DH25519
		}
		fx.tamperHello = rewriteHello(t, func(m map[string]any) {
			m["handshake"] = strings.Repeat("00", 32) + m["handshake"].(string)[64:]
		})
		o := fx.run()
		o.mustFail(t, ccp.TitleAuthenticationFailed, DetailCryptoFailure)
		if o.herr.Cause.Error() != "no Noise key reads msg1" {
			t.Fatalf("cause %v", o.herr.Cause)
		}
	}
}

// benchHandshake runs complete handshakes, client and server, in-process.
func benchHandshake(b *testing.B, pattern string, dh noise.DHFunc) {
	key := serverKey(b, 1, 0x77)
	dev, err := identity.FromSeed(seq32(0x20))
	if err != nil {
		b.Fatal(err)
	}
	srv := ServerConfig{
		Domain:   "commucat.local",
		Prologue: []byte("commucat"),
		Versions: []int{1, 2},
		Features: ServerFeatures{V2: true},
		testDH:   dh,
	}
	keys := []ServerKey{key}
	ccfg := ClientConfig{
		Pattern:      pattern,
		DeviceID:     "device-1",
		DeviceKey:    dev,
		StaticKey:    [32]byte(seq32(0x40)),
		ServerStatic: key.Public,
		Domain:       "commucat.local",
		Prologue:     []byte("commucat"),
		Versions:     []int{1, 2},
		testDH:       dh,
	}
	info := AuthInfo{Session: strings.Repeat("ab", 32), UserID: strings.Repeat("cd", 32)}
	b.ReportAllocs()
	for b.Loop() {
		handshakeOnce(b, ccfg, srv, keys, info)
	}
}

// handshakeOnce runs one complete handshake, client and server, and
// returns both ends' sessions after checking that their keys agree.
func handshakeOnce(tb testing.TB, ccfg ClientConfig, srv ServerConfig, keys []ServerKey, info AuthInfo) (client, server *Session) {
	ch, hello, err := NewClientHandshake(ccfg)
	if err != nil {
		tb.Fatal(err)
	}
	sh, herr := srv.ReadHello(ccp.Frame{Type: ccp.Hello, Payload: hello}, keys)
	if herr != nil {
		tb.Fatal(herr)
	}
	auth, err := sh.WriteAuth(info)
	if err != nil {
		tb.Fatal(err)
	}
	reply, err := ch.ReadAuth(auth)
	if err != nil {
		tb.Fatal(err)
	}
	sess, herr := sh.ReadClientAuth(ccp.Frame{Type: ccp.Auth, Sequence: 2, Payload: reply})
	if herr != nil {
		tb.Fatal(herr)
	}
	if sess.SendKey != ch.Result().RecvKey {
		tb.Fatal("keys disagree")
	}
	return ch.Result(), sess
}

// BenchmarkXKHandshake compares a full XK handshake (both sides) with
// noise.DH25519 ("DH25519", the previous suite) and with x25519DH ("ecdh").
func BenchmarkXKHandshake(b *testing.B) {
	b.Run("DH25519", func(b *testing.B) { benchHandshake(b, PatternXK, noise.DH25519) })
	b.Run("ecdh", func(b *testing.B) { benchHandshake(b, PatternXK, nil) })
}

// TestPreparedServerKey: a prepared server key (parsed once, ServerKey
// Prepared) gives the same handshake, byte for byte, as an unprepared one.
func TestPreparedServerKey(t *testing.T) {
	for _, pattern := range []string{PatternXK, PatternIK} {
		for _, pq := range []bool{false, true} {
			fx := newFixture(t, pattern, []int{1, 2})
			fx.client.PQ = pq
			for i := range fx.keys {
				fx.keys[i] = fx.keys[i].Prepared()
				if fx.keys[i].parsed == nil {
					t.Fatal("Prepared did not parse the key")
				}
			}
			o := fx.run()
			o.mustSucceed(t)
			if !bytes.Equal(o.server.HandshakeHash, o.client.HandshakeHash) {
				t.Fatal("handshake hashes differ")
			}
			name := pattern + "_v2"
			if pq {
				name += "-pq"
			}
			checkTranscript(t, name, o.tr)
		}
	}
}
