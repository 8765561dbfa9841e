// Package termclient is the logic of commucat-client, the CommuCat terminal
// client: a line-oriented chat interface on top of the client SDK. It keeps
// a device identity in a state file, stays connected with client.Client
// (reconnecting, acknowledging deliveries so that messages that arrived
// while offline are redelivered, §6.7), and reads commands and messages
// from plain input lines, so it works in any terminal and in tests.
package termclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// Options configure Run. Zero values mean the defaults; Server, Handle,
// Device and CAFile are taken from the state file when empty.
type Options struct {
	StatePath string // required: the state file (see DefaultStatePath)

	Server string // https://host:port; saved in the state file
	// Fallbacks, when set, replace the saved list of other nodes to try
	// when Server is unreachable; NoFallbacks clears it.
	Fallbacks   []string
	NoFallbacks bool
	Handle      string // user handle hint for the first connection (admission, §4.9)
	Device      string // device id of a new identity (default term-<8 hex>)
	// IdentityPath, when set, is a client.Identity JSON file (commucat-cli
	// rotate-keys --identity-out) imported as the state's identity; a
	// state that already holds another admitted device refuses it.
	IdentityPath string

	Transport client.Transport
	Versions  []int  // nil: [1, 2] (the server picks 2 when it can)
	PQ        bool   // ML-KEM-768 hybrid keys (version 2)
	Pattern   string // "XK" (default) or "IK"

	CAFile   string // PEM certificate(s) to trust for the server; saved
	Insecure bool   // skip TLS verification (never saved)
	// TLSConfig, when set, replaces CAFile and Insecure (tests).
	TLSConfig *tls.Config

	Logger *slog.Logger // SDK logs; nil discards them

	ReconnectMin, ReconnectMax time.Duration // SDK defaults when zero
	// QuitTimeout bounds how long /quit (or the end of input) waits for
	// commands still in progress, such as a message waiting for a
	// reconnect. Default 5 s.
	QuitTimeout time.Duration
}

// DefaultQuitTimeout is the default of Options.QuitTimeout.
const DefaultQuitTimeout = 5 * time.Second

// maxLine bounds one input line.
const maxLine = 64 << 10

// maxSeen bounds the in-memory set of message ids used to drop duplicates.
const maxSeen = 4096

// ErrNoServer is returned by Run when neither Options nor the state file
// name a server.
var ErrNoServer = errors.New("no server: pass --server https://host:port")

// ErrNoHandle is returned by Run when a new device has no handle.
var ErrNoHandle = errors.New("first run: pass --handle NAME (the user the new device belongs to)")

// op is a command that talks to the server; ops run one at a time, in
// input order.
type op struct {
	what string // for "not done" reports, e.g. "message to ch 7"
	fn   func(ctx context.Context) error
}

// presenceInfo is what /who shows about one device.
type presenceInfo struct {
	state  string
	handle string
	at     time.Time
}

// term is one running terminal client.
type term struct {
	o     Options
	out   *printer
	state *stateFile
	self  string
	cl    *client.Client

	ops     chan op
	opsDone chan struct{}

	mu        sync.Mutex // guards the fields below
	current   uint32
	channels  []uint32
	who       map[string]presenceInfo
	seen      *seenSet
	connected bool // the last event was Connected
	tlsHinted bool
	fatal     error // set when the client gave up by itself (see onServerError)
	stop      context.CancelFunc
	call      *callState // the call in progress, see calls.go
}

// printer writes whole lines to the output; it drops lines once closed.
type printer struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (p *printer) line(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	io.WriteString(p.w, s+"\n")
}

