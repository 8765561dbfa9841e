package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"filippo.io/edwards25519"
	"lukechampine.com/blake3"
)

// ZKPTag is T of §4.7, the domain separation tag of the device-key proof.
const ZKPTag = "commucat:zkp:handshake:v1"

// ErrProof is returned by VerifyProof for every proof that does not verify.
var ErrProof = errors.New("identity: device-key proof does not verify")

// Proof is the Schnorr proof of §4.7: Commitment is the compressed point R,
// Response the scalar s as 32 bytes little-endian. In the HELLO they travel
// as {"commitment":hex32,"response":hex32}.
type Proof struct {
	Commitment [32]byte
	Response   [32]byte
}

// ZKPContext returns ctx of §4.7:
//
//	T || u32le(len(domain)) || domain || u32le(len(device_id)) || device_id
//	  || device_public(32) || client_static(32)
func ZKPContext(domain, deviceID string, devicePublic, clientStatic [32]byte) []byte {
	ctx := make([]byte, 0, len(ZKPTag)+4+len(domain)+4+len(deviceID)+64)
	ctx = append(ctx, ZKPTag...)
	ctx = binary.LittleEndian.AppendUint32(ctx, uint32(len(domain)))
	ctx = append(ctx, domain...)
	ctx = binary.LittleEndian.AppendUint32(ctx, uint32(len(deviceID)))
	ctx = append(ctx, deviceID...)
	ctx = append(ctx, devicePublic[:]...)
	ctx = append(ctx, clientStatic[:]...)
	return ctx
}

// zkpChallengeOutput returns the 64 bytes of BLAKE3 extendable output over
// T || u64le(len(ctx)) || ctx || device_public || R.
func zkpChallengeOutput(ctx []byte, devicePublic, commitment [32]byte) [64]byte {
	h := blake3.New(32, nil)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(ctx)))
	h.Write([]byte(ZKPTag))
	h.Write(n[:])
	h.Write(ctx)
	h.Write(devicePublic[:])
	h.Write(commitment[:])
	var out [64]byte
	if _, err := io.ReadFull(h.XOF(), out[:]); err != nil { // unreachable
		panic(err)
	}
	return out
}

// zkpChallenge returns c of §4.7: the challenge output as a little-endian
// integer reduced mod ℓ.
func zkpChallenge(ctx []byte, devicePublic, commitment [32]byte) *edwards25519.Scalar {
	out := zkpChallengeOutput(ctx, devicePublic, commitment)
	c, err := edwards25519.NewScalar().SetUniformBytes(out[:])
	if err != nil { // unreachable: the input is 64 bytes
		panic(err)
	}
	return c
}

// Prove produces the device-key proof of §4.7 for the device key priv, bound
// to the server domain, deviceID and the client's X25519 static public key.
// It reads exactly 64 bytes from random (crypto/rand.Reader when nil) and
// reduces them mod ℓ to get the nonce r.
func Prove(priv ed25519.PrivateKey, domain, deviceID string, clientStatic [32]byte, random io.Reader) (Proof, error) {
	var p Proof
	if len(priv) != ed25519.PrivateKeySize {
		return p, errors.New("identity: bad Ed25519 private key length")
	}
	if random == nil {
		random = rand.Reader
	}
	var rb [64]byte
	if _, err := io.ReadFull(random, rb[:]); err != nil {
		return p, fmt.Errorf("identity: reading proof nonce: %w", err)
	}
	r, err := edwards25519.NewScalar().SetUniformBytes(rb[:])
	clear(rb[:])
	if err != nil { // unreachable
		return p, err
	}
	R := new(edwards25519.Point).ScalarBaseMult(r)
	copy(p.Commitment[:], R.Bytes())

	devicePublic := PublicKey32(priv)
	c := zkpChallenge(ZKPContext(domain, deviceID, devicePublic, clientStatic), devicePublic, p.Commitment)
	a := SecretScalar(priv)
	s := edwards25519.NewScalar().MultiplyAdd(c, a, r) // s = c·a + r mod ℓ
	copy(p.Response[:], s.Bytes())
	r.Set(edwards25519.NewScalar())
	a.Set(edwards25519.NewScalar())
	return p, nil
}

// VerifyProof checks the device-key proof of §4.7 against devicePublic (A),
// the server domain, deviceID and clientStatic. A and R must decode as
// compressed edwards25519 points, s must be canonical (< ℓ), and the proof
// holds iff s·B = R + c·A exactly (no cofactor multiplication). It returns nil
// or ErrProof.
//
// Beyond §4.7, a device key of small order (8·A = identity, e.g. the
// identity point) is rejected: for such a key the proof A = R = identity,
// s = 0 verifies without any secret, so it proves nothing. No honest key
// generator produces one.
func VerifyProof(p Proof, domain, deviceID string, devicePublic, clientStatic [32]byte) error {
	A, err := new(edwards25519.Point).SetBytes(devicePublic[:])
	if err != nil || SmallOrder(A) {
		return ErrProof
	}
	R, err := new(edwards25519.Point).SetBytes(p.Commitment[:])
	if err != nil {
		return ErrProof
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(p.Response[:])
	if err != nil {
		return ErrProof
	}
	c := zkpChallenge(ZKPContext(domain, deviceID, devicePublic, clientStatic), devicePublic, p.Commitment)
	// s·B − c·A must equal R.
	negC := edwards25519.NewScalar().Negate(c)
	check := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(negC, A, s)
	if check.Equal(R) != 1 {
		return ErrProof
	}
	return nil
}

// SmallOrder reports whether 8·P is the identity, i.e. P lies in the
// small-order subgroup of edwards25519.
func SmallOrder(p *edwards25519.Point) bool {
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
}
