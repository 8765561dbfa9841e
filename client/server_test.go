package client

// A small CCP-1 test server: TLS with HTTP/2 and HTTP/1.1 (full duplex)
// POST /connect, WebSocket GET /connect, GET /api/server-info. It runs the
// real server handshake of internal/noiseconn for a fixed user and session,
// sends the handshake ACK of §4.13, then (v1 or v2 records) acknowledges
// frames, records what it received, pushes frames on demand, keeps a small
// inbox with redelivery and client ACKs (§6.7) and sends keepalive ACKs.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/canonjson"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/noiseconn"
)

const (
	testDomain  = "commucat.test"
	testUserID  = "1111111111111111111111111111111111111111111111111111111111111111"
	testSession = "2222222222222222222222222222222222222222222222222222222222222222"
)

type testServer struct {
	t     testing.TB
	hs    *httptest.Server
	url   string
	key   noiseconn.ServerKey
	ca    ed25519.PrivateKey
	caPub [32]byte
	cfg   noiseconn.ServerConfig
	quit  chan struct{}

	mu sync.Mutex
	// Settings (guarded by mu; change them with set).
	keepaliveK     int           // keepalive_interval announced in the ACK
	keepaliveEvery time.Duration // server keepalive ACKs to v2 peers (0: none)
	padding        noiseconn.Padding
	failHello      *noiseconn.HandshakeError // refuse every HELLO with this
	rejectStatus   int                       // answer /connect with this HTTP status
	stall          chan struct{}             // when set, /connect waits for it to close

	hook     func(sc *serverConn, f ccp.Frame) bool
	dropAcks bool // ignore client ACKs (as if they were lost)
	inbox    []*inboxEntry
	nextID   int
	conns    chan *serverConn
	all      []*serverConn
	resumed  []bool // for each completed TLS handshake, whether it resumed a session
}

type inboxEntry struct {
	id      int
	typ     ccp.FrameType
	channel uint32
	payload []byte
}

// serverConn is the server side of one established stream.
type serverConn struct {
	srv     *testServer
	proto   string
	pattern string
	version int
	pq      bool
	hello   *noiseconn.Hello
	cert    identity.Certificate // the certificate sent in the ACK

	firstRecvCounter uint64       // first client record counter (v2)
	recvCounter      atomic.Int64 // next expected client record counter (v2)

	wmu    sync.Mutex
	seq    uint32
	write  func([]byte) error
	sealer *noiseconn.Sealer
	closed bool

	frames     chan ccp.Frame // frames received after the handshake (not ACK/ERROR)
	acks       chan uint32    // client {"ack":n}
	keepalives atomic.Int32   // client {"keepalive":t}
	errors     chan ccp.Frame // client ERROR frames

	dmu       sync.Mutex
	delivered map[uint32]int // server sequence -> inbox id

	closeCh   chan struct{}
	closeOnce sync.Once
	ended     chan struct{}
	endErr    error // why the read side ended (io.EOF: the client ended the stream)
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	var priv [32]byte
	rand.Read(priv[:])
	pub, err := identity.X25519Public(priv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	seed := make([]byte, 32)
	rand.Read(seed)
	ca, err := identity.DeviceCA(seed)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{
		t:          t,
		key:        noiseconn.ServerKey{Version: 1, Private: priv, Public: pub, ValidAfter: now.Add(-time.Hour), RotatesAt: now.Add(24 * time.Hour), ExpiresAt: now.Add(48 * time.Hour)},
		ca:         ca,
		caPub:      identity.PublicKey32(ca),
		cfg:        noiseconn.ServerConfig{Domain: testDomain, Prologue: []byte("commucat"), Versions: []int{1, 2}, Features: noiseconn.ServerFeatures{V2: true}},
		quit:       make(chan struct{}),
		keepaliveK: 30,
		conns:      make(chan *serverConn, 64),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/server-info", s.handleInfo)
	mux.HandleFunc("/connect", s.handleConnect)
	s.hs = httptest.NewUnstartedServer(mux)
	s.hs.EnableHTTP2 = true
	s.hs.TLS = &tls.Config{VerifyConnection: func(cs tls.ConnectionState) error {
		s.mu.Lock()
		s.resumed = append(s.resumed, cs.DidResume)
		s.mu.Unlock()
		return nil
	}}
	s.hs.StartTLS()
	s.url = s.hs.URL
	t.Cleanup(s.close)
	return s
}

// tlsResumed returns, for each TLS handshake completed so far, whether it
// resumed a session.
func (s *testServer) tlsResumed() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resumed)
}