func (p *printer) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// Run runs the terminal client until the input ends, /quit, ctx ends, or
// the SDK gives up (a permanent failure such as PairingRequired or
// Replaced, whose error is returned). It prints to stdout only.
func Run(ctx context.Context, o Options, stdin io.Reader, stdout io.Writer) error {
	out := &printer{w: stdout}
	defer out.close()
	if o.QuitTimeout <= 0 {
		o.QuitTimeout = DefaultQuitTimeout
	}
	if o.StatePath == "" {
		return errors.New("no state file path")
	}
	sf, err := openState(o, out)
	if err != nil {
		return err
	}
	st := sf.snapshot()
	tlsConf, err := tlsConfig(o, st.CA)
	if err != nil {
		return err
	}
	if o.Insecure && o.TLSConfig == nil {
		out.line("! WARNING: --insecure: the server's TLS certificate is NOT verified.")
		out.line("! WARNING: anyone on the network path can impersonate the server and read your messages;")
		out.line("! WARNING: use --ca FILE with the server's certificate instead.")
	}
	if o.PQ && len(o.Versions) > 0 && !slices.Contains(o.Versions, 2) {
		out.line("! --pq needs protocol version 2; continuing without it")
	}

	t := &term{
		o:        o,
		out:      out,
		state:    sf,
		self:     st.Identity.DeviceID,
		ops:      make(chan op, 64),
		opsDone:  make(chan struct{}),
		current:  st.Current,
		channels: slices.Clone(st.Channels),
		who:      make(map[string]presenceInfo),
		seen:     newSeenSet(maxSeen, st.Seen),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.stop = cancel

	t.cl = client.New(client.Options{
		URL:          st.Server,
		FallbackURLs: st.Fallbacks,
		TLSConfig:    tlsConf,
		Transport:    o.Transport,
		Identity:     st.Identity,
		OnIdentityUpdate: func(*client.Identity) {
			t.save() // the new device certificate
		},
		Pattern:      o.Pattern,
		Versions:     o.Versions,
		Capabilities: callCapabilities,
		PQ:           o.PQ,
		Handle:       st.Handle,
		Logger:       o.Logger,
		ReconnectMin: o.ReconnectMin,
		ReconnectMax: o.ReconnectMax,
	})

	out.line("* connecting to %s as %s (state %s)", short(st.Server), short(t.self), short(sf.path))
	if len(st.Fallbacks) > 0 {
		out.line("* other nodes, tried when it is unreachable: %s", strings.Join(st.Fallbacks, ", "))
	}
	if len(st.Channels) > 0 {
		out.line("* channels: %s%s", channelList(st.Channels), currentNote(st.Current))
	}
	out.line("* type /help for commands")

	runDone := make(chan error, 1)
	go func() { runDone <- t.cl.Run(ctx) }()
	go t.worker(ctx)
	go t.readInput(ctx, cancel, stdin)

	for ev := range t.cl.Events() { // closed when Run returns; drains what was queued
		t.handleEvent(ev)
	}
	err = <-runDone
	cancel()
	t.mu.Lock()
	if t.fatal != nil && err == nil {
		err = t.fatal
	}
	t.mu.Unlock()
	if serr := t.save(); serr != nil && err == nil {
		err = serr
	}
	return err
}

// openState loads the state file or creates a new identity, applies the
// options and saves it.
func openState(o Options, out *printer) (*stateFile, error) {
	sf, exists, fixed, err := loadState(o.StatePath)
	if err != nil {
		return nil, err
	}
	if fixed {
		out.line("! state file %s was readable by other users; its mode is now 0600", short(o.StatePath))
	}
	var imported *client.Identity
	if o.IdentityPath != "" {
		if imported, err = readIdentity(o.IdentityPath); err != nil {
			return nil, err
		}
	}
	var setupErr error
	sf.update(func(st *State) {
		admitted := st.Identity != nil && st.Identity.CurrentCertificate() != nil
		if imported != nil && (st.Identity == nil || st.Identity.DeviceID != imported.DeviceID) {
			if admitted {
				setupErr = fmt.Errorf("state file %s holds device %q; use another --profile or --state to import device %q", sf.path, st.Identity.DeviceID, imported.DeviceID)
				return
			}
			st.Identity = imported
			st.Channels, st.Current, st.Seen, st.UserID = nil, 0, nil, ""
			out.line("* imported device %s from %s (keys saved in %s)", short(imported.DeviceID), short(o.IdentityPath), short(sf.path))
		}
		if o.Server != "" {
			if err := checkServerURL(o.Server); err != nil {
				setupErr = err
				return
			}
			if st.Server != "" && st.Server != o.Server {
				out.line("* server changed from %s to %s", short(st.Server), short(o.Server))
			}
			st.Server = o.Server
		}
		if st.Server == "" {
			setupErr = ErrNoServer
			return
		}
		if len(o.Fallbacks) > 0 || o.NoFallbacks {
			for _, f := range o.Fallbacks {
				if err := checkURL("--fallback", f); err != nil {
					setupErr = err
					return
				}
			}
			st.Fallbacks = slices.Clone(o.Fallbacks)
		}
		if o.CAFile != "" {
			abs, err := filepath.Abs(o.CAFile)
			if err != nil {
				setupErr = fmt.Errorf("--ca: %w", err)
				return
			}
			st.CA = abs
		}
		if o.Handle != "" && o.Handle != st.Handle {
			if admitted && st.Handle != "" {
				setupErr = fmt.Errorf("state file %s belongs to handle %q; use another --profile or --state for another user", sf.path, st.Handle)
				return
			}
			st.Handle = o.Handle
		}
		if exists && o.Device != "" && o.Device != st.Identity.DeviceID {
			if admitted {
				setupErr = fmt.Errorf("state file %s holds device %q; use another --profile or --state for device %q", sf.path, st.Identity.DeviceID, o.Device)
				return
			}
			st.Identity = nil // never admitted: start over with the new id
		}
		if st.Identity == nil {
			if st.Handle == "" {
				setupErr = ErrNoHandle
				return
			}
			dev := o.Device
			if dev == "" {
				dev = randomDeviceID()
			}
			id, err := client.NewIdentity(dev, nil)
			if err != nil {
				setupErr = err
				return
			}
			st.Identity = id
			st.Channels, st.Current, st.Seen, st.UserID = nil, 0, nil, ""
			out.line("* new device %s for user %s (keys saved in %s)", short(dev), short(st.Handle), short(sf.path))
		}
		if st.Channels == nil {
			st.Channels = []uint32{}
		}
	})
	if setupErr != nil {
		return nil, setupErr
	}
	if err := sf.save(); err != nil {
		return nil, err
	}
	return sf, nil
}

// maxIdentityFile bounds an imported identity file.
const maxIdentityFile = 64 << 10

// readIdentity reads a client.Identity JSON file.
func readIdentity(path string) (*client.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--identity: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("--identity: %w", err)
	}
	if len(b) > maxIdentityFile {
		return nil, fmt.Errorf("--identity: %s is larger than %d bytes", path, maxIdentityFile)
	}
	id := new(client.Identity)
	if err := json.Unmarshal(b, id); err != nil {
		return nil, fmt.Errorf("--identity: %s: %w", path, err)
	}
	return id, nil
}

