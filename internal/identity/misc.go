package identity

import (
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/binary"

	"lukechampine.com/blake3"
)

// Domain separation strings.
const (
	PairClaimTag = "commucat:pair-claim:v1" // §8.4.3
	PQBundleTag  = "commucat:pq-bundle:v1"  // §8.4.8
	LedgerTag    = "commucat:ledger:v1"     // §11.1
)

// PairClaimMessage returns M of §8.4.3, the message a pairing device signs
// with its new key: "commucat:pair-claim:v1" || 0x00 || normalizedCode ||
// devicePublic. normalizedCode is the trimmed, upper-cased code as stored
// (XXXX-XXXX); it is used as given.
func PairClaimMessage(normalizedCode string, devicePublic [32]byte) []byte {
	m := make([]byte, 0, len(PairClaimTag)+1+len(normalizedCode)+32)
	m = append(m, PairClaimTag...)
	m = append(m, 0)
	m = append(m, normalizedCode...)
	return append(m, devicePublic[:]...)
}

// AdminTokenHash returns BLAKE3(salt || token), the stored form of an admin
// token (§8.2).
func AdminTokenHash(salt [16]byte, token string) [32]byte {
	h := blake3.New(32, nil)
	h.Write(salt[:])
	h.Write([]byte(token))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// AdminTokenMatches reports, in constant time with respect to the hash
// values, whether token hashes with salt to storedHash (§8.2).
func AdminTokenMatches(salt [16]byte, storedHash [32]byte, token string) bool {
	h := AdminTokenHash(salt, token)
	return subtle.ConstantTimeCompare(h[:], storedHash[:]) == 1
}

// PQBundleMessage returns the message the device CA signs in the pq bundle
// of POST /api/p2p/assist (§8.4.8): "commucat:pq-bundle:v1" || prekey (32
// bytes) || kemPublic (the 1184-byte ML-KEM-768 encapsulation key).
func PQBundleMessage(prekey [32]byte, kemPublic []byte) []byte {
	m := make([]byte, 0, len(PQBundleTag)+32+len(kemPublic))
	m = append(m, PQBundleTag...)
	m = append(m, prekey[:]...)
	return append(m, kemPublic...)
}

// FederationDigest returns the digest of a federation event (§11.2):
// BLAKE3(event_id || origin || scope || i64le(created_at_ns) ||
// canonical_json(payload)), a plain concatenation without length prefixes.
// canonicalPayload must already be the canonical JSON of the payload.
func FederationDigest(eventID, origin, scope string, createdAtNs int64, canonicalPayload []byte) [32]byte {
	h := blake3.New(32, nil)
	h.Write([]byte(eventID))
	h.Write([]byte(origin))
	h.Write([]byte(scope))
	var ts [8]byte
	binary.LittleEndian.PutUint64(ts[:], uint64(createdAtNs))
	h.Write(ts[:])
	h.Write(canonicalPayload)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// SignFederationEvent signs a federation event digest with the device CA key
// (§11.2).
func SignFederationEvent(ca ed25519.PrivateKey, digest [32]byte) [64]byte {
	var sig [64]byte
	copy(sig[:], ed25519.Sign(ca, digest[:]))
	return sig
}

// VerifyFederationEvent reports whether sig is a valid Ed25519 signature by
// pub over the federation event digest (§11.2).
func VerifyFederationEvent(pub [32]byte, digest [32]byte, sig [64]byte) bool {
	return ed25519.Verify(pub[:], digest[:], sig[:])
}

// LedgerHash returns the hash of a ledger record (§11.1):
//
//	BLAKE3("commucat:ledger:v1" || prev(32) || u64le(seq)
//	  || u32le(len(recorded_at)) || recorded_at || digest(32)
//	  || u32le(len(m)) || m)
//
// where canonicalMetadata is m, the canonical JSON of the record's metadata.
func LedgerHash(prev [32]byte, seq uint64, recordedAt string, digest [32]byte, canonicalMetadata []byte) [32]byte {
	h := blake3.New(32, nil)
	var b [8]byte
	h.Write([]byte(LedgerTag))
	h.Write(prev[:])
	binary.LittleEndian.PutUint64(b[:], seq)
	h.Write(b[:])
	binary.LittleEndian.PutUint32(b[:4], uint32(len(recordedAt)))
	h.Write(b[:4])
	h.Write([]byte(recordedAt))
	h.Write(digest[:])
	binary.LittleEndian.PutUint32(b[:4], uint32(len(canonicalMetadata)))
	h.Write(b[:4])
	h.Write(canonicalMetadata)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
