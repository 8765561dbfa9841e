// Package identity implements the key derivations, signatures and proofs of
// CCP-1 that bind devices, the device CA and the server together: from_seed
// (§1.2), the device-key proof (§4.7), device certificates (§4.8), the
// pair-claim message (§8.4.3), admin token hashes (§8.2), the pq-bundle
// signature message (§8.4.8), the ledger record hash (§11.1) and federation
// event signing (§11.2).
//
// Everything here is pure computation: no storage, no clocks (callers pass
// "now"), and randomness only through an injected io.Reader.
package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha512"
	"errors"

	"filippo.io/edwards25519"
	"lukechampine.com/blake3"
)

// MinSeedSize is the minimum length of a from_seed seed (§1.2).
const MinSeedSize = 32

// ErrShortSeed is returned by FromSeed for a seed shorter than MinSeedSize.
var ErrShortSeed = errors.New("identity: seed must be at least 32 bytes")

// FromSeed implements from_seed of §1.2: the RFC 8032 Ed25519 secret key is
// BLAKE3(seed) and the key pair is derived from it as usual. The seed must be
// at least 32 bytes long.
func FromSeed(seed []byte) (ed25519.PrivateKey, error) {
	if len(seed) < MinSeedSize {
		return nil, ErrShortSeed
	}
	secret := blake3.Sum256(seed)
	priv := ed25519.NewKeyFromSeed(secret[:])
	clear(secret[:])
	return priv, nil
}

// DeviceCA derives the device CA key (§1.3), which also signs federation
// events, from crypto.federation_seed: it is FromSeed(federationSeed).
func DeviceCA(federationSeed []byte) (ed25519.PrivateKey, error) {
	return FromSeed(federationSeed)
}

// ClusterBusKey derives the key that authenticates the messages of the
// node bus (Redis, §9.4) from the federation seed, which every node of a
// domain shares: only nodes can publish messages the others accept.
func ClusterBusKey(federationSeed []byte) *[32]byte {
	var k [32]byte
	blake3.DeriveKey(k[:], "commucat 2026-11-26 cluster bus mac v1", federationSeed)
	return &k
}

// SecretScalar returns the Ed25519 secret scalar a of priv as used by RFC
// 8032: SHA-512 of the 32-byte secret key, first 32 bytes, clamped (and
// reduced mod ℓ, which does not change a·B). priv must be a 64-byte
// ed25519.PrivateKey; SecretScalar panics otherwise.
func SecretScalar(priv ed25519.PrivateKey) *edwards25519.Scalar {
	if len(priv) != ed25519.PrivateKeySize {
		panic("identity: bad Ed25519 private key length")
	}
	h := sha512.Sum512(priv[:ed25519.SeedSize])
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	clear(h[:])
	if err != nil { // unreachable: the input is 32 bytes
		panic(err)
	}
	return s
}

// PublicKey32 returns the public half of priv as a fixed-size array. priv
// must be a 64-byte ed25519.PrivateKey; PublicKey32 panics otherwise.
func PublicKey32(priv ed25519.PrivateKey) [32]byte {
	if len(priv) != ed25519.PrivateKeySize {
		panic("identity: bad Ed25519 private key length")
	}
	var pub [32]byte
	copy(pub[:], priv[ed25519.SeedSize:])
	return pub
}

// X25519Public returns the RFC 7748 X25519 public key of the private key
// priv (the scalar is clamped as usual).
func X25519Public(priv [32]byte) ([32]byte, error) {
	var out [32]byte
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return out, err
	}
	copy(out[:], k.PublicKey().Bytes())
	return out, nil
}
