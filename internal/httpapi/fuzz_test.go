package httpapi

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/commucat/commucat/internal/canonjson"
)

// checkAnswer asserts the invariants of every REST answer: 200 with a
// canonical JSON body, or a 4xx with a well-formed problem+json body.
// Arbitrary bodies never cause a 5xx.
func checkAnswer(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("cache-control %q", w.Header().Get("Cache-Control"))
	}
	if w.Code == 200 {
		if w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("content-type %q", w.Header().Get("Content-Type"))
		}
		v, err := canonjson.Parse(w.Body.Bytes())
		if err != nil || v.Kind != canonjson.Object || string(v.Canonical()) != w.Body.String() {
			t.Fatalf("body %q", w.Body.String())
		}
		return
	}
	if w.Code < 400 || w.Code > 499 {
		t.Fatalf("status %d: %s", w.Code, w.Body.String())
	}
	if w.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("content-type %q", w.Header().Get("Content-Type"))
	}
	var p struct {
		Detail *string `json:"detail"`
		Status int     `json:"status"`
		Title  string  `json:"title"`
		Type   string  `json:"type"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", w.Body.String(), err)
	}
	if p.Status != w.Code || p.Title == "" || p.Type != "about:blank" || (p.Detail != nil && *p.Detail == "") {
		t.Fatalf("problem body %q", w.Body.String())
	}
	if !canonjson.Valid(w.Body.Bytes()) {
		t.Fatalf("problem body %q", w.Body.String())
	}
}

func fuzzRoute(f *testing.F, method, path string, seeds []string, setup func(e *env)) {
	e := newEnv(f, nil)
	if setup != nil {
		setup(e)
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{"", "{}", "null", "[]", "{", `{"a":1,"a":2}`, "\xff", `"x"`, "1e999999"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serve(e.api, context.Background(), method, path, bearer(e.tok), string(body))
		checkAnswer(t, w)
	})
}

func FuzzPair(f *testing.F) {
	fuzzRoute(f, "POST", "/api/pair", []string{`{"ttl":60}`, `{"ttl":0}`, `{"ttl":-5}`, `{"ttl":"x"}`, `{"ttl":1e3}`, `{"ttl":99999999999999999999999999}`}, nil)
}

func FuzzPairClaim(f *testing.F) {
	key := vectorKey(f)
	fuzzRoute(f, "POST", "/api/pair/claim", []string{
		claimBody(f, "ABCD-EF23", key, nil),
		`{"pair_code":"abcd-ef24"}`,
		`{"pair_code":"ABCD-EF25","device_public":"4edf7c43ea7810633a5ce4f6d1ace00f94ec937ab75c56bf9675f48c112895d2","signature":"00"}`,
		`{"pair_code":" ","device_name":"x"}`,
		`{"pair_code":"ZZZZ-ZZZZ"}`,
		`{"pair_code":"ABCD-EF25","device_public":"0100000000000000000000000000000000000000000000000000000000000000","signature":"` + string(make([]byte, 0)) + `"}`,
	}, func(e *env) {
		for _, c := range []string{"ABCD-EF23", "ABCD-EF24", "ABCD-EF25"} {
			e.mkCode(c, t0.Add(time.Hour), 0)
		}
	})
}

func FuzzRevoke(f *testing.F) {
	fuzzRoute(f, "POST", "/api/devices/revoke", []string{`{"device_id":"dev-b"}`, `{"device_id":"dev-a"}`, `{"device_id":"dev-bob"}`, `{"device_id":""}`, `{"device_id":1}`},
		func(e *env) {
			e.mkDevice(e.user.ID, "dev-b", nil)
			bob := e.mkUser("bob")
			e.mkDevice(bob.ID, "dev-bob", nil)
		})
}

func FuzzFriends(f *testing.F) {
	fuzzRoute(f, "PUT", "/api/friends", []string{
		`{"friends":[]}`,
		`{"friends":[{"user_id":"u","handle":"h","alias":"a"}]}`,
		`{"friends":[{"user_id":""}]}`,
		`{"friends":[1]}`,
		`{"friends":null}`,
		`{"friends":[{"user_id":"u","handle":"\u0000\ud800"}]}`,
	}, nil)
}

func FuzzAssist(f *testing.F) {
	fuzzRoute(f, "POST", "/api/p2p/assist", []string{
		`{"peer_hint":null,"paths":null,"prefer_reality":null,"fec":null,"min_paths":null}`,
		`{"paths":[{"address":"a","id":"x","port":443,"priority":-1,"reality_fingerprint":"` + "abababababababababababababababababababababababababababababababab" + `","reality_pem":"p"}],"prefer_reality":true}`,
		`{"paths":[{"address":"a"},{"address":"b","id":"path-1"}]}`,
		`{"fec":{"mtu":256,"repair_overhead":1e-300}}`,
		`{"fec":{"mtu":65535,"repair_overhead":-0}}`,
		`{"min_paths":8,"paths":[{"address":" "}]}`,
	}, nil)
}
