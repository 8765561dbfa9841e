package cli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/commucat/commucat/ccp"
)

type golden struct {
	Encoder []struct {
		Name       string `json:"name"`
		Type       uint8  `json:"type"`
		Channel    uint32 `json:"channel"`
		Sequence   uint32 `json:"sequence"`
		PayloadHex string `json:"payload_hex"`
		Hex        string `json:"hex"`
	} `json:"encoder"`
	Decoder []struct {
		Name  string `json:"name"`
		Input string `json:"input"`
		V1    []struct {
			Error string `json:"error"`
		} `json:"v1"`
		V2 []struct {
			Error string `json:"error"`
		} `json:"v2"`
	} `json:"decoder"`
}

func loadGolden(t *testing.T) golden {
	b, err := os.ReadFile("../../ccp/testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// The encoder vectors of §2.8 go through `frame decode` and back through
// `frame encode` byte for byte.
func TestFrameVectorsBothWays(t *testing.T) {
	for _, v := range loadGolden(t).Encoder {
		if v.Hex == "" {
			continue
		}
		out, errs, code := run(t, v.Hex+"\n", "frame", "decode")
		if code != 0 || errs != "" {
			t.Fatalf("%s: decode exit %d %s", v.Name, code, errs)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(out), &obj); err != nil {
			t.Fatalf("%s: %v in %s", v.Name, err, out)
		}
		if obj["ok"] != true || obj["code"] != float64(v.Type) || obj["channel_id"] != float64(v.Channel) || obj["sequence"] != float64(v.Sequence) || obj["type"] != ccp.FrameType(v.Type).String() {
			t.Fatalf("%s: %s", v.Name, out)
		}
		if obj["consumed"] != float64(len(v.Hex)/2) {
			t.Fatalf("%s: consumed %v", v.Name, obj["consumed"])
		}
		back, errs, code := run(t, out, "frame", "encode")
		if code != 0 || strings.TrimSpace(back) != v.Hex {
			t.Fatalf("%s: encode gave %q (exit %d, %s), want %s", v.Name, back, code, errs, v.Hex)
		}
	}
}

// The output format of §12.2, exactly.
func TestFrameDecodeExactOutput(t *testing.T) {
	out, _, _ := run(t, "0805070c0401020304\n", "frame", "decode")
	want := `{"channel_id":7,"class":"opaque","code":5,"consumed":9,"ok":true,"payload_hex":"01020304","payload_len":4,"sequence":12,"type":"MSG"}` + "\n"
	if out != want {
		t.Fatalf("got %s", out)
	}
	out, _, _ = run(t, "0D0607030 97B2261636B223A357D\n", "frame", "decode")
	if out != `{"error":"invalid hex","offset":0,"ok":false}`+"\n" {
		t.Fatalf("space inside hex: %s", out)
	}
	out, _, _ = run(t, "0D06070309 7B2261636B223A357D\n", "frame", "decode")
	if !strings.Contains(out, "invalid hex") {
		t.Fatalf("got %s", out)
	}
	out, _, _ = run(t, "0D060703097B2261636B223A357D\n", "frame", "decode")
	if out != `{"channel_id":7,"class":"control","code":6,"consumed":14,"json":{"ack":5},"ok":true,"sequence":3,"type":"ACK"}`+"\n" {
		t.Fatalf("uppercase hex: %s", out)
	}
	for _, bad := range []string{"abc", "zz"} {
		if out, _, code := run(t, bad+"\n", "frame", "decode"); out != `{"error":"invalid hex","offset":0,"ok":false}`+"\n" || code != 0 {
			t.Fatalf("%s: %s %d", bad, out, code)
		}
	}
}

// Every decoder vector of §2.8.3 yields the specified titles, with the
// byte offset of each frame and continuation after skippable errors.
func TestFrameDecodeErrorVectors(t *testing.T) {
	for _, v := range loadGolden(t).Decoder {
		for _, strict := range []bool{false, true} {
			args := []string{"frame", "decode"}
			want := v.V1
			if strict {
				args = append(args, "--strict")
				if v.V2 != nil {
					want = v.V2
				}
			}
			out, _, code := run(t, v.Input+"\n", args...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 0 || len(lines) != len(want) {
				t.Fatalf("%s: exit %d, %d lines, want %d: %s", v.Name, code, len(lines), len(want), out)
			}
			for i, w := range want {
				var obj map[string]any
				if err := json.Unmarshal([]byte(lines[i]), &obj); err != nil {
					t.Fatal(err)
				}
				if w.Error == "" {
					if obj["ok"] != true {
						t.Fatalf("%s: %s", v.Name, lines[i])
					}
				} else if obj["ok"] != false || obj["error"] != w.Error {
					t.Fatalf("%s strict=%v: %s, want %s", v.Name, strict, lines[i], w.Error)
				}
			}
		}
	}
	// Offsets: an unknown type followed by a valid frame.
	out, _, _ := run(t, "04ff0304000805070c0401020304\n", "frame", "decode")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != `{"error":"Invalid Frame Type","offset":0,"ok":false}` || !strings.Contains(lines[1], `"ok":true`) {
		t.Fatalf("got %s", out)
	}
	out, _, _ = run(t, "0805070c040102030400\n", "frame", "decode")
	if !strings.Contains(out, `{"error":"Malformed Frame","offset":9,"ok":false}`) {
		t.Fatalf("offset of the second frame: %s", out)
	}
}

func TestFrameEncodeErrors(t *testing.T) {
	cases := map[string]string{
		`{"type":"MSG","channel_id":4294967296,"sequence":1,"payload_hex":""}`: "Channel Id Too Large",
		`{"type":"MSG","channel_id":1,"sequence":4294967296,"payload_hex":""}`: "Sequence Too Large",
		`{"code":20,"channel_id":1,"sequence":1}`:                              "Invalid Frame Type",
		`{"type":"NOPE","channel_id":1,"sequence":1}`:                          "Invalid Frame Type",
		`{"type":"JOIN","channel_id":1,"sequence":1,"payload_hex":"abcd"}`:     "Invalid Control Json",
		`not json`: "invalid JSON",
	}
	for in, want := range cases {
		out, _, code := run(t, in+"\n", "frame", "encode")
		if code != ExitFail || !strings.Contains(out, `"ok":false`) || !strings.Contains(out, want) {
			t.Errorf("%s: exit %d %s, want %s", in, code, out, want)
		}
	}
	big := `{"type":"JOIN","channel_id":1,"sequence":1,"payload_hex":"` + hex.EncodeToString(bytes.Repeat([]byte{'1'}, ccp.MaxControlPayload+1)) + `"}`
	if out, _, code := run(t, big+"\n", "frame", "encode"); code != ExitFail || !strings.Contains(out, "Control Too Large") {
		t.Errorf("control too large: %s", out)
	}
	// code wins over type; json is serialised canonically.
	out, _, code := run(t, `{"type":"MSG","code":6,"channel_id":7,"sequence":3,"json":{ "ack" : 5 }}`+"\n", "frame", "encode")
	if code != 0 || strings.TrimSpace(out) != "0d060703097b2261636b223a357d" {
		t.Errorf("got %s %d", out, code)
	}
	// One bad line does not stop the others; the exit code reports it.
	out, _, code = run(t, "{}\n"+`{"type":"MSG","channel_id":7,"sequence":12,"payload_hex":"01020304"}`+"\n", "frame", "encode")
	if code != ExitFail || !strings.HasSuffix(out, "0805070c0401020304\n") {
		t.Errorf("got %s %d", out, code)
	}
}

func TestUsage(t *testing.T) {
	_, errs, code := run(t, "")
	if code != ExitUsage || !strings.HasPrefix(errs, "usage: commucat-cli <command>") {
		t.Fatalf("no command: %d %q", code, errs)
	}
	_, errs, code = run(t, "", "bogus")
	if code != ExitUsage || errs != "unknown command: bogus\n" {
		t.Fatalf("unknown command: %d %q", code, errs)
	}
}

func FuzzDecodeFrameLine(f *testing.F) {
	f.Add([]byte("0805070c0401020304"))
	f.Add([]byte("04ff0304000805070c0401020304"))
	f.Fuzz(func(t *testing.T, line []byte) {
		for _, obj := range DecodeFrameLine(line, ccp.V1) {
			if !json.Valid(obj) {
				t.Fatalf("invalid JSON output %s", obj)
			}
			// Every successfully decoded frame encodes back to a frame.
			if bytes.Contains(obj, []byte(`"ok":true`)) {
				if _, err := EncodeFrameObject(obj); err != nil {
					t.Fatalf("%s does not encode: %v", obj, err)
				}
			}
		}
	})
}
