package noiseconn

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"io"

	"github.com/flynn/noise"
)

// newCipherSuite returns Noise_*_25519_ChaChaPoly_BLAKE2s (§4.2) over dh,
// which is a fresh *x25519DH per handshake (or noise.DH25519 in tests). The
// protocol name depends only on dh.DHName(), which is "25519" either way.
func newCipherSuite(dh noise.DHFunc) noise.CipherSuite {
	return noise.NewCipherSuite(dh, noise.CipherChaChaPoly, noise.HashBLAKE2s)
}

// maxPreparedKeys bounds the keys an x25519DH keeps: a handshake needs its
// static key and one ephemeral; the server adds one static key per Noise
// key it tries on msg1.
const maxPreparedKeys = 8

// x25519DH is a noise.DHFunc that computes exactly what noise.DH25519 does
// (same inputs consumed, same outputs, same errors) but keeps the
// *ecdh.PrivateKey of every private key it generated or parsed.
//
// noise.DH25519 goes through golang.org/x/crypto/curve25519.X25519, which
// calls ecdh.X25519().NewPrivateKey on every DH; NewPrivateKey derives the
// public key, a full scalar multiplication thrown away at once, so each DH
// and each GenerateKeypair costs two multiplications. Here a key is parsed
// once and each later DH with it costs one.
//
// An x25519DH belongs to one handshake (or to the attempts of one ReadHello)
// and is not safe for concurrent use. It holds private keys: it must not
// outlive the handshake, and must never be logged.
type x25519DH struct {
	keys []preparedKey
}

type preparedKey struct {
	priv [32]byte
	key  *ecdh.PrivateKey
}

var _ noise.DHFunc = (*x25519DH)(nil)

// prepare parses priv, derives its public key and remembers the pair.
func (d *x25519DH) prepare(priv []byte) (*ecdh.PrivateKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if len(d.keys) < maxPreparedKeys {
		d.keys = append(d.keys, preparedKey{priv: [32]byte(priv), key: k})
	}
	return k, nil
}

// remember adds an already parsed key (a prepared ServerKey).
func (d *x25519DH) remember(priv [32]byte, k *ecdh.PrivateKey) {
	if len(d.keys) < maxPreparedKeys-1 { // keep room for the ephemeral
		d.keys = append(d.keys, preparedKey{priv: priv, key: k})
	}
}

// privateKey returns the prepared key whose private bytes equal priv,
// parsing priv if none does. The bytes are compared in constant time; which
// entry matched (static or ephemeral) is public from the pattern anyway.
func (d *x25519DH) privateKey(priv []byte) (*ecdh.PrivateKey, error) {
	if len(priv) == 32 {
		for i := range d.keys {
			if subtle.ConstantTimeCompare(d.keys[i].priv[:], priv) == 1 {
				return d.keys[i].key, nil
			}
		}
	}
	return d.prepare(priv)
}

// GenerateKeypair reads exactly 32 bytes from random (crypto/rand when nil)
// as the private key, as noise.DH25519 does. It does not use
// ecdh.Curve.GenerateKey, which may ignore random.
func (d *x25519DH) GenerateKeypair(random io.Reader) (noise.DHKey, error) {
	priv := make([]byte, 32)
	if random == nil {
		random = rand.Reader
	}
	if _, err := io.ReadFull(random, priv); err != nil {
		return noise.DHKey{}, err
	}
	k, err := d.prepare(priv)
	if err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: priv, Public: k.PublicKey().Bytes()}, nil
}

// DH returns X25519(privkey, pubkey). The checks and their errors are those
// of curve25519.X25519: the public key's length, then the private key's,
// then the all-zero result of a low-order point (from ECDH).
func (d *x25519DH) DH(privkey, pubkey []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(pubkey)
	if err != nil {
		return nil, err
	}
	k, err := d.privateKey(privkey)
	if err != nil {
		return nil, err
	}
	return k.ECDH(pub)
}

// DHLen is 32, as for noise.DH25519.
func (*x25519DH) DHLen() int { return 32 }

// DHName is "25519", as for noise.DH25519: it is part of the protocol name
// and so of every handshake hash.
func (*x25519DH) DHName() string { return "25519" }
