package identity

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestCertificateVerifyFailures(t *testing.T) {
	v := loadVectors(t)
	good, ca := vectorCertificate(t, v)
	caPub := PublicKey32(ca)
	const dev, user = "device-1", "user-1"
	now := good.IssuedAt + 100

	if err := good.Verify(caPub, dev, user, now); err != nil {
		t.Fatalf("valid certificate rejected: %v", err)
	}
	// Boundaries that must pass.
	if err := good.Verify(caPub, dev, user, good.ExpiresAt-1); err != nil {
		t.Errorf("one second before expiry: %v", err)
	}
	if err := good.Verify(caPub, dev, user, good.IssuedAt-300); err != nil {
		t.Errorf("issued_at = now+300: %v", err)
	}

	other := mustFromSeed(t, seqBytes(0x80, 32))
	resign := func(c *Certificate) {
		copy(c.Signature[:], signWith(ca, c.SignedBytes()))
	}

	cases := []struct {
		name   string
		cert   func() Certificate
		ca     [32]byte
		dev    string
		user   string
		now    int64
		reason string
	}{
		{name: "wrong issuer (signed by another CA)", cert: func() Certificate {
			return IssueCertificate(other, good.Serial, user, dev, good.PublicKey, good.IssuedAt)
		}, reason: "issuer"},
		{name: "issuer field changed", cert: func() Certificate {
			c := good
			c.Issuer = PublicKey32(other)
			return c
		}, reason: "issuer"},
		{name: "server expects another CA", cert: func() Certificate { return good }, ca: PublicKey32(other), reason: "issuer"},
		{name: "bad signature", cert: func() Certificate {
			c := good
			c.Signature[10] ^= 1
			return c
		}, reason: "signature"},
		{name: "tampered serial", cert: func() Certificate {
			c := good
			c.Serial++
			return c
		}, reason: "signature"},
		{name: "tampered public key", cert: func() Certificate {
			c := good
			c.PublicKey[0] ^= 1
			return c
		}, reason: "signature"},
		{name: "tampered expiry", cert: func() Certificate {
			c := good
			c.ExpiresAt += 1
			return c
		}, reason: "signature"},
		{name: "wrong device", cert: func() Certificate { return good }, dev: "device-2", reason: "device_id"},
		{name: "wrong user", cert: func() Certificate { return good }, user: "user-2", reason: "user_id"},
		{name: "issued_at == expires_at", cert: func() Certificate {
			c := good
			c.ExpiresAt = c.IssuedAt
			resign(&c)
			return c
		}, now: good.IssuedAt - 10, reason: "issued_at is not before"},
		{name: "issued_at > expires_at", cert: func() Certificate {
			c := good
			c.IssuedAt, c.ExpiresAt = c.ExpiresAt, c.IssuedAt
			resign(&c)
			return c
		}, now: good.IssuedAt - 10, reason: "issued_at is not before"},
		{name: "expired (expires_at == now)", cert: func() Certificate { return good }, now: good.ExpiresAt, reason: "expired"},
		{name: "expired (expires_at < now)", cert: func() Certificate { return good }, now: good.ExpiresAt + 1000, reason: "expired"},
		{name: "issued in the future (now+301)", cert: func() Certificate { return good }, now: good.IssuedAt - 301, reason: "future"},
		{name: "issued far in the future, now very negative", cert: func() Certificate {
			c := good
			c.IssuedAt = math.MaxInt64 - 10
			c.ExpiresAt = math.MaxInt64
			resign(&c)
			return c
		}, now: math.MinInt64 + 5, reason: "future"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cert()
			caKey, d, u, n := caPub, dev, user, now
			if tc.ca != ([32]byte{}) {
				caKey = tc.ca
			}
			if tc.dev != "" {
				d = tc.dev
			}
			if tc.user != "" {
				u = tc.user
			}
			if tc.now != 0 {
				n = tc.now
			}
			err := c.Verify(caKey, d, u, n)
			if !errors.Is(err, ErrCertificate) {
				t.Fatalf("Verify = %v, want ErrCertificate", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Verify = %q, want a reason containing %q", err, tc.reason)
			}
		})
	}
}

