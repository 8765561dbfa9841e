package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"testing"

	"filippo.io/edwards25519"
	"lukechampine.com/blake3"
)

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = b
	return nil
}

func (h hexBytes) a32(t testing.TB) [32]byte {
	t.Helper()
	if len(h) != 32 {
		t.Fatalf("vector value has %d bytes, want 32", len(h))
	}
	return [32]byte(h)
}

func (h hexBytes) a64(t testing.TB) [64]byte {
	t.Helper()
	if len(h) != 64 {
		t.Fatalf("vector value has %d bytes, want 64", len(h))
	}
	return [64]byte(h)
}

type vectors struct {
	FromSeed []struct {
		Seed, Secret, Public hexBytes
	} `json:"from_seed"`
	X25519 struct {
		Private, Public hexBytes
	} `json:"x25519"`
	ZKP struct {
		DeviceSeed      hexBytes `json:"device_seed"`
		DevicePublic    hexBytes `json:"device_public"`
		ClientStatic    hexBytes `json:"client_static"`
		Domain          string   `json:"domain"`
		DeviceID        string   `json:"device_id"`
		Ctx             hexBytes `json:"ctx"`
		Random          hexBytes `json:"random"`
		R               hexBytes `json:"r"`
		Commitment      hexBytes `json:"commitment"`
		ChallengeOutput hexBytes `json:"challenge_output"`
		C               hexBytes `json:"c"`
		Response        hexBytes `json:"response"`
	} `json:"zkp"`
	Certificate struct {
		CASeed        hexBytes `json:"ca_seed"`
		Serial        uint64   `json:"serial"`
		UserID        string   `json:"user_id"`
		DeviceID      string   `json:"device_id"`
		PublicKey     hexBytes `json:"public_key"`
		IssuedAt      int64    `json:"issued_at"`
		ExpiresAt     int64    `json:"expires_at"`
		SignedBytes   string   `json:"signed_bytes"`
		Signature     hexBytes `json:"signature"`
		CanonicalJSON string   `json:"canonical_json"`
	} `json:"certificate"`
	PairClaim struct {
		Code       string   `json:"code"`
		DeviceSeed hexBytes `json:"device_seed"`
		Message    hexBytes `json:"message"`
		Signature  hexBytes `json:"signature"`
	} `json:"pair_claim"`
	AdminToken struct {
		Salt  hexBytes `json:"salt"`
		Token string   `json:"token"`
		Hash  hexBytes `json:"hash"`
	} `json:"admin_token"`
	Federation struct {
		CASeed      hexBytes `json:"ca_seed"`
		EventID     string   `json:"event_id"`
		Origin      string   `json:"origin"`
		Scope       string   `json:"scope"`
		CreatedAtNs int64    `json:"created_at_ns"`
		Payload     string   `json:"payload"`
		Digest      hexBytes `json:"digest"`
		Signature   hexBytes `json:"signature"`
	} `json:"federation"`
	Ledger struct {
		Records []struct {
			DigestOf   string   `json:"digest_of"`
			Digest     hexBytes `json:"digest"`
			Metadata   string   `json:"metadata"`
			Prev       hexBytes `json:"prev"`
			RecordedAt string   `json:"recorded_at"`
			Seq        uint64   `json:"seq"`
			Hash       hexBytes `json:"hash"`
			Line       string   `json:"line"`
		} `json:"records"`
	} `json:"ledger"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors // "section" and "comment" members are documentation only
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// seqBytes returns the bytes from, from+1, ..., from+n-1 (the "000102…"
// notation of the spec).
func seqBytes(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func mustFromSeed(t testing.TB, seed []byte) ed25519.PrivateKey {
	t.Helper()
	k, err := FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVectorsFromSeed(t *testing.T) {
	v := loadVectors(t)
	if len(v.FromSeed) != 2 {
		t.Fatalf("want 2 from_seed vectors, have %d", len(v.FromSeed))
	}
	for i, want := range []byte{0x00, 0x20} {
		if !bytes.Equal(v.FromSeed[i].Seed, seqBytes(want, 32)) {
			t.Fatalf("vector %d: seed is not the byte range starting at %#x", i, want)
		}
	}
	for _, fs := range v.FromSeed {
		k := mustFromSeed(t, fs.Seed)
		if got := k.Seed(); !bytes.Equal(got, fs.Secret) {
			t.Errorf("from_seed(%x) secret = %x, want %x", fs.Seed, got, fs.Secret)
		}
		if got := k.Public().(ed25519.PublicKey); !bytes.Equal(got, fs.Public) {
			t.Errorf("from_seed(%x) public = %x, want %x", fs.Seed, got, fs.Public)
		}
		if PublicKey32(k) != fs.Public.a32(t) {
			t.Errorf("PublicKey32 mismatch")
		}
	}
	ca, err := DeviceCA(v.FromSeed[0].Seed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca.Seed(), v.FromSeed[0].Secret) {
		t.Errorf("DeviceCA secret = %x", ca.Seed())
	}
}

func TestFromSeedLength(t *testing.T) {
	if _, err := FromSeed(make([]byte, 31)); err == nil {
		t.Error("FromSeed accepted a 31-byte seed")
	}
	if _, err := FromSeed(nil); err == nil {
		t.Error("FromSeed accepted a nil seed")
	}
	k, err := FromSeed(make([]byte, 64))
	if err != nil {
		t.Fatal(err)
	}
	want := blake3.Sum256(make([]byte, 64))
	if !bytes.Equal(k.Seed(), want[:]) {
		t.Error("FromSeed of a 64-byte seed is not BLAKE3(seed)")
	}
}

func TestVectorX25519(t *testing.T) {
	v := loadVectors(t)
	if !bytes.Equal(v.X25519.Private, seqBytes(0x40, 32)) {
		t.Fatal("x25519 private is not 404142…5f")
	}
	got, err := X25519Public(v.X25519.Private.a32(t))
	if err != nil {
		t.Fatal(err)
	}
	if got != v.X25519.Public.a32(t) {
		t.Errorf("X25519Public = %x, want %x", got, v.X25519.Public)
	}
	if got != v.ZKP.ClientStatic.a32(t) {
		t.Errorf("X25519Public = %x, want client_static %x", got, v.ZKP.ClientStatic)
	}
}

func TestVectorZKP(t *testing.T) {
	v := loadVectors(t)
	z := &v.ZKP
	if !bytes.Equal(z.Random, seqBytes(0x60, 64)) {
		t.Fatal("zkp random is not 606162…9f")
	}
	priv := mustFromSeed(t, z.DeviceSeed)
	pub := PublicKey32(priv)
	if pub != z.DevicePublic.a32(t) {
		t.Fatalf("device public = %x, want %x", pub, z.DevicePublic)
	}
	cs := z.ClientStatic.a32(t)

	ctx := ZKPContext(z.Domain, z.DeviceID, pub, cs)
	if len(ctx) != 119 {
		t.Errorf("len(ctx) = %d, want 119", len(ctx))
	}
	if !bytes.Equal(ctx, z.Ctx) {
		t.Errorf("ctx = %x, want %x", ctx, z.Ctx)
	}

	rd := bytes.NewReader(z.Random)
	p, err := Prove(priv, z.Domain, z.DeviceID, cs, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Len() != 0 {
		t.Errorf("Prove left %d random bytes unread, want exactly 64 read", rd.Len())
	}
	if p.Commitment != z.Commitment.a32(t) {
		t.Errorf("R = %x, want %x", p.Commitment, z.Commitment)
	}
	if out := zkpChallengeOutput(ctx, pub, p.Commitment); out != z.ChallengeOutput.a64(t) {
		t.Errorf("challenge output = %x, want %x", out, z.ChallengeOutput)
	}
	if c := zkpChallenge(ctx, pub, p.Commitment); !bytes.Equal(c.Bytes(), z.C) {
		t.Errorf("c = %x, want %x", c.Bytes(), z.C)
	}
	if p.Response != z.Response.a32(t) {
		t.Errorf("s = %x, want %x", p.Response, z.Response)
	}
	if err := VerifyProof(p, z.Domain, z.DeviceID, pub, cs); err != nil {
		t.Errorf("VerifyProof(vector) = %v", err)
	}
	// The spec's values, independently of Prove.
	spec := Proof{Commitment: z.Commitment.a32(t), Response: z.Response.a32(t)}
	if err := VerifyProof(spec, z.Domain, z.DeviceID, pub, cs); err != nil {
		t.Errorf("VerifyProof(spec values) = %v", err)
	}
}

func TestVectorZKPNonce(t *testing.T) {
	// r of §4.7 is the 64 random bytes reduced mod ℓ; R = r·B.
	v := loadVectors(t)
	r, err := edwards25519.NewScalar().SetUniformBytes(v.ZKP.Random)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Bytes(), v.ZKP.R) {
		t.Errorf("r = %x, want %x", r.Bytes(), v.ZKP.R)
	}
	if got := new(edwards25519.Point).ScalarBaseMult(r).Bytes(); !bytes.Equal(got, v.ZKP.Commitment) {
		t.Errorf("r·B = %x, want %x", got, v.ZKP.Commitment)
	}
}

func vectorCertificate(t testing.TB, v *vectors) (Certificate, ed25519.PrivateKey) {
	t.Helper()
	cv := &v.Certificate
	ca := mustFromSeed(t, cv.CASeed)
	c := IssueCertificate(ca, cv.Serial, cv.UserID, cv.DeviceID, cv.PublicKey.a32(t), cv.IssuedAt)
	return c, ca
}

func TestVectorCertificate(t *testing.T) {
	v := loadVectors(t)
	cv := &v.Certificate
	if !bytes.Equal(cv.CASeed, seqBytes(0, 32)) {
		t.Fatal("ca_seed is not 000102…1f")
	}
	c, ca := vectorCertificate(t, v)
	if c.Serial != 12345678901234567890 {
		t.Fatalf("serial = %d", c.Serial)
	}
	if c.ExpiresAt != cv.ExpiresAt {
		t.Errorf("expires_at = %d, want %d", c.ExpiresAt, cv.ExpiresAt)
	}
	if c.Issuer != PublicKey32(ca) {
		t.Errorf("issuer = %x", c.Issuer)
	}
	if got := string(c.SignedBytes()); got != cv.SignedBytes {
		t.Errorf("signed bytes =\n%s\nwant\n%s", got, cv.SignedBytes)
	}
	if c.Signature != cv.Signature.a64(t) {
		t.Errorf("signature = %x, want %x", c.Signature, cv.Signature)
	}
	if err := c.Verify(PublicKey32(ca), cv.DeviceID, cv.UserID, cv.IssuedAt+1); err != nil {
		t.Errorf("Verify = %v", err)
	}
	js, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(js) != cv.CanonicalJSON {
		t.Errorf("MarshalJSON =\n%s\nwant\n%s", js, cv.CanonicalJSON)
	}
	// encoding/json uses MarshalJSON too (value and pointer).
	if js2, _ := json.Marshal(c); string(js2) != cv.CanonicalJSON {
		t.Errorf("json.Marshal = %s", js2)
	}
	if js3, _ := json.Marshal(&c); string(js3) != cv.CanonicalJSON {
		t.Errorf("json.Marshal(&c) = %s", js3)
	}
	back, err := ParseCertificate(js)
	if err != nil {
		t.Fatal(err)
	}
	if back != c {
		t.Errorf("round trip: %+v != %+v", back, c)
	}
	// The signed-bytes object itself parses too if signature is added: the
	// parser does not care about member order.
	unsorted := cv.SignedBytes[:len(cv.SignedBytes)-1] + `,"signature":"` + hex.EncodeToString(cv.Signature) + `"}`
	back, err = ParseCertificate([]byte(unsorted))
	if err != nil || back != c {
		t.Errorf("ParseCertificate(unsorted) = %+v, %v", back, err)
	}
}

func TestVectorPairClaim(t *testing.T) {
	v := loadVectors(t)
	pc := &v.PairClaim
	priv := mustFromSeed(t, pc.DeviceSeed)
	m := PairClaimMessage(pc.Code, PublicKey32(priv))
	if len(m) != 64 {
		t.Errorf("len(M) = %d, want 64", len(m))
	}
	if !bytes.Equal(m, pc.Message) {
		t.Errorf("M = %x, want %x", m, pc.Message)
	}
	if sig := ed25519.Sign(priv, m); !bytes.Equal(sig, pc.Signature) {
		t.Errorf("signature = %x, want %x", sig, pc.Signature)
	}
	if !ed25519.Verify(priv.Public().(ed25519.PublicKey), pc.Message, pc.Signature) {
		t.Error("spec signature does not verify")
	}
}

func TestVectorAdminToken(t *testing.T) {
	v := loadVectors(t)
	at := &v.AdminToken
	if !bytes.Equal(at.Salt, seqBytes(0, 16)) {
		t.Fatal("salt is not 000102…0f")
	}
	salt := [16]byte(at.Salt)
	if got := AdminTokenHash(salt, at.Token); got != at.Hash.a32(t) {
		t.Errorf("AdminTokenHash = %x, want %x", got, at.Hash)
	}
	if !AdminTokenMatches(salt, at.Hash.a32(t), at.Token) {
		t.Error("AdminTokenMatches(correct token) = false")
	}
	if AdminTokenMatches(salt, at.Hash.a32(t), at.Token+"x") {
		t.Error("AdminTokenMatches(wrong token) = true")
	}
	other := salt
	other[0] ^= 1
	if AdminTokenMatches(other, at.Hash.a32(t), at.Token) {
		t.Error("AdminTokenMatches(wrong salt) = true")
	}
}

func TestVectorFederation(t *testing.T) {
	v := loadVectors(t)
	f := &v.Federation
	d := FederationDigest(f.EventID, f.Origin, f.Scope, f.CreatedAtNs, []byte(f.Payload))
	if d != f.Digest.a32(t) {
		t.Errorf("digest = %x, want %x", d, f.Digest)
	}
	ca := mustFromSeed(t, f.CASeed)
	sig := SignFederationEvent(ca, d)
	if sig != f.Signature.a64(t) {
		t.Errorf("signature = %x, want %x", sig, f.Signature)
	}
	pub := PublicKey32(ca)
	if !VerifyFederationEvent(pub, f.Digest.a32(t), f.Signature.a64(t)) {
		t.Error("spec signature does not verify")
	}
	bad := sig
	bad[0] ^= 1
	if VerifyFederationEvent(pub, d, bad) {
		t.Error("tampered signature verifies")
	}
	d2 := d
	d2[31] ^= 1
	if VerifyFederationEvent(pub, d2, sig) {
		t.Error("signature verifies for another digest")
	}
}

func TestVectorLedger(t *testing.T) {
	v := loadVectors(t)
	recs := v.Ledger.Records
	if len(recs) != 2 {
		t.Fatalf("want 2 ledger records, have %d", len(recs))
	}
	var prev [32]byte // first record: 32 zero bytes
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Errorf("record %d: seq %d", i, r.Seq)
		}
		if r.Prev.a32(t) != prev {
			t.Errorf("record %d: prev %x, want %x", i, r.Prev, prev)
		}
		if d := blake3.Sum256([]byte(r.DigestOf)); d != r.Digest.a32(t) {
			t.Errorf("record %d: BLAKE3(%q) = %x, want %x", i, r.DigestOf, d, r.Digest)
		}
		h := LedgerHash(prev, r.Seq, r.RecordedAt, r.Digest.a32(t), []byte(r.Metadata))
		if h != r.Hash.a32(t) {
			t.Errorf("record %d: hash = %x, want %x", i, h, r.Hash)
		}
		// The spec's record line is the canonical JSON of these fields.
		var line []byte
		line = append(line, `{"digest":"`...)
		line = appendHex(line, r.Digest)
		line = append(line, `","hash":"`...)
		line = appendHex(line, h[:])
		line = append(line, `","metadata":`...)
		line = append(line, r.Metadata...)
		line = append(line, `,"prev":"`...)
		line = appendHex(line, prev[:])
		line = append(line, `","recorded_at":"`...)
		line = append(line, r.RecordedAt...)
		line = append(line, `","seq":`...)
		line = strconv.AppendUint(line, r.Seq, 10)
		line = append(line, '}')
		if string(line) != r.Line {
			t.Errorf("record %d line =\n%s\nwant\n%s", i, line, r.Line)
		}
		prev = h
	}
}

func TestPQBundleMessage(t *testing.T) {
	var prekey [32]byte
	for i := range prekey {
		prekey[i] = byte(i)
	}
	kem := bytes.Repeat([]byte{0xab}, 1184)
	m := PQBundleMessage(prekey, kem)
	if len(m) != 21+32+1184 {
		t.Fatalf("len = %d", len(m))
	}
	if string(m[:21]) != "commucat:pq-bundle:v1" || !bytes.Equal(m[21:53], prekey[:]) || !bytes.Equal(m[53:], kem) {
		t.Errorf("PQBundleMessage layout wrong: %x", m[:60])
	}
	ca := mustFromSeed(t, seqBytes(0, 32))
	sig := ed25519.Sign(ca, m)
	if !ed25519.Verify(ca.Public().(ed25519.PublicKey), PQBundleMessage(prekey, kem), sig) {
		t.Error("pq bundle signature does not verify")
	}
}
