package identity

import "crypto/ed25519"

func signWith(priv ed25519.PrivateKey, msg []byte) []byte {
	return ed25519.Sign(priv, msg)
}
