package identity

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzParseCertificate(f *testing.F) {
	f.Add([]byte(certJSON(nil)))
	f.Add([]byte(certJSON(map[string]string{"serial": "18446744073709551615", "user_id": `"\u00e9\n\"x\""`})))
	f.Add([]byte(certJSON(map[string]string{"serial": "1e3"})))
	f.Add([]byte(`{"serial":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCertificate(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedCertificate) {
				t.Fatalf("error %v does not wrap ErrMalformedCertificate", err)
			}
			if c != (Certificate{}) {
				t.Fatalf("non-zero certificate with error: %+v", c)
			}
			return
		}
		js, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCertificate(js)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", js, err)
		}
		if back != c {
			t.Fatalf("round trip changed the certificate:\n%+v\n%+v", c, back)
		}
		if js2, _ := back.MarshalJSON(); !bytes.Equal(js, js2) {
			t.Fatalf("canonical form not stable:\n%s\n%s", js, js2)
		}
		// Verify must not panic on arbitrary content either.
		_ = c.Verify(c.Issuer, c.DeviceID, c.UserID, c.IssuedAt)
	})
}

func FuzzVerifyProof(f *testing.F) {
	v := loadVectors(f)
	z := &v.ZKP
	f.Add([]byte(z.Commitment), []byte(z.Response), []byte(z.DevicePublic), []byte(z.ClientStatic), z.Domain, z.DeviceID)
	f.Add(make([]byte, 32), make([]byte, 32), make([]byte, 32), make([]byte, 32), "", "")
	f.Add(bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{0xff}, 32), "x", "y")
	f.Fuzz(func(t *testing.T, commitment, response, devicePublic, clientStatic []byte, domain, deviceID string) {
		var p Proof
		var pub, cs [32]byte
		copy(p.Commitment[:], commitment)
		copy(p.Response[:], response)
		copy(pub[:], devicePublic)
		copy(cs[:], clientStatic)
		err := VerifyProof(p, domain, deviceID, pub, cs)
		if err != nil && err != ErrProof {
			t.Fatalf("VerifyProof returned %v", err)
		}
	})
}