func TestCertificateVerifyMaxTimes(t *testing.T) {
	// issued_at ≤ now + 300 must not overflow when now is near MaxInt64.
	v := loadVectors(t)
	_, ca := vectorCertificate(t, v)
	c := Certificate{Serial: 1, UserID: "u", DeviceID: "d", Issuer: PublicKey32(ca),
		IssuedAt: math.MaxInt64 - 1, ExpiresAt: math.MaxInt64}
	copy(c.Signature[:], signWith(ca, c.SignedBytes()))
	if err := c.Verify(PublicKey32(ca), "d", "u", math.MaxInt64-100); err != nil {
		t.Errorf("Verify = %v", err)
	}
}

func TestIssueCertificateEscaping(t *testing.T) {
	v := loadVectors(t)
	_, ca := vectorCertificate(t, v)
	c := IssueCertificate(ca, 0, "u\"\\\n\x01/<>&\u2028é", "d", [32]byte{}, -5)
	want := `{"serial":0,"user_id":"u\"\\\n\u0001/<>&` + "\u2028é" + `","device_id":"d","public_key":"` +
		strings.Repeat("0", 64) + `","issuer":"54f14bf7aef111be9f9b225b2bb30c988c64493047a3bf0ad9e49bf434b637a1","issued_at":-5,"expires_at":2591995}`
	if got := string(c.SignedBytes()); got != want {
		t.Errorf("SignedBytes =\n%s\nwant\n%s", got, want)
	}
	if err := c.Verify(PublicKey32(ca), "d", c.UserID, 0); err != nil {
		t.Errorf("Verify = %v", err)
	}
	js, _ := c.MarshalJSON()
	back, err := ParseCertificate(js)
	if err != nil || back != c {
		t.Errorf("round trip: %v, %+v", err, back)
	}
}

const hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// certJSON builds a certificate object from member texts; a value "-" omits
// the member.
func certJSON(over map[string]string) string {
	members := []struct{ k, v string }{
		{"serial", "1"},
		{"user_id", `"u"`},
		{"device_id", `"d"`},
		{"public_key", `"` + hexA + `"`},
		{"issuer", `"` + hexA + `"`},
		{"issued_at", "10"},
		{"expires_at", "20"},
		{"signature", `"` + hexA + hexA + `"`},
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, m := range members {
		v := m.v
		if o, ok := over[m.k]; ok {
			v = o
		}
		if v == "-" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + m.k + `":` + v)
	}
	b.WriteByte('}')
	return b.String()
}

