package noiseconn

import (
	"bytes"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

func fill32(b byte) [32]byte {
	var k [32]byte
	for i := range k {
		k[i] = b
	}
	return k
}

// TestHybridKeysVector is the test vector of §5.3.
func TestHybridKeysVector(t *testing.T) {
	h := fill32(0x11)
	c2s, s2c := HybridKeys(h[:], fill32(0x22), fill32(0x33), fill32(0x44))
	const (
		wantC2S = "afcb6899d3dd5d70e7b7bf49d2810ca603be2ec01d2b1a54018d6136832d7d9c"
		wantS2C = "3b0dfa4e5f73d13302fa2f999963ea87609a05f6a3368cf16b7c20a2134f9d41"
	)
	if got := hex.EncodeToString(c2s[:]); got != wantC2S {
		t.Errorf("k_c2s = %s, want %s", got, wantC2S)
	}
	if got := hex.EncodeToString(s2c[:]); got != wantS2C {
		t.Errorf("k_s2c = %s, want %s", got, wantS2C)
	}
}

// TestHybridKeysSchedule checks HybridKeys against the formula of §5.3
// written out with the two HKDF steps, and that every input matters.
func TestHybridKeysSchedule(t *testing.T) {
	var h, a, b, ss [32]byte
	for _, k := range [][]byte{h[:], a[:], b[:], ss[:]} {
		if _, err := rand.Read(k); err != nil {
			t.Fatal(err)
		}
	}
	c2s, s2c := HybridKeys(h[:], a, b, ss)

	ikm := append(append(append([]byte{}, a[:]...), b[:]...), ss[:]...)
	prk, err := hkdf.Extract(sha256.New, ikm, h[:])
	if err != nil {
		t.Fatal(err)
	}
	okm, err := hkdf.Expand(sha256.New, prk, "commucat/ccp2/pq-hybrid", 64)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c2s[:], okm[:32]) || !bytes.Equal(s2c[:], okm[32:]) {
		t.Fatal("HybridKeys differs from extract-then-expand")
	}
	if c2s == s2c || c2s == a || s2c == b {
		t.Fatal("hybrid keys degenerate")
	}

	flip := func(k [32]byte) [32]byte { k[0] ^= 1; return k }
	h2 := flip(h)
	for name, keys := range map[string][2][32]byte{
		"h":        pair(HybridKeys(h2[:], a, b, ss)),
		"k_i2r":    pair(HybridKeys(h[:], flip(a), b, ss)),
		"k_r2i":    pair(HybridKeys(h[:], a, flip(b), ss)),
		"ss_mlkem": pair(HybridKeys(h[:], a, b, flip(ss))),
		"swapped":  pair(HybridKeys(h[:], b, a, ss)),
	} {
		if keys[0] == c2s || keys[1] == s2c {
			t.Errorf("changing %s left a key unchanged", name)
		}
	}
}

func pair(a, b [32]byte) [2][32]byte { return [2][32]byte{a, b} }

// TestHybridKeysMLKEM768 runs the PQ part of the handshake end to end: the
// client generates an ML-KEM-768 key and sends the encapsulation key
// (pq_public), the server encapsulates (pq_ciphertext, ss_mlkem), the client
// decapsulates, and both derive the same record keys, which then carry the
// IK confirm message and records in both directions.
func TestHybridKeysMLKEM768(t *testing.T) {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	pqPublic := dk.EncapsulationKey().Bytes()
	if len(pqPublic) != 1184 {
		t.Fatalf("pq_public has %d bytes", len(pqPublic))
	}

	// Server side.
	ek, err := mlkem.NewEncapsulationKey768(pqPublic)
	if err != nil {
		t.Fatal(err)
	}
	serverSS, ct := ek.Encapsulate()
	if len(ct) != 1088 || len(serverSS) != 32 {
		t.Fatalf("ciphertext %d bytes, shared secret %d bytes", len(ct), len(serverSS))
	}

	// Client side.
	clientSS, err := dk.Decapsulate(ct)
	if err != nil {
		t.Fatal(err)
	}

	// Stand-ins for the Noise handshake hash and Split keys, equal on both
	// sides.
	var h, kI2R, kR2I [32]byte
	for _, k := range [][]byte{h[:], kI2R[:], kR2I[:]} {
		if _, err := rand.Read(k); err != nil {
			t.Fatal(err)
		}
	}
	var ssS, ssC [32]byte
	copy(ssS[:], serverSS)
	copy(ssC[:], clientSS)
	sC2S, sS2C := HybridKeys(h[:], kI2R, kR2I, ssS)
	cC2S, cS2C := HybridKeys(h[:], kI2R, kR2I, ssC)
	if sC2S != cC2S || sS2C != cS2C {
		t.Fatal("client and server derive different hybrid keys")
	}
	if sC2S == kI2R || sS2C == kR2I {
		t.Fatal("hybrid keys equal the Split keys")
	}

	// A tampered ciphertext decapsulates (implicit rejection) to a different
	// secret, so the keys disagree.
	bad := bytes.Clone(ct)
	bad[0] ^= 1
	badSS, err := dk.Decapsulate(bad)
	if err != nil {
		t.Fatal(err)
	}
	var ssBad [32]byte
	copy(ssBad[:], badSS)
	if k, _ := HybridKeys(h[:], kI2R, kR2I, ssBad); k == sC2S {
		t.Fatal("tampered ciphertext gives the same keys")
	}

	// IK: the client confirms with the hybrid client→server key at counter
	// 0, then sends records from counter 1; the server sends from 0.
	if !CheckConfirm(sC2S, ConfirmMessage(cC2S)) {
		t.Fatal("server rejects the client's confirm message")
	}
	if CheckConfirm(sC2S, ConfirmMessage(kI2R)) {
		t.Fatal("server accepts a confirm under the Split key")
	}
	up, err := NewSealer(cC2S, 1, PaddingBuckets).AppendRecords(nil, []byte("client frames"))
	if err != nil {
		t.Fatal(err)
	}
	down, err := NewSealer(sS2C, 0, PaddingNone).AppendRecords(nil, []byte("server frames"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(NewRecordReader(bytes.NewReader(up), NewOpener(sC2S, 1))); err != nil || string(got) != "client frames" {
		t.Fatalf("server reads %q, %v", got, err)
	}
	if got, err := io.ReadAll(NewRecordReader(bytes.NewReader(down), NewOpener(cS2C, 0))); err != nil || string(got) != "server frames" {
		t.Fatalf("client reads %q, %v", got, err)
	}
}
