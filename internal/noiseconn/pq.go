package noiseconn

import (
	"crypto/hkdf"
	"crypto/sha256"
)

// pqHybridInfo is the HKDF info string of the PQ hybrid key schedule (§5.3).
const pqHybridInfo = "commucat/ccp2/pq-hybrid"

// HybridKeys is the PQ hybrid key schedule of §5.3:
//
//	okm   = HKDF-SHA256(salt = h, IKM = k_i2r || k_r2i || ss_mlkem, info = "commucat/ccp2/pq-hybrid", L = 64)
//	k_c2s = okm[0..32]      k_s2c = okm[32..64]
//
// h is the 32-byte Noise handshake hash after the last handshake message (XK:
// msg3, IK: msg2), kI2R and kR2I are the Noise Split keys (initiator→responder
// and responder→initiator) and ssMLKEM is the ML-KEM-768 shared secret. The
// returned keys replace the Split keys for the record layer (and for the IK
// confirm message); the nonce counters of both start at 0.
func HybridKeys(h []byte, kI2R, kR2I, ssMLKEM [32]byte) (kC2S, kS2C [32]byte) {
	var ikm [96]byte
	copy(ikm[0:32], kI2R[:])
	copy(ikm[32:64], kR2I[:])
	copy(ikm[64:96], ssMLKEM[:])
	okm, err := hkdf.Key(sha256.New, ikm[:], h, pqHybridInfo, 64)
	clear(ikm[:])
	if err != nil {
		// Only possible for an output length above 255 hash blocks or, in
		// FIPS 140-only mode, a short secret; neither applies here.
		panic("noiseconn: pq hybrid HKDF: " + err.Error())
	}
	copy(kC2S[:], okm[:32])
	copy(kS2C[:], okm[32:])
	clear(okm)
	return kC2S, kS2C
}