func TestParseCertificate(t *testing.T) {
	c, err := ParseCertificate([]byte(certJSON(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Serial != 1 || c.UserID != "u" || c.DeviceID != "d" || c.IssuedAt != 10 || c.ExpiresAt != 20 ||
		c.PublicKey[0] != 0xaa || c.Issuer[31] != 0xaa || c.Signature[63] != 0xaa {
		t.Errorf("parsed %+v", c)
	}

	maxU64, err := ParseCertificate([]byte(certJSON(map[string]string{"serial": "18446744073709551615"})))
	if err != nil {
		t.Fatal(err)
	}
	if maxU64.Serial != math.MaxUint64 {
		t.Errorf("serial = %d, want 18446744073709551615", maxU64.Serial)
	}
	js, _ := maxU64.MarshalJSON()
	if !strings.Contains(string(js), `"serial":18446744073709551615,`) {
		t.Errorf("MarshalJSON = %s", js)
	}
	if back, err := ParseCertificate(js); err != nil || back != maxU64 {
		t.Errorf("round trip of max serial: %+v %v", back, err)
	}
	// 2^53+1 is not representable as a float64: it must survive exactly.
	c53, err := ParseCertificate([]byte(certJSON(map[string]string{"serial": "9007199254740993"})))
	if err != nil || c53.Serial != 9007199254740993 {
		t.Errorf("serial 2^53+1 = %d, %v", c53.Serial, err)
	}

	upper, err := ParseCertificate([]byte(certJSON(map[string]string{
		"public_key": `"` + strings.ToUpper("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") + `"`,
		"signature":  `"` + strings.Repeat("aBcD", 32) + `"`,
	})))
	if err != nil {
		t.Fatalf("uppercase hex rejected: %v", err)
	}
	if upper.PublicKey[0] != 0x01 || upper.PublicKey[7] != 0xef || upper.Signature[0] != 0xab || upper.Signature[1] != 0xcd {
		t.Errorf("uppercase hex decoded wrong: %x %x", upper.PublicKey, upper.Signature)
	}
	js, _ = upper.MarshalJSON()
	if strings.ContainsAny(string(js), "ABCDEF") {
		t.Errorf("MarshalJSON is not lowercase: %s", js)
	}

	ok := []struct {
		name string
		json string
	}{
		{"unknown members ignored", `{"x":[1,{"y":null}],` + certJSON(nil)[1:len(certJSON(nil))-1] + `,"z":1.5e300}`},
		{"whitespace", " \n" + strings.ReplaceAll(certJSON(nil), ",", " ,\t") + "\n "},
		{"negative times", certJSON(map[string]string{"issued_at": "-9223372036854775808", "expires_at": "9223372036854775807"})},
		{"serial 0", certJSON(map[string]string{"serial": "0"})},
		{"empty strings", certJSON(map[string]string{"user_id": `""`, "device_id": `""`})},
		{"escaped strings", certJSON(map[string]string{"user_id": `"\u0041\n\ud83d\ude00"`})},
	}
	for _, tc := range ok {
		t.Run("ok/"+tc.name, func(t *testing.T) {
			c, err := ParseCertificate([]byte(tc.json))
			if err != nil {
				t.Fatalf("ParseCertificate(%s) = %v", tc.json, err)
			}
			js, _ := c.MarshalJSON()
			back, err := ParseCertificate(js)
			if err != nil || back != c {
				t.Errorf("round trip: %v %+v", err, back)
			}
		})
	}

	bad := []struct {
		name string
		json string
	}{
		{"serial 2^64", certJSON(map[string]string{"serial": "18446744073709551616"})},
		{"serial huge", certJSON(map[string]string{"serial": "1" + strings.Repeat("0", 40)})},
		{"serial negative", certJSON(map[string]string{"serial": "-1"})},
		{"serial -0", certJSON(map[string]string{"serial": "-0"})},
		{"serial 1.5", certJSON(map[string]string{"serial": "1.5"})},
		{"serial 1.0", certJSON(map[string]string{"serial": "1.0"})},
		{"serial 1e3", certJSON(map[string]string{"serial": "1e3"})},
		{"serial 1E3", certJSON(map[string]string{"serial": "1E3"})},
		{"serial string", certJSON(map[string]string{"serial": `"123"`})},
		{"serial null", certJSON(map[string]string{"serial": "null"})},
		{"serial bool", certJSON(map[string]string{"serial": "true"})},
		{"serial array", certJSON(map[string]string{"serial": "[1]"})},
		{"serial missing", certJSON(map[string]string{"serial": "-"})},
		{"issued_at missing", certJSON(map[string]string{"issued_at": "-"})},
		{"issued_at fraction", certJSON(map[string]string{"issued_at": "10.5"})},
		{"issued_at exponent", certJSON(map[string]string{"issued_at": "1e9"})},
		{"issued_at overflow", certJSON(map[string]string{"issued_at": "9223372036854775808"})},
		{"expires_at underflow", certJSON(map[string]string{"expires_at": "-9223372036854775809"})},
		{"expires_at string", certJSON(map[string]string{"expires_at": `"20"`})},
		{"expires_at null", certJSON(map[string]string{"expires_at": "null"})},
		{"user_id missing", certJSON(map[string]string{"user_id": "-"})},
		{"user_id null", certJSON(map[string]string{"user_id": "null"})},
		{"user_id number", certJSON(map[string]string{"user_id": "5"})},
		{"device_id missing", certJSON(map[string]string{"device_id": "-"})},
		{"device_id object", certJSON(map[string]string{"device_id": `{"a":1}`})},
		{"public_key missing", certJSON(map[string]string{"public_key": "-"})},
		{"public_key short", certJSON(map[string]string{"public_key": `"` + hexA[:62] + `"`})},
		{"public_key long", certJSON(map[string]string{"public_key": `"` + hexA + `aa"`})},
		{"public_key odd", certJSON(map[string]string{"public_key": `"` + hexA[:63] + `"`})},
		{"public_key non-hex", certJSON(map[string]string{"public_key": `"` + hexA[:62] + `zz"`})},
		{"public_key null", certJSON(map[string]string{"public_key": "null"})},
		{"issuer missing", certJSON(map[string]string{"issuer": "-"})},
		{"issuer hex64", certJSON(map[string]string{"issuer": `"` + hexA + hexA + `"`})},
		{"signature missing", certJSON(map[string]string{"signature": "-"})},
		{"signature hex32", certJSON(map[string]string{"signature": `"` + hexA + `"`})},
		{"signature null", certJSON(map[string]string{"signature": "null"})},
		{"duplicate serial", `{"serial":2,` + certJSON(nil)[1:]},
		{"trailing data", certJSON(nil) + "x"},
		{"two objects", certJSON(nil) + "{}"},
		{"truncated", certJSON(nil)[:40]},
		{"array", "[" + certJSON(nil) + "]"},
		{"null", "null"},
		{"empty", ""},
		{"empty object", "{}"},
		{"string", `"x"`},
		{"too large", `{"pad":"` + strings.Repeat("a", MaxCertificateSize) + `",` + certJSON(nil)[1:]},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			c, err := ParseCertificate([]byte(tc.json))
			if err == nil {
				t.Fatalf("ParseCertificate accepted %.200s: %+v", tc.json, c)
			}
			if !errors.Is(err, ErrMalformedCertificate) {
				t.Errorf("error %v does not wrap ErrMalformedCertificate", err)
			}
			if c != (Certificate{}) {
				t.Errorf("non-zero certificate returned with error: %+v", c)
			}
		})
	}
}

func TestCertificateUnmarshalJSON(t *testing.T) {
	v := loadVectors(t)
	want, _ := vectorCertificate(t, v)
	var holder struct {
		Cert  Certificate  `json:"certificate"`
		Ptr   *Certificate `json:"ptr"`
		Other int          `json:"other"`
	}
	doc := `{"certificate":` + v.Certificate.CanonicalJSON + `,"ptr":` + v.Certificate.CanonicalJSON + `,"other":3}`
	if err := json.Unmarshal([]byte(doc), &holder); err != nil {
		t.Fatal(err)
	}
	if holder.Cert != want || holder.Ptr == nil || *holder.Ptr != want || holder.Other != 3 {
		t.Errorf("decoded %+v", holder)
	}
	// null leaves the value untouched (absent), like encoding/json does.
	var c Certificate
	if err := json.Unmarshal([]byte("null"), &c); err != nil || c != (Certificate{}) {
		t.Errorf("null: %v %+v", err, c)
	}
	if err := json.Unmarshal([]byte(`{"certificate":{"serial":1.5}}`), &holder); err == nil {
		t.Error("bad embedded certificate accepted")
	}
	// A failed UnmarshalJSON leaves the receiver unchanged.
	c = want
	if err := c.UnmarshalJSON([]byte(`{"serial":1}`)); err == nil || c != want {
		t.Errorf("failed UnmarshalJSON: %v, changed=%v", err, c != want)
	}
	if err := c.UnmarshalJSON([]byte(v.Certificate.CanonicalJSON)); err != nil || c != want {
		t.Errorf("UnmarshalJSON: %v", err)
	}
}

func TestDecodeHex(t *testing.T) {
	if _, err := DecodeHex32(hexA); err != nil {
		t.Error(err)
	}
	if _, err := DecodeHex32(strings.ToUpper(hexA)); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"", hexA[:63], hexA[:62], hexA + "a", hexA + "aa", hexA[:62] + "g0", hexA[:62] + " a"} {
		if _, err := DecodeHex32(s); err == nil {
			t.Errorf("DecodeHex32(%q) accepted", s)
		}
	}
	if _, err := DecodeHex64(hexA + hexA); err != nil {
		t.Error(err)
	}
	if _, err := DecodeHex64(hexA); err == nil {
		t.Error("DecodeHex64 accepted 64 characters")
	}
}