func (s *testServer) close() {
	close(s.quit)
	s.hs.CloseClientConnections()
	s.hs.Close()
}

func (s *testServer) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.hs.Certificate())
	return &tls.Config{RootCAs: pool}
}

func (s *testServer) options(id *Identity, tr Transport) Options {
	return Options{URL: s.url, TLSConfig: s.tlsConfig(), Transport: tr, Identity: id, Handle: "alice"}
}

func (s *testServer) info() map[string]any {
	return map[string]any{
		"capabilities":       s.cfg.Features.SupportedCapabilities(),
		"device_ca_public":   hex.EncodeToString(s.caPub[:]),
		"domain":             testDomain,
		"noise_keys":         []noiseconn.NoiseKeyInfo{s.key.Info()},
		"noise_public":       hex.EncodeToString(s.key.Public[:]),
		"pairing":            map[string]any{"auto_approve": true, "max_auto_devices": 0, "pairing_ttl": 300},
		"presence":           map[string]any{"ttl_seconds": 60},
		"session":            map[string]any{"keepalive_interval": s.settings().keepaliveK, "ttl_seconds": 3600},
		"supported_patterns": []string{"XK", "IK"},
		"supported_versions": s.cfg.Versions,
	}
}

func (s *testServer) handleInfo(w http.ResponseWriter, r *http.Request) {
	b, err := canonjson.Marshal(s.info())
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// set changes settings under the lock.
func (s *testServer) set(f func(s *testServer)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

// settings returns a copy of the settings.
type serverSettings struct {
	keepaliveK     int
	keepaliveEvery time.Duration
	padding        noiseconn.Padding
	failHello      *noiseconn.HandshakeError
	rejectStatus   int
	stall          chan struct{}
}

func (s *testServer) settings() serverSettings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return serverSettings{s.keepaliveK, s.keepaliveEvery, s.padding, s.failHello, s.rejectStatus, s.stall}
}

func (s *testServer) setHook(h func(sc *serverConn, f ccp.Frame) bool) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

func (s *testServer) setDropAcks(v bool) {
	s.mu.Lock()
	s.dropAcks = v
	s.mu.Unlock()
}

// addInbox queues a durable frame for the device (delivered on every
// connection until acknowledged).
func (s *testServer) addInbox(t ccp.FrameType, ch uint32, payload []byte) {
	s.mu.Lock()
	s.nextID++
	s.inbox = append(s.inbox, &inboxEntry{id: s.nextID, typ: t, channel: ch, payload: payload})
	s.mu.Unlock()
}

func (s *testServer) inboxLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inbox)
}

// nextConn waits for the next established server connection.
func (s *testServer) nextConn(t testing.TB) *serverConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(10 * time.Second):
		t.Fatal("no connection reached the server")
		return nil
	}
}