// checkServerURL accepts https://host[:port] URLs (wss:// too, as the SDK
// does).
func checkServerURL(s string) error { return checkURL("--server", s) }

// checkURL checks a server URL given with flag.
func checkURL(flag, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("%s must look like https://host:port (got %q)", flag, s)
	}
	return nil
}

// tlsConfig builds the TLS configuration from the options and the saved
// CA file.
func tlsConfig(o Options, savedCA string) (*tls.Config, error) {
	if o.TLSConfig != nil {
		return o.TLSConfig.Clone(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if o.Insecure {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	if savedCA != "" {
		pem, err := os.ReadFile(savedCA)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate found", savedCA)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// save writes the state file with the current channels and seen ids.
func (t *term) save() error {
	t.mu.Lock()
	chs, cur, seen := slices.Clone(t.channels), t.current, t.seen.last(maxSavedSeen)
	t.mu.Unlock()
	t.state.update(func(st *State) {
		st.Channels, st.Current, st.Seen = chs, cur, seen
	})
	err := t.state.save()
	if err != nil {
		t.out.line("! cannot save the state: %s", short(err.Error()))
	}
	return err
}

// --- events ---------------------------------------------------------------

func (t *term) handleEvent(ev client.Event) {
	switch ev := ev.(type) {
	case *client.Connected:
		t.onConnected(ev)
	case *client.Disconnected:
		t.onDisconnected(ev)
	case *client.Message:
		t.onMessage(ev)
	case *client.Presence:
		t.onPresence(ev)
	case *client.ServerError:
		t.out.line("! error: %s", describeProblem(ev.Problem))
		t.onServerError(ev)
	}
}

// onServerError stops the client after an unsolicited Replaced or Device
// Revoked: reconnecting would only take the device back from the other
// client (Replaced) or fail (Device Revoked). client.Client treats these
// as permanent only when the stream then ends cleanly, but the server
// aborts it (HTTP/2 RST_STREAM, WebSocket 1008), so Run would reconnect.
func (t *term) onServerError(ev *client.ServerError) {
	p := ev.Problem
	if p.HasFrameType || p.HasSequence {
		return // the answer to a frame
	}
	if p.Title != ccp.TitleReplaced && p.Title != ccp.TitleDeviceRevoked {
		return
	}
	ef := &client.ErrorFrame{Channel: ev.Channel, Sequence: ev.ServerSeq, Problem: p}
	t.mu.Lock()
	first := t.fatal == nil
	if first {
		t.fatal = ef
	}
	t.mu.Unlock()
	if !first {
		return
	}
	t.out.line("! giving up: %s", describeProblem(p))
	t.permanentHint(ef)
	t.stop()
}

func (t *term) onConnected(ev *client.Connected) {
	t.mu.Lock()
	t.connected = true
	t.mu.Unlock()
	var user string
	if ev.Ack != nil {
		user = ev.Ack.User.Handle
		if user == "" {
			user = ev.Ack.UserID
		}
		uid, handle := ev.Ack.UserID, ev.Ack.User.Handle
		changed := false
		t.state.update(func(st *State) {
			if uid != "" && st.UserID != uid {
				st.UserID, changed = uid, true
			}
			if handle != "" && st.Handle != handle {
				st.Handle, changed = handle, true
			}
		})
		if changed {
			t.save()
		}
	}
	info := []string{"user " + short(user), fmt.Sprintf("v%d", ev.Version)}
	if ev.PQ {
		info = append(info, "pq")
	}
	t.out.line("* connected as %s (%s)", short(t.self), strings.Join(info, ", "))
}

func (t *term) onDisconnected(ev *client.Disconnected) {
	t.mu.Lock()
	was := t.connected
	t.connected = false
	if t.fatal != nil {
		t.mu.Unlock()
		return // already reported
	}
	hint := false
	if tlsUntrusted(ev.Err) && !t.tlsHinted {
		t.tlsHinted, hint = true, true
	}
	t.mu.Unlock()
	what := "connection failed"
	if was {
		what = "disconnected"
		t.onCallDisconnected()
	}
	if ev.RetryIn > 0 {
		t.out.line("* %s, retrying in %s: %s", what, formatDuration(ev.RetryIn), describe(ev.Err))
	} else if ev.Err != nil {
		t.out.line("! %s, giving up: %s", what, describe(ev.Err))
		t.permanentHint(ev.Err)
	}
	if hint {
		t.out.line("! hint: pass --ca FILE with the server's certificate (the dev server's is dev/certs/server.crt)")
	}
}

// permanentHint explains the permanent failures a newcomer may meet.
func (t *term) permanentHint(err error) {
	var ef *client.ErrorFrame
	if !errors.As(err, &ef) {
		return
	}
	switch ef.Problem.Title {
	case ccp.TitlePairingRequired:
		t.out.line("! hint: the server does not admit new devices automatically; the device must be paired first")
	case ccp.TitleReplaced:
		t.out.line("! hint: the same device (state file) connected from another client; use another --profile or --state")
	case ccp.TitleDeviceRevoked:
		t.out.line("! hint: this device was revoked; start over with another --profile or --state")
	case ccp.TitleForbidden:
		if strings.Contains(ef.Problem.Detail, "hint mismatch") {
			t.out.line("! hint: this device belongs to another user than --handle says")
		}
	}
}

func (t *term) onMessage(m *client.Message) {
	switch m.Type {
	case ccp.Msg:
		t.onMsg(m)
	case ccp.Typing:
		t.out.line("[ch %d] %s is typing...", m.Channel, senderName(m.Sender))
	case ccp.CallOffer, ccp.CallAnswer, ccp.CallEnd, ccp.CallStats, ccp.VoiceFrame, ccp.VideoFrame:
		t.onCall(m)
	default:
		t.out.line("[ch %d] (%s from %s, not supported by this client)", m.Channel, m.Type, senderName(m.Sender))
	}
}

func senderName(s string) string {
	if s == "" {
		return "?"
	}
	return short(s)
}

func (t *term) onMsg(m *client.Message) {
	env, ok := decodeEnvelope(m.Payload)
	var from, text string
	if ok {
		from, text = env.From, env.Text
		if env.ID != "" {
			key := fmt.Sprintf("%d/%s/%s", m.Channel, env.From, env.ID)
			t.mu.Lock()
			isNew := t.seen.add(key)
			t.mu.Unlock()
			if !isNew {
				return // a redelivered duplicate
			}
		}
	} else {
		text = renderPayload(m.Payload)
	}
	changed, selected := t.noteChannel(m.Channel)
	prefix := fmt.Sprintf("[ch %d] %s: ", m.Channel, senderName(from))
	line := prefix + sanitize(text, true, strings.Repeat(" ", len(prefix)))
	if ok && env.TS > 0 {
		if sent := time.Unix(env.TS, 0); time.Since(sent) > time.Minute {
			line += "  (sent " + sent.Local().Format("2006-01-02 15:04") + ")"
		}
	}
	t.out.line("%s", line)
	if selected {
		t.out.line("* current channel: %d (plain text goes there; /ch to change)", m.Channel)
	}
	if changed {
		t.save()
	}
}

// noteChannel records that the device is a member of ch (a message
// arrived on it); it becomes the current channel if none is selected.
// It reports whether anything changed and whether ch was selected.
func (t *term) noteChannel(ch uint32) (changed, selected bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.channels, ch) {
		t.channels = append(t.channels, ch)
		slices.Sort(t.channels)
		changed = true
	}
	if t.current == 0 {
		t.current = ch
		changed, selected = true, true
	}
	return changed, selected
}

func (t *term) onPresence(p *client.Presence) {
	if p.Entity == "" || p.Entity == t.self {
		return
	}
	state := p.State
	if state == "" {
		state = "online"
	}
	t.mu.Lock()
	prev, known := t.who[p.Entity]
	t.who[p.Entity] = presenceInfo{state: state, handle: p.User.Handle, at: time.Now()}
	t.mu.Unlock()
	if known && prev.state == state {
		return // e.g. the snapshot after our own reconnect
	}
	t.out.line("* %s is %s", short(p.Entity), short(state))
}

// --- input ------------------------------------------------------------------

// readInput reads lines until EOF or /quit, then lets the queued commands
// finish (up to QuitTimeout) and stops the client.
func (t *term) readInput(ctx context.Context, cancel context.CancelFunc, stdin io.Reader) {
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		readErr <- readLines(stdin, func(l string) bool {
			select {
			case lines <- l:
				return true
			case <-ctx.Done():
				return false
			}
		}, func() { t.out.line("! line too long (at most %d bytes); ignored", maxLine) })
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-lines:
			if !t.handleLine(ctx, l) {
				t.quit(ctx, cancel)
				return
			}
		case err := <-readErr:
			if err != nil && !errors.Is(err, io.EOF) {
				t.out.line("! reading input: %s", short(err.Error()))
			}
			t.quit(ctx, cancel)
			return
		}
	}
}

// readLines calls line for each input line (without the line ending)
// until EOF, a read error, or line returns false.
func readLines(r io.Reader, line func(string) bool, tooLong func()) error {
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 4096)
	skipping := false
	for {
		n, err := r.Read(chunk)
		data := chunk[:n]
		for len(data) > 0 {
			i := indexByte(data, '\n')
			if i < 0 {
				if !skipping {
					buf = append(buf, data...)
					if len(buf) > maxLine {
						buf, skipping = buf[:0], true
						tooLong()
					}
				}
				break
			}
			if !skipping {
				buf = append(buf, data[:i]...)
				if len(buf) > maxLine {
					tooLong()
				} else if !line(strings.TrimSuffix(string(buf), "\r")) {
					return nil
				}
			}
			buf, skipping = buf[:0], false
			data = data[i+1:]
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 && !skipping {
				line(strings.TrimSuffix(string(buf), "\r"))
			}
			return err
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// quit waits for the queued commands (bounded by QuitTimeout), then
// stops the client.
func (t *term) quit(ctx context.Context, cancel context.CancelFunc) {
	close(t.ops)
	timer := time.NewTimer(t.o.QuitTimeout)
	defer timer.Stop()
	select {
	case <-t.opsDone:
	case <-ctx.Done():
	case <-timer.C:
		t.out.line("! quitting with commands not done (still waiting for the server)")
	}
	cancel()
}

// worker runs the queued commands in order.
func (t *term) worker(ctx context.Context) {
	defer close(t.opsDone)
	for {
		select {
		case o, ok := <-t.ops:
			if !ok {
				return
			}
			if ctx.Err() != nil {
				continue // stopping: the rest is not sent
			}
			if err := o.fn(ctx); err != nil && ctx.Err() == nil {
				if o.what != "" {
					t.out.line("! error: %s; %s", describe(err), o.what)
				} else {
					t.out.line("! error: %s", describe(err))
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// enqueue queues a command for the worker.
func (t *term) enqueue(ctx context.Context, o op) {
	select {
	case t.ops <- o:
	case <-ctx.Done():
	}
}

const helpText = `commands:
  /join <channel> [device ...]  join or create a channel (1-4294967295), adding the listed devices; selects it
  /leave [channel]               leave a channel (default: the current one)
  /ch [channel]                  select the current channel; without argument, list the channels
  /msg <channel> <text>          send text to a channel
  <text>                         send text to the current channel (start with // to send a leading /)
  /presence <state>              set your presence: online, away, busy, ... (1-32 bytes)
  /typing                        tell the current channel that you are typing
  /who                           presence of the devices seen so far
  /call [channel]                call the members of a channel (default: the current one)
  /answer                        accept the incoming call
  /hangup                        end, cancel or decline the call
  /tone [seconds]                send a 440 Hz test tone into the call (default 3 s)
  /media                         media frames received and sent in the call
  /help                          this help
  /quit                          exit (Ctrl-D too)`

func (t *term) help() {
	for _, l := range strings.Split(helpText, "\n") {
		t.out.line("%s", l)
	}
}

// handleLine executes one input line; false means quit.
func (t *term) handleLine(ctx context.Context, line string) bool {
	trimmed := strings.TrimSpace(line)
	if trimmed == "" {
		return true
	}
	if !strings.HasPrefix(trimmed, "/") || strings.HasPrefix(trimmed, "//") {
		text := line
		if strings.HasPrefix(trimmed, "//") {
			text = strings.TrimPrefix(strings.TrimLeft(line, " \t"), "/")
		}
		t.mu.Lock()
		ch := t.current
		t.mu.Unlock()
		if ch == 0 {
			t.out.line("! no current channel: /join <channel> [device ...] or /ch <channel> first")
			return true
		}
		t.sendText(ctx, ch, text)
		return true
	}
	cmd, rest, _ := strings.Cut(trimmed[1:], " ")
	rest = strings.TrimSpace(rest)
	args := strings.Fields(rest)
	switch strings.ToLower(cmd) {
	case "quit", "exit", "q":
		return false
	case "help", "h", "?":
		t.help()
	case "join", "j":
		if len(args) < 1 {
			t.out.line("! usage: /join <channel> [device ...]")
			return true
		}
		ch, ok := t.parseChannel(args[0])
		if !ok {
			return true
		}
		t.join(ctx, ch, args[1:])
	case "leave", "part":
		ch, ok := t.channelArg(args, "/leave [channel]")
		if !ok {
			return true
		}
		t.leave(ctx, ch)
	case "ch", "channel":
		if len(args) == 0 {
			t.mu.Lock()
			chs, cur := slices.Clone(t.channels), t.current
			t.mu.Unlock()
			if len(chs) == 0 && cur == 0 {
				t.out.line("* no channels yet: /join <channel> [device ...]")
			} else {
				t.out.line("* channels: %s%s", channelList(chs), currentNote(cur))
			}
			return true
		}
		if len(args) != 1 {
			t.out.line("! usage: /ch <channel>")
			return true
		}
		ch, ok := t.parseChannel(args[0])
		if !ok {
			return true
		}
		t.mu.Lock()
		t.current = ch
		member := slices.Contains(t.channels, ch)
		t.mu.Unlock()
		if member {
			t.out.line("* current channel: %d", ch)
		} else {
			t.out.line("* current channel: %d (not joined yet: /join %d)", ch, ch)
		}
		t.save()
	case "msg", "m":
		chArg, text, _ := strings.Cut(rest, " ")
		text = strings.TrimLeft(text, " ")
		if chArg == "" || text == "" {
			t.out.line("! usage: /msg <channel> <text>")
			return true
		}
		ch, ok := t.parseChannel(chArg)
		if !ok {
			return true
		}
		t.sendText(ctx, ch, text)
	case "presence", "away":
		state := rest
		if strings.ToLower(cmd) == "away" {
			state = "away"
		}
		if state == "" || len(state) > 32 {
			t.out.line("! usage: /presence <state> (1-32 bytes, e.g. online, away, busy)")
			return true
		}
		t.enqueue(ctx, op{what: "presence not set", fn: func(ctx context.Context) error {
			if err := t.cl.SetPresence(ctx, state); err != nil {
				return err
			}
			t.out.line("* presence set to %s", short(state))
			return nil
		}})
	case "typing":
		t.mu.Lock()
		ch := t.current
		t.mu.Unlock()
		if ch == 0 {
			t.out.line("! no current channel: /ch <channel> first")
			return true
		}
		t.enqueue(ctx, op{fn: func(ctx context.Context) error { return t.cl.Typing(ctx, ch) }})
	case "who":
		t.showWho()
	default:
		if t.callCommand(ctx, strings.ToLower(cmd), args) {
			return true
		}
		t.out.line("! unknown command %s", short("/"+cmd))
		t.help()
	}
	return true
}

// parseChannel parses a channel id; channel 0 is reserved (§6.5).
func (t *term) parseChannel(s string) (uint32, bool) {
	var v uint64
	if len(s) == 0 || len(s) > 10 {
		t.out.line("! invalid channel %q: a number from 1 to 4294967295", short(s))
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			t.out.line("! invalid channel %q: a number from 1 to 4294967295", short(s))
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v == 0 || v > 0xffffffff {
		t.out.line("! invalid channel %q: a number from 1 to 4294967295 (0 is reserved)", short(s))
		return 0, false
	}
	return uint32(v), true
}

// channelArg returns the channel named by args, or the current one.
func (t *term) channelArg(args []string, usage string) (uint32, bool) {
	switch len(args) {
	case 0:
		t.mu.Lock()
		ch := t.current
		t.mu.Unlock()
		if ch == 0 {
			t.out.line("! usage: %s (no current channel)", usage)
			return 0, false
		}
		return ch, true
	case 1:
		return t.parseChannel(args[0])
	}
	t.out.line("! usage: %s", usage)
	return 0, false
}

func (t *term) sendText(ctx context.Context, ch uint32, text string) {
	payload, err := newEnvelope(t.self, text, time.Now())
	if err != nil {
		t.out.line("! error: %s", short(err.Error()))
		return
	}
	t.enqueue(ctx, op{what: fmt.Sprintf("message to ch %d not sent", ch), fn: func(ctx context.Context) error {
		return t.cl.SendMessage(ctx, ch, payload)
	}})
}

func (t *term) join(ctx context.Context, ch uint32, members []string) {
	// Select the channel now, so that text typed right after /join goes
	// there; a failed JOIN shows an error and the text then fails too.
	t.mu.Lock()
	prev := t.current
	t.current = ch
	t.mu.Unlock()
	var list []string
	if len(members) > 0 {
		list = members
	}
	t.enqueue(ctx, op{what: fmt.Sprintf("channel %d not joined", ch), fn: func(ctx context.Context) error {
		resp, err := t.cl.Join(ctx, ch, list, "")
		if err != nil {
			t.mu.Lock()
			if t.current == ch && !slices.Contains(t.channels, ch) {
				t.current = prev // back to where plain text went before
			}
			t.mu.Unlock()
			return err
		}
		t.mu.Lock()
		if !slices.Contains(t.channels, ch) {
			t.channels = append(t.channels, ch)
			slices.Sort(t.channels)
		}
		t.mu.Unlock()
		t.save()
		msg := fmt.Sprintf("* joined channel %d", ch)
		if len(members) > 0 {
			safe := make([]string, len(members))
			for i, m := range members {
				safe[i] = short(m)
			}
			msg += " with " + strings.Join(safe, ", ")
		}
		if g := groupOf(resp); g != "" {
			msg += " (group " + short(g) + ")"
		}
		t.out.line("%s", msg)
		return nil
	}})
}

func (t *term) leave(ctx context.Context, ch uint32) {
	t.enqueue(ctx, op{what: fmt.Sprintf("channel %d not left", ch), fn: func(ctx context.Context) error {
		if err := t.cl.Leave(ctx, ch); err != nil {
			return err
		}
		t.mu.Lock()
		t.channels = slices.DeleteFunc(t.channels, func(c uint32) bool { return c == ch })
		if t.current == ch {
			t.current = 0
		}
		t.mu.Unlock()
		t.save()
		t.out.line("* left channel %d", ch)
		return nil
	}})
}

func (t *term) showWho() {
	t.mu.Lock()
	ids := make([]string, 0, len(t.who))
	for id := range t.who {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	lines := make([]string, 0, len(ids))
	for _, id := range ids {
		p := t.who[id]
		name := short(id)
		if p.handle != "" {
			name += " (" + short(p.handle) + ")"
		}
		lines = append(lines, fmt.Sprintf("  %s: %s since %s", name, short(p.state), p.at.Format("15:04:05")))
	}
	t.mu.Unlock()
	if len(lines) == 0 {
		t.out.line("* no presence seen yet (the server reports devices that share a channel with you)")
		return
	}
	t.out.line("* presence:")
	for _, l := range lines {
		t.out.line("%s", l)
	}
}

func channelList(chs []uint32) string {
	if len(chs) == 0 {
		return "none"
	}
	s := make([]string, len(chs))
	for i, c := range chs {
		s[i] = fmt.Sprint(c)
	}
	return strings.Join(s, ", ")
}

func currentNote(cur uint32) string {
	if cur == 0 {
		return " (no current channel)"
	}
	return fmt.Sprintf(" (current %d)", cur)
}

// groupOf returns the group_id member of a JOIN ACK.
func groupOf(ack []byte) string {
	var j struct {
		GroupID string `json:"group_id"`
	}
	if json.Unmarshal(ack, &j) != nil {
		return ""
	}
	return j.GroupID
}
