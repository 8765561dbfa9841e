package identity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"

	"filippo.io/edwards25519"
)

type zkpFixture struct {
	proof        Proof
	domain       string
	deviceID     string
	devicePublic [32]byte
	clientStatic [32]byte
}

func newZKPFixture(t testing.TB) zkpFixture {
	t.Helper()
	v := loadVectors(t)
	z := &v.ZKP
	return zkpFixture{
		proof:        Proof{Commitment: z.Commitment.a32(t), Response: z.Response.a32(t)},
		domain:       z.Domain,
		deviceID:     z.DeviceID,
		devicePublic: z.DevicePublic.a32(t),
		clientStatic: z.ClientStatic.a32(t),
	}
}

func (f zkpFixture) verify() error {
	return VerifyProof(f.proof, f.domain, f.deviceID, f.devicePublic, f.clientStatic)
}

// groupOrder is ℓ = 2^252 + 27742317777372353535851937790883648493.
func groupOrder() *big.Int {
	l, _ := new(big.Int).SetString("27742317777372353535851937790883648493", 10)
	return l.Add(l, new(big.Int).Lsh(big.NewInt(1), 252))
}

func leToInt(b []byte) *big.Int {
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	return new(big.Int).SetBytes(be)
}

func intToLE32(n *big.Int) [32]byte {
	var out [32]byte
	be := n.Bytes()
	if len(be) > 32 {
		panic("too large")
	}
	for i := range be {
		out[i] = be[len(be)-1-i]
	}
	return out
}

func TestVerifyProofFailures(t *testing.T) {
	base := newZKPFixture(t)
	if err := base.verify(); err != nil {
		t.Fatalf("valid proof rejected: %v", err)
	}

	// A point encoding that does not decode: y = 2 is not on the curve.
	var notAPoint [32]byte
	notAPoint[0] = 2
	if _, err := new(edwards25519.Point).SetBytes(notAPoint[:]); err == nil {
		t.Fatal("test assumption: y=2 should not decode")
	}

	// s + ℓ still fits in 32 bytes (s < 2^253) and is congruent to s.
	s := leToInt(base.proof.Response[:])
	sPlusL := intToLE32(new(big.Int).Add(s, groupOrder()))

	cases := []struct {
		name string
		mod  func(f *zkpFixture)
	}{
		{"wrong domain", func(f *zkpFixture) { f.domain = "commucat.example" }},
		{"empty domain", func(f *zkpFixture) { f.domain = "" }},
		{"wrong device id", func(f *zkpFixture) { f.deviceID = "device-2" }},
		{"wrong client_static", func(f *zkpFixture) { f.clientStatic[0] ^= 1 }},
		{"wrong device_public", func(f *zkpFixture) {
			other := PublicKey32(mustFromSeed(t, seqBytes(0, 32)))
			f.devicePublic = other
		}},
		{"tampered R", func(f *zkpFixture) {
			// Another valid point: R + B.
			R, err := new(edwards25519.Point).SetBytes(f.proof.Commitment[:])
			if err != nil {
				t.Fatal(err)
			}
			R.Add(R, edwards25519.NewGeneratorPoint())
			copy(f.proof.Commitment[:], R.Bytes())
		}},
		{"tampered R byte", func(f *zkpFixture) { f.proof.Commitment[5] ^= 0x10 }},
		{"tampered s", func(f *zkpFixture) { f.proof.Response[0] ^= 1 }},
		{"non-canonical s (s+l)", func(f *zkpFixture) { f.proof.Response = sPlusL }},
		{"s all ones", func(f *zkpFixture) { f.proof.Response = [32]byte(bytes.Repeat([]byte{0xff}, 32)) }},
		{"R not a point", func(f *zkpFixture) { f.proof.Commitment = notAPoint }},
		{"A not a point", func(f *zkpFixture) { f.devicePublic = notAPoint }},
		{"zero proof", func(f *zkpFixture) { f.proof = Proof{} }},
		{"swapped ctx fields", func(f *zkpFixture) { f.domain, f.deviceID = f.deviceID, f.domain }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			tc.mod(&f)
			if err := f.verify(); !errors.Is(err, ErrProof) {
				t.Errorf("VerifyProof = %v, want ErrProof", err)
			}
		})
	}
}

// The length prefixes of ctx keep ("ab","c") and ("a","bc") apart.
func TestZKPContextLengthPrefixes(t *testing.T) {
	var pub, cs [32]byte
	if bytes.Equal(ZKPContext("ab", "c", pub, cs), ZKPContext("a", "bc", pub, cs)) {
		t.Error("contexts collide")
	}
}

func TestProveVerifyRandom(t *testing.T) {
	priv := mustFromSeed(t, seqBytes(0x20, 32))
	var cs [32]byte
	cs[3] = 7
	for i := 0; i < 20; i++ {
		p, err := Prove(priv, "d.example", "dev", cs, nil) // crypto/rand
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyProof(p, "d.example", "dev", PublicKey32(priv), cs); err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
	}
}

func TestProveErrors(t *testing.T) {
	priv := mustFromSeed(t, seqBytes(0x20, 32))
	if _, err := Prove(priv, "d", "dev", [32]byte{}, bytes.NewReader(make([]byte, 63))); err == nil {
		t.Error("Prove succeeded with a short random stream")
	}
	if _, err := Prove(priv[:10], "d", "dev", [32]byte{}, nil); err == nil {
		t.Error("Prove succeeded with a short private key")
	}
}

func TestSecretScalar(t *testing.T) {
	priv := mustFromSeed(t, seqBytes(0x20, 32))
	a := SecretScalar(priv)
	A := new(edwards25519.Point).ScalarBaseMult(a)
	if !bytes.Equal(A.Bytes(), priv[32:]) {
		t.Errorf("a·B = %x, want the public key %x", A.Bytes(), priv[32:])
	}
}

// A small-order device key would let anyone "prove" it (A = R = identity,
// s = 0 satisfies s·B = R + c·A); VerifyProof refuses such keys.
func TestVerifyProofRejectsSmallOrderKey(t *testing.T) {
	var identityPoint [32]byte
	identityPoint[0] = 1
	p := Proof{Commitment: identityPoint} // Response = 0
	if err := VerifyProof(p, "commucat.local", "device-1", identityPoint, [32]byte{}); err != ErrProof {
		t.Fatalf("identity key accepted: %v", err)
	}
	// A point of order 8 (encoding from the edwards25519 small-order list).
	order8, _ := hex.DecodeString("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
	if err := VerifyProof(p, "commucat.local", "device-1", [32]byte(order8), [32]byte{}); err != ErrProof {
		t.Fatalf("order-8 key accepted: %v", err)
	}
}

func TestSmallOrder(t *testing.T) {
	order8, _ := hex.DecodeString("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
	p, err := new(edwards25519.Point).SetBytes(order8)
	if err != nil {
		t.Fatal(err)
	}
	if !SmallOrder(p) || !SmallOrder(edwards25519.NewIdentityPoint()) {
		t.Fatal("small-order points not detected")
	}
	if SmallOrder(edwards25519.NewGeneratorPoint()) {
		t.Fatal("generator reported small order")
	}
}
