module github.com/commucat/commucat

go 1.26.8

require (
	filippo.io/edwards25519 v1.2.0
	github.com/flynn/noise v1.1.0
	golang.org/x/crypto v0.59.0
	lukechampine.com/blake3 v1.4.1
)

require (
	github.com/klauspost/cpuid/v2 v2.0.9 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