func (s *testServer) handleConnect(w http.ResponseWriter, r *http.Request) {
	set := s.settings()
	if set.stall != nil {
		select {
		case <-set.stall:
		case <-s.quit:
		}
		return
	}
	if set.rejectStatus != 0 {
		// Connection: close, or net/http's HTTP/1 server first drains up
		// to 256 KiB of the (endless) request body before answering.
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "2")
		http.Error(w, "rejected", set.rejectStatus)
		return
	}
	if r.Method == http.MethodGet {
		s.handleWS(w, r)
		return
	}
	if r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	rc := http.NewResponseController(w)
	if r.ProtoMajor == 1 {
		// §3.4: read the request body while writing the response.
		if err := rc.EnableFullDuplex(); err != nil {
			s.t.Errorf("EnableFullDuplex: %v", err)
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	s.serve(r.Context(), r.Proto, r.Body, func(b []byte) error {
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	})
}

func (s *testServer) handleWS(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		return
	}
	if ws.Subprotocol() != Subprotocol {
		s.t.Errorf("websocket subprotocol %q", ws.Subprotocol())
	}
	ws.SetReadLimit(maxWSMessage)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rs := &wsStream{c: ws, ctx: ctx, cancel: cancel}
	s.serve(ctx, "websocket", rs, func(b []byte) error {
		return ws.Write(ctx, websocket.MessageBinary, b) // one frame or record per message
	})
	ws.Close(websocket.StatusNormalClosure, "")
}

// send writes one frame with the next server sequence (inside a record in
// v2 once the ACK is out).
func (sc *serverConn) send(t ccp.FrameType, ch uint32, payload []byte) (uint32, error) {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if sc.closed {
		return 0, errors.New("server stream closed")
	}
	sc.seq++
	b, err := ccp.AppendFrame(nil, ccp.Frame{Type: t, Channel: ch, Sequence: sc.seq, Payload: payload})
	if err != nil {
		return 0, err
	}
	if sc.sealer != nil {
		if b, err = sc.sealer.AppendRecords(nil, b); err != nil {
			return 0, err
		}
	}
	return sc.seq, sc.write(b)
}

// push sends a frame to the client (tests).
func (sc *serverConn) push(t testing.TB, typ ccp.FrameType, ch uint32, payload []byte) uint32 {
	t.Helper()
	seq, err := sc.send(typ, ch, payload)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	return seq
}

func (sc *serverConn) sendError(ch uint32, title, detail string, f *ccp.Frame) {
	p := ccp.NewProblem(title, detail)
	if f != nil {
		p.SetFrameType(f.Type)
		p.SetSequence(f.Sequence)
	}
	sc.send(ccp.Error, ch, p.JSON())
}

// close ends the stream from the server side.
func (sc *serverConn) close() { sc.closeOnce.Do(func() { close(sc.closeCh) }) }

func (sc *serverConn) waitEnded(t testing.TB) error {
	t.Helper()
	select {
	case <-sc.ended:
		return sc.endErr
	case <-time.After(10 * time.Second):
		t.Fatal("server stream did not end")
		return nil
	}
}

// nextFrame returns the next frame the server received.
func (sc *serverConn) nextFrame(t testing.TB) ccp.Frame {
	t.Helper()
	select {
	case f := <-sc.frames:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("server received no frame")
		return ccp.Frame{}
	}
}

func (sc *serverConn) nextAck(t testing.TB) uint32 {
	t.Helper()
	select {
	case n := <-sc.acks:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("server received no client ACK")
		return 0
	}
}

