package identity

import (
	"encoding/hex"
	"fmt"
)

// DecodeHex32 decodes a hex32 value (§1.2): exactly 64 hex characters, in
// either case.
func DecodeHex32(s string) ([32]byte, error) {
	var out [32]byte
	err := decodeHexExact(out[:], s)
	return out, err
}

// DecodeHex64 decodes a hex64 value (§1.2): exactly 128 hex characters, in
// either case.
func DecodeHex64(s string) ([64]byte, error) {
	var out [64]byte
	err := decodeHexExact(out[:], s)
	return out, err
}

func decodeHexExact(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("identity: hex value must be %d characters, got %d", 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		clear(dst)
		return fmt.Errorf("identity: invalid hex: %w", err)
	}
	return nil
}

// appendHex appends the lowercase hex encoding of b to dst.
func appendHex(dst, b []byte) []byte {
	return hex.AppendEncode(dst, b)
}
