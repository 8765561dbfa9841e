// Package noiseconn implements the CCP-1 handshake (Noise XK and IK with the
// CommuCat message contents of spec §4) and the version 2 record layer with
// the post-quantum hybrid key schedule (§5).
package noiseconn