// serve runs the handshake and the session on one stream.
func (s *testServer) serve(ctx context.Context, proto string, body io.Reader, write func([]byte) error) {
	sc := &serverConn{
		srv:       s,
		proto:     proto,
		write:     write,
		frames:    make(chan ccp.Frame, 1<<16),
		acks:      make(chan uint32, 1024),
		errors:    make(chan ccp.Frame, 64),
		delivered: make(map[uint32]int),
		closeCh:   make(chan struct{}),
		ended:     make(chan struct{}),
	}
	defer func() {
		sc.wmu.Lock()
		sc.closed = true
		sc.wmu.Unlock()
	}()
	set := s.settings()
	hsErr := func(herr *noiseconn.HandshakeError) {
		sc.send(ccp.Error, 0, herr.Problem().JSON())
	}
	rd := ccp.NewReader(body, ccp.V1)
	f, err := rd.ReadFrame()
	if err != nil {
		return
	}
	sh, herr := s.cfg.ReadHello(f, []noiseconn.ServerKey{s.key})
	if herr == nil && set.failHello != nil {
		herr = set.failHello
	}
	if herr != nil {
		hsErr(herr)
		return
	}
	sc.hello, sc.pattern = sh.Hello, sh.Hello.Pattern
	user := noiseconn.UserSnapshot{Handle: "alice", ID: testUserID, UserID: testUserID}
	auth, err := sh.WriteAuth(noiseconn.AuthInfo{Session: testSession, UserID: testUserID, User: user})
	if err != nil {
		s.t.Errorf("WriteAuth: %v", err)
		return
	}
	if _, err := sc.send(ccp.Auth, f.Channel, auth); err != nil {
		return
	}
	if f, err = rd.ReadFrame(); err != nil {
		return
	}
	sess, herr := sh.ReadClientAuth(f)
	if herr != nil {
		hsErr(herr)
		return
	}
	sc.version, sc.pq = sess.Version, sess.PQ

	// The certificate: the presented one when still valid for long, else a
	// new one (§4.8).
	now := time.Now().Unix()
	hello := sh.Hello
	if pc := hello.Certificate; pc != nil && noiseconn.CheckCertificate(pc, s.caPub, hello.DeviceID, testUserID, now) == nil &&
		pc.PublicKey == hello.DevicePublic && pc.ExpiresAt > now+7*86400 {
		sc.cert = *pc
	} else {
		var serial [8]byte
		rand.Read(serial[:])
		sc.cert = identity.IssueCertificate(s.ca, binary.LittleEndian.Uint64(serial[:]), testUserID, hello.DeviceID, hello.DevicePublic, now)
	}
	ack := noiseconn.HandshakeAck{
		Certificate:       noiseconn.CertificateSummary{ExpiresAt: sc.cert.ExpiresAt, IssuedAt: sc.cert.IssuedAt, Serial: sc.cert.Serial},
		DeviceCAPublic:    hex.EncodeToString(s.caPub[:]),
		DeviceCertificate: sc.cert,
		Handshake:         "ok",
		KeepaliveInterval: set.keepaliveK,
		NoiseExpiresAt:    canonjson.FormatTime(s.key.ExpiresAt),
		NoiseKeyVersion:   s.key.Version,
		NoiseKeys:         []noiseconn.NoiseKeyInfo{s.key.Info()},
		NoisePublic:       hex.EncodeToString(s.key.Public[:]),
		NoiseRotatesAt:    canonjson.FormatTime(s.key.RotatesAt),
		Session:           testSession,
		User:              user,
		UserID:            testUserID,
	}
	ackPayload, err := ack.Marshal()
	if err != nil {
		s.t.Errorf("ACK: %v", err)
		return
	}
	if _, err := sc.send(ccp.Ack, 0, ackPayload); err != nil {
		return
	}
	if sc.version == 2 {
		// §5.1: records from here on, both ways.
		sc.wmu.Lock()
		sc.sealer = noiseconn.NewSealer(sess.SendKey, sess.SendCounter, set.padding)
		sc.wmu.Unlock()
		sc.firstRecvCounter = sess.RecvCounter
		sc.recvCounter.Store(int64(sess.RecvCounter))
		opener := noiseconn.NewOpener(sess.RecvKey, sess.RecvCounter)
		left := bytes.Clone(rd.Buffered())
		rr := noiseconn.NewRecordReader(io.MultiReader(bytes.NewReader(left), body), opener)
		rd = ccp.NewReader(&counterReader{r: rr, o: opener, c: &sc.recvCounter}, ccp.V2)
	}

	s.mu.Lock()
	s.all = append(s.all, sc)
	s.mu.Unlock()
	s.conns <- sc

	// Redelivery of the inbox (§6.7).
	s.mu.Lock()
	entries := append([]*inboxEntry(nil), s.inbox...)
	s.mu.Unlock()
	for _, e := range entries {
		seq, err := sc.send(e.typ, e.channel, e.payload)
		if err != nil {
			break
		}
		sc.dmu.Lock()
		sc.delivered[seq] = e.id
		sc.dmu.Unlock()
	}

	readDone := make(chan error, 1)
	go func() {
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				var fe *ccp.FrameError
				if errors.As(err, &fe) && !fe.Fatal {
					p := fe.Problem()
					sc.send(ccp.Error, fe.ReplyChannel(), p.JSON())
					continue
				}
				readDone <- err
				return
			}
			f.Payload = bytes.Clone(f.Payload)
			sc.handle(f)
		}
	}()
	var tick <-chan time.Time
	if sc.version == 2 && set.keepaliveEvery > 0 {
		t := time.NewTicker(set.keepaliveEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-readDone:
			sc.endErr = err
			close(sc.ended)
			return
		case <-sc.closeCh:
			close(sc.ended)
			return
		case <-s.quit:
			close(sc.ended)
			return
		case <-ctx.Done():
			close(sc.ended)
			return
		case <-tick:
			sc.send(ccp.Ack, 0, []byte(`{"keepalive":`+strconv.FormatInt(time.Now().Unix(), 10)+`}`))
		}
	}
}

