package identity

import (
	"bytes"
	"testing"
)

func BenchmarkVerifyProof(b *testing.B) {
	f := newZKPFixture(b)
	for b.Loop() {
		if err := f.verify(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProve(b *testing.B) {
	v := loadVectors(b)
	z := &v.ZKP
	priv := mustFromSeed(b, z.DeviceSeed)
	cs := z.ClientStatic.a32(b)
	rd := bytes.NewReader(z.Random)
	for b.Loop() {
		rd.Reset(z.Random)
		if _, err := Prove(priv, z.Domain, z.DeviceID, cs, rd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCertificateVerify(b *testing.B) {
	v := loadVectors(b)
	c, ca := vectorCertificate(b, v)
	caPub := PublicKey32(ca)
	now := c.IssuedAt + 1
	for b.Loop() {
		if err := c.Verify(caPub, "device-1", "user-1", now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCertificate(b *testing.B) {
	v := loadVectors(b)
	data := []byte(v.Certificate.CanonicalJSON)
	for b.Loop() {
		if _, err := ParseCertificate(data); err != nil {
			b.Fatal(err)
		}
	}
}
