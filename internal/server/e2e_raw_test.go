package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/servertest"
)

// rawStream is a hand-driven POST /connect stream.
type rawStream struct {
	t    *testing.T
	w    *io.PipeWriter
	resp *http.Response
	rd   *ccp.Reader
}

func h2Client(s *servertest.Server, proto string) *http.Client {
	tr := &http.Transport{TLSClientConfig: s.TLS().Clone(), ForceAttemptHTTP2: proto == "h2"}
	var p http.Protocols
	if proto == "h2" {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	tr.Protocols = &p
	return &http.Client{Transport: tr}
}

func openRaw(t *testing.T, s *servertest.Server, proto string) *rawStream {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/connect", pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	resp, err := h2Client(s, proto).Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	return &rawStream{t: t, w: pw, resp: resp, rd: ccp.NewReader(resp.Body, ccp.V1)}
}

func (r *rawStream) write(t ccp.FrameType, ch, seq uint32, payload []byte) {
	b, _ := ccp.AppendFrame(nil, ccp.Frame{Type: t, Channel: ch, Sequence: seq, Payload: payload})
	if _, err := r.w.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// TestConnectHeadersBeforeBody checks §14 item 1 on HTTP/2 and a v1 XK
// handshake plus a MSG exchange (item 2 on HTTP/1.1).
func TestConnectRawV1(t *testing.T) {
	s := servertest.Start(t, nil)
	for _, proto := range []string{"h2", "http/1.1"} {
		t.Run(proto, func(t *testing.T) {
			r := openRaw(t, s, proto)
			if r.resp.StatusCode != 200 || r.resp.Header.Get("Content-Type") != "application/octet-stream" || r.resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatalf("status %d headers %v", r.resp.StatusCode, r.resp.Header)
			}
			wantProto := map[string]int{"h2": 2, "http/1.1": 1}[proto]
			if r.resp.ProtoMajor != wantProto {
				t.Fatalf("proto %s", r.resp.Proto)
			}
			info := fetchInfo(t, s)
			dev, _ := identity.FromSeed(bytes.Repeat([]byte{9}, 32))
			var static [32]byte
			static[0] = 1
			handle := "raw-" + proto
			ch, hello, err := noiseconn.NewClientHandshake(noiseconn.ClientConfig{
				Pattern: "XK", DeviceID: "raw-dev-" + map[string]string{"h2": "a", "http/1.1": "b"}[proto], DeviceKey: dev, StaticKey: static,
				ServerStatic: info, Domain: "commucat.local", Prologue: []byte("commucat"),
				LegacyVersion: 1, Capabilities: []string{"noise", "zstd"}, User: &noiseconn.UserHint{Handle: &handle},
			})
			if err != nil {
				t.Fatal(err)
			}
			r.write(ccp.Hello, 0, 1, hello)
			f, err := r.rd.ReadFrame()
			if err != nil || f.Type != ccp.Auth || f.Sequence != 1 {
				t.Fatalf("AUTH: %v %v %s", f, err, f.Payload)
			}
			reply, err := ch.ReadAuth(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			// §14 item 46: a JOIN in the same write as the final AUTH.
			var buf []byte
			buf, _ = ccp.AppendFrame(buf, ccp.Frame{Type: ccp.Auth, Sequence: 2, Payload: reply})
			buf, _ = ccp.AppendFrame(buf, ccp.Frame{Type: ccp.Join, Channel: uint32(wantProto) + 40, Sequence: 3, Payload: []byte(`{}`)})
			if _, err := r.w.Write(buf); err != nil {
				t.Fatal(err)
			}
			f, err = r.rd.ReadFrame()
			if err != nil || f.Type != ccp.Ack || f.Sequence != 2 || f.Channel != 0 {
				t.Fatalf("handshake ACK: %v %v", f, err)
			}
			var ack map[string]any
			json.Unmarshal(f.Payload, &ack)
			if ack["handshake"] != "ok" {
				t.Fatalf("ack %s", f.Payload)
			}
			f, err = r.rd.ReadFrame()
			if err != nil || f.Type != ccp.Ack || string(f.Payload) != `{"ack":3}` || f.Sequence != 3 || f.Channel != uint32(wantProto)+40 {
				t.Fatalf("JOIN ACK: %v %v %s", f, err, f.Payload)
			}
			r.write(ccp.Msg, uint32(wantProto)+40, 4, []byte("hi"))
			f, err = r.rd.ReadFrame()
			if err != nil || string(f.Payload) != `{"ack":4}` {
				t.Fatalf("MSG ACK: %v %v", f, err)
			}
		})
	}
}

func fetchInfo(t *testing.T, s *servertest.Server) [32]byte {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: s.TLS()}}
	resp, err := c.Get(s.URL + "/api/server-info")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		NoisePublic string `json:"noise_public"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	k, err := identity.DecodeHex32(info.NoisePublic)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var _ = tls.VersionTLS13
