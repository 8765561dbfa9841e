package httpapi

import (
	"strings"
	"testing"

	"github.com/commucat/commucat/internal/canonjson"
)

func friendsBody(n int, mutate func(i int, f map[string]any)) string {
	list := make([]map[string]any, n)
	for i := range list {
		list[i] = map[string]any{"user_id": "user-" + itoa(i)}
		if mutate != nil {
			mutate(i, list[i])
		}
	}
	b := strings.Builder{}
	b.WriteString(`{"friends":[`)
	for i, f := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(mustJSONString(f))
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestFriends(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.MaxRequestBody = 1 << 20 })
	w := e.do("GET", "/api/friends", bearer(e.tok), "")
	okJSON(t, w)
	if w.Body.String() != `{"friends":[]}` {
		t.Fatal(w.Body.String())
	}

	body := `{"friends":[{"user_id":"u1","handle":"bob","alias":"Bobby \u00e9 </>","extra":1},{"user_id":"u2","handle":null},{"user_id":"u1"}],"x":true}`
	want := `{"friends":[{"alias":"Bobby é </>","handle":"bob","user_id":"u1"},{"alias":null,"handle":null,"user_id":"u2"},{"alias":null,"handle":null,"user_id":"u1"}]}`
	w = e.do("PUT", "/api/friends", bearer(e.tok), body)
	okJSON(t, w)
	if w.Body.String() != want {
		t.Fatalf("PUT %s", w.Body.String())
	}
	w = e.do("GET", "/api/friends", bearer(e.tok), "")
	if w.Body.String() != want {
		t.Fatalf("GET %s", w.Body.String())
	}
	stored, err := e.st.GetUserBlob(t.Context(), e.user.ID, "friends")
	if err != nil || stored != `[{"alias":"Bobby é </>","handle":"bob","user_id":"u1"},{"alias":null,"handle":null,"user_id":"u2"},{"alias":null,"handle":null,"user_id":"u1"}]` {
		t.Fatalf("stored %q %v", stored, err)
	}
	// Another user's list is separate.
	bob := e.mkUser("bob")
	e.mkDevice(bob.ID, "dev-bob", nil)
	tokBob := e.mkSession(bob.ID, "dev-bob")
	if w := e.do("GET", "/api/friends", bearer(tokBob), ""); w.Body.String() != `{"friends":[]}` {
		t.Fatal(w.Body.String())
	}

	// Limits.
	okJSON(t, e.do("PUT", "/api/friends", bearer(e.tok), friendsBody(512, nil)))
	if n := len(okJSON(t, e.do("GET", "/api/friends", bearer(e.tok), ""))["friends"].([]any)); n != 512 {
		t.Fatal(n)
	}
	h256 := strings.Repeat("h", 254) + "é" // 256 bytes
	okJSON(t, e.do("PUT", "/api/friends", bearer(e.tok), friendsBody(1, func(_ int, f map[string]any) { f["handle"] = h256; f["alias"] = h256 })))

	cases := []struct{ name, body, detail string }{
		{"513 entries", friendsBody(513, nil), "too many friends"},
		{"513 invalid entries", friendsBody(513, func(_ int, f map[string]any) { delete(f, "user_id") }), "too many friends"},
		{"missing user_id", friendsBody(3, func(i int, f map[string]any) {
			if i == 2 {
				delete(f, "user_id")
			}
		}), "user_id is required"},
		{"null user_id", `{"friends":[{"user_id":null}]}`, "user_id is required"},
		{"blank user_id", `{"friends":[{"user_id":"  "}]}`, "user_id is required"},
		{"empty user_id", `{"friends":[{"user_id":""}]}`, "user_id is required"},
		{"numeric user_id", `{"friends":[{"user_id":7}]}`, "user_id is required"},
		{"handle 257 bytes", friendsBody(1, func(_ int, f map[string]any) { f["handle"] = h256 + "x" }), "handle or alias too long"},
		{"alias 257 bytes", friendsBody(1, func(_ int, f map[string]any) { f["alias"] = strings.Repeat("a", 257) }), "handle or alias too long"},
		{"handle not a string", `{"friends":[{"user_id":"u","handle":1}]}`, "invalid JSON payload"},
		{"alias not a string", `{"friends":[{"user_id":"u","alias":{}}]}`, "invalid JSON payload"},
		{"entry not an object", `{"friends":["u1"]}`, "invalid JSON payload"},
		{"friends missing", `{}`, "invalid JSON payload"},
		{"friends null", `{"friends":null}`, "invalid JSON payload"},
		{"friends not an array", `{"friends":{"user_id":"u"}}`, "invalid JSON payload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantBadRequest(t, e.do("PUT", "/api/friends", bearer(e.tok), c.body), c.detail)
		})
	}
	// The failed PUTs left the list alone.
	if n := len(okJSON(t, e.do("GET", "/api/friends", bearer(e.tok), ""))["friends"].([]any)); n != 1 {
		t.Fatal(n)
	}
	// An empty list replaces the stored one.
	okJSON(t, e.do("PUT", "/api/friends", bearer(e.tok), `{"friends":[]}`))
	if w := e.do("GET", "/api/friends", bearer(e.tok), ""); w.Body.String() != `{"friends":[]}` {
		t.Fatal(w.Body.String())
	}
	wantUnauthorized(t, e.do("GET", "/api/friends", "", ""))
	wantUnauthorized(t, e.do("PUT", "/api/friends", "", `{"friends":[]}`))
}

func mustJSONString(v any) string {
	b, err := canonjson.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