// counterReader publishes the opener's counter after each read (the
// records really decrypted with the client→server key).
type counterReader struct {
	r io.Reader
	o *noiseconn.Opener
	c *atomic.Int64
}

func (cr *counterReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.c.Store(int64(cr.o.Counter()))
	return n, err
}

// handle processes one frame after the handshake.
func (sc *serverConn) handle(f ccp.Frame) {
	s := sc.srv
	switch f.Type {
	case ccp.Ack:
		a, ok := parseAck(f.Payload)
		switch {
		case ok && a.Keepalive != nil && a.Ack == nil:
			sc.keepalives.Add(1)
		case ok && a.Ack != nil:
			s.mu.Lock()
			drop := s.dropAcks
			s.mu.Unlock()
			select {
			case sc.acks <- uint32(*a.Ack):
			default:
			}
			if !drop {
				sc.dmu.Lock()
				id, found := sc.delivered[uint32(*a.Ack)]
				delete(sc.delivered, uint32(*a.Ack))
				sc.dmu.Unlock()
				if found {
					s.mu.Lock()
					for i, e := range s.inbox {
						if e.id == id {
							s.inbox = append(s.inbox[:i], s.inbox[i+1:]...)
							break
						}
					}
					s.mu.Unlock()
				}
			}
		default:
			sc.sendError(f.Channel, ccp.TitleInvalidPayload, "bad ACK", &f)
		}
		return
	case ccp.Error:
		select {
		case sc.errors <- f:
		default:
		}
		return
	case ccp.Hello, ccp.Auth:
		sc.sendError(f.Channel, ccp.TitleUnexpectedFrame, "handshake already complete", &f)
		return
	}
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	select {
	case sc.frames <- f:
	default:
	}
	if hook != nil && hook(sc, f) {
		return
	}
	switch f.Type {
	case ccp.Presence, ccp.VoiceFrame, ccp.VideoFrame:
		return
	case ccp.Msg:
		if string(f.Payload) == "forbidden" {
			sc.sendError(f.Channel, ccp.TitleForbidden, "not a member", &f)
			return
		}
	}
	ack := `{"ack":` + strconv.FormatUint(uint64(f.Sequence), 10) + `}`
	if f.Type == ccp.Join && strings.Contains(string(f.Payload), `"group_id"`) {
		ack = `{"ack":` + strconv.FormatUint(uint64(f.Sequence), 10) + `,"group_id":"g1"}`
	}
	sc.send(ccp.Ack, f.Channel, []byte(ack))
}
