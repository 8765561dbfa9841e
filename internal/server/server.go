// Package server wires CommuCat together: configuration, storage, secrets,
// the session manager, the HTTP surface and the background tasks. It is the
// only package that knows every other one.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/internal/config"
	"github.com/commucat/commucat/internal/httpapi"
	"github.com/commucat/commucat/internal/identity"
	"github.com/commucat/commucat/internal/ledger"
	"github.com/commucat/commucat/internal/media"
	"github.com/commucat/commucat/internal/metrics"
	"github.com/commucat/commucat/internal/noiseconn"
	"github.com/commucat/commucat/internal/ratelimit"
	"github.com/commucat/commucat/internal/router"
	"github.com/commucat/commucat/internal/secrets"
	"github.com/commucat/commucat/internal/session"
	"github.com/commucat/commucat/internal/store"
	"github.com/commucat/commucat/internal/store/postgres"
	redisstore "github.com/commucat/commucat/internal/store/redis"
	"github.com/commucat/commucat/internal/store/sqlite"
)

// Version is the server release.
var Version = "0.1.0-dev"

// Options are what the caller injects.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// Registry receives the metrics; nil means a fresh registry.
	Registry *prometheus.Registry
	Now      func() time.Time
	Rand     io.Reader
	// NoMigrate refuses to start with pending migrations (§12.1).
	NoMigrate bool
	// RedisPrefix is prepended to every Redis key and channel (tests).
	RedisPrefix string
	// StartupWait is how long New keeps retrying, with backoff, while
	// PostgreSQL or Redis does not answer; 0 tries once. SQLite is never
	// retried: its errors (a bad path, a locked file) do not heal.
	StartupWait time.Duration
}

// settings is the part of the configuration the HTTP layer reads.
type settings struct {
	Domain         string
	WebSocket      bool
	Keepalive      time.Duration
	SessionTTL     time.Duration
	PresenceTTL    time.Duration
	PairingTTL     time.Duration
	AutoApprove    bool
	MaxAutoDevices int
	Versions       []int
	TrustedProxies []netip.Prefix
	NodeID         string
}

// Server is one node.
type Server struct {
	opts     Options
	cfg      settings
	conf     *config.Config
	log      *slog.Logger
	now      func() time.Time
	rand     io.Reader
	store    store.Store
	metrics  *metrics.Metrics
	registry *prometheus.Registry
	ledger   ledger.Ledger
	keys     *noiseKeys
	ca       ed25519.PrivateKey
	caPub    [32]byte
	features noiseconn.ServerFeatures
	reg      *router.Registry
	router   *router.Router
	presence router.Presence
	local    *router.LocalPresence // nil with Redis
	cluster  *redisstore.Cluster   // nil without Redis
	writer   *router.Writer
	sessions *session.Manager
	calls    *media.Manager
	api      *httpapi.API
	admins   *secrets.AdminTokens
	metricsH http.Handler
	// Rate-limit zones of §8.3 (the frame zone lives in each session).
	httpZone, connectZone, pairingZone *ratelimit.Limiter
	health                             transportHealth
	draining                           atomic.Bool
	storageDown, redisDown             atomic.Bool
	streams                            streamCaps
	hijacked                           hijackedStreams

	httpSrv *http.Server
	ln      net.Listener
	bgWG    sync.WaitGroup
}

// New opens storage, applies migrations, loads the secrets and builds the
// node. It does not listen yet.
func New(ctx context.Context, opts Options) (*Server, error) {
	c := opts.Config
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{opts: opts, conf: c, log: opts.Logger, now: opts.Now, rand: opts.Rand, registry: opts.Registry}
	s.cfg = settings{
		Domain: c.Server.Domain, WebSocket: c.Server.WebSocket, Keepalive: c.Server.ConnectionKeepalive,
		SessionTTL: c.Server.SessionTTL, PresenceTTL: c.Presence.TTL, PairingTTL: c.Pairing.TTL,
		AutoApprove: c.Server.AutoApproveDevices, MaxAutoDevices: c.Server.MaxAutoDevicesPerUser,
		Versions: c.SupportedVersions(), TrustedProxies: c.Server.TrustedProxies,
		NodeID: c.Server.NodeID,
	}
	s.streams.maxOpen, s.streams.maxHandshaking = c.Security.MaxConnectionsPerIP, c.Security.MaxHandshakesPerIP
	s.metrics = metrics.New(s.registry)
	metrics.RegisterRuntime(s.registry)

	var st interface {
		store.Store
		store.Migrator
	}
	wait := opts.StartupWait
	if c.Storage.PostgresDSN == "" {
		wait = 0
	}
	err := retryStartup(ctx, s.log, "storage", wait, func(ctx context.Context) error {
		var err error
		if st, err = OpenStore(ctx, c); err != nil {
			return err
		}
		if err = migrate(ctx, st, opts.NoMigrate); err != nil {
			st.Close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.store = st
	if s.ca, err = identity.DeviceCA(c.Crypto.FederationSeed); err != nil {
		st.Close()
		return nil, err
	}
	s.caPub = identity.PublicKey32(s.ca)
	s.keys = &noiseKeys{store: st, now: s.now, rand: s.rand, policy: c.Rotation.Noise, log: s.log, rotations: s.metrics.SecretRotationsNoise}
	if err := s.keys.init(ctx, c.Crypto.NoisePrivate, c.Crypto.NoisePublic); err != nil {
		st.Close()
		return nil, err
	}
	if s.ledger, err = ledger.New(string(c.Ledger.Mode), c.Ledger.Target, s.now, s.log); err != nil {
		st.Close()
		return nil, err
	}

	codecSet, features := codecs(c.Media.Transcode)
	s.features = features
	s.admins = secrets.NewAdminTokens(st, s.now, s.rand, c.Rotation.Admin, c.Admin.Token, c.Admin.TokenFile,
		s.log, s.metrics.SecretRotationsAdmin)
	if err := s.admins.Init(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("admin tokens: %w", err)
	}
	s.reg = router.NewRegistry()
	s.router = &router.Router{Registry: s.reg, Log: s.log}
	if c.Storage.RedisURL != "" {
		cl, err := redisstore.Open(redisstore.Options{
			URL: c.Storage.RedisURL, NodeID: c.Server.NodeID, RouteTTL: 3 * c.Server.ConnectionKeepalive,
			Prefix: opts.RedisPrefix, Logger: s.log, Now: s.now,
			BusKey:    identity.ClusterBusKey(c.Crypto.FederationSeed),
			OnRefused: func(reason string) { s.metrics.BusRefused.WithLabelValues(reason).Inc() },
		})
		if err == nil {
			err = retryStartup(ctx, s.log, "redis", opts.StartupWait, cl.Ping)
			if err != nil {
				_ = cl.Close()
				err = fmt.Errorf("storage.redis_url: %w", err)
			}
		}
		if err != nil {
			st.Close()
			return nil, err
		}
		s.cluster, s.presence, s.router.Cluster = cl, cl, cl
	} else {
		s.local = router.NewLocalPresence()
		s.presence = s.local
	}
	s.writer = router.NewWriter(router.WriterConfig{
		Store: st, Registry: s.reg, Logger: s.log,
		OnCommit:     func(n int) { s.metrics.RelayEnqueued.Add(float64(n)) },
		OnEarlyAcked: func(n int) { s.metrics.RelayEarlyAcked.Add(float64(n)) },
		Dispatch:     s.router.NotifyInbox,
	})
	padding := noiseconn.PaddingNone
	if c.Security.Padding == config.PaddingBuckets {
		padding = noiseconn.PaddingBuckets
	}
	fl := c.Security.RateLimit.Frame
	rtr := s.router
	var callBus *session.CallBus // §9.4 call pinning; nil without Redis
	s.calls = media.NewManager(media.Config{
		Codecs: codecSet,
		Deliver: func(dev string, t ccp.FrameType, ch uint32, p []byte) {
			rtr.DeliverLive(dev, t, ch, p, false)
		},
		Metrics: s.metrics, Ledger: s.ledger, Logger: s.log, Now: s.now,
		// Call pinning (§9.4): no-ops without a Cluster.
		OnEnd:        rtr.ReleaseCall,
		OnDisconnect: func(dev string) { callBus.Disconnected(dev) },
	})
	if s.cluster != nil {
		callBus = session.NewCallBus(session.CallBusConfig{Calls: s.calls, Router: rtr, Store: st, Logger: s.log})
		rtr.CallBus = callBus.Handle
	}
	s.sessions = session.NewManager(session.Config{
		Domain: c.Server.Domain, Prologue: []byte(c.Crypto.Prologue), Versions: s.cfg.Versions,
		Features: s.features, Padding: padding,
		AutoApprove: c.Server.AutoApproveDevices, MaxAutoDevices: c.Server.MaxAutoDevicesPerUser,
		Keepalive: c.Server.ConnectionKeepalive, HandshakeTimeout: c.Server.HandshakeTimeout,
		RelayTTL: c.Limits.RelayTTL, PresenceTTL: c.Presence.TTL, OpenChannels: c.Security.OpenChannels,
		MaxInboxEntries: c.Limits.MaxInboxEntries, MaxInboxBytes: c.Limits.MaxInboxBytes,
		Federation: c.Federation.Enabled,
		FrameLimit: ratelimit.Config{Burst: fl.Burst, Window: fl.Window, Penalty: fl.Penalty},
		NodeID:     c.Server.NodeID,
	}, session.Deps{
		Store: st, Router: s.router, Presence: s.presence, Writer: s.writer, Keys: s.keys.current,
		CA: s.ca, Metrics: s.metrics, Ledger: s.ledger, Logger: s.log, Now: s.now, Rand: s.rand,
		Calls: s.calls, CallBus: callBus,
	})
	zone := func(z config.RateLimit) *ratelimit.Limiter {
		return ratelimit.New(ratelimit.Config{Burst: z.Burst, Window: z.Window, Penalty: z.Penalty}, s.now)
	}
	s.httpZone = zone(c.Security.RateLimit.HTTP)
	s.connectZone = zone(c.Security.RateLimit.Connect)
	s.pairingZone = zone(c.Security.RateLimit.Pairing)
	s.metricsH = metrics.Handler(s.registry)
	var fp *[32]byte
	if c.Transport.RealityEnabled() {
		f := c.Transport.RealityFingerprint
		fp = &f
	}
	s.api = httpapi.New(httpapi.Deps{
		Store: st, Logger: s.log, Now: s.now, Rand: s.rand,
		Domain: c.Server.Domain, SessionTTL: c.Server.SessionTTL, PairingTTL: c.Pairing.TTL,
		AllowServerKeys: c.Pairing.AllowServerKeys, MaxRequestBody: c.Server.MaxRequestBody,
		WebSocket: c.Server.WebSocket, Versions: s.cfg.Versions,
		RequireEncryptedFrames: c.Security.RequireEncryptedFrames, Prologue: c.Crypto.Prologue,
		RealityCert: c.Transport.RealityCert, RealityFingerprint: fp,
		CA: s.ca, NoiseKeys: s.keys.stored,
		Live:   s.live,
		Revoke: s.router.Revoke,
		Ledger: s.ledger, Metrics: s.metrics,
		TransportRTT: s.health.median,
		Admin:        s.admins.Check,
		Pairing:      s.pairingZone,
		ClientIP:     s.clientIP,
		ServerInfo:   func() any { return s.serverInfo() },
	})
	return s, nil
}

// OpenStore opens the configured storage backend.
func OpenStore(ctx context.Context, c *config.Config) (interface {
	store.Store
	store.Migrator
}, error) {
	if c.Storage.PostgresDSN != "" {
		st, err := postgres.Open(ctx, c.Storage.PostgresDSN)
		if err != nil {
			// The DSN may hold a password: name the key, not the value.
			return nil, fmt.Errorf("storage.postgres_dsn: %w", err)
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, c.Storage.SQLitePath)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", c.Storage.SQLitePath, err)
	}
	return st, nil
}

func migrate(ctx context.Context, st store.Store, noMigrate bool) error {
	m, ok := st.(store.Migrator)
	if !ok {
		return nil
	}
	if noMigrate {
		_, pending, err := m.SchemaVersion(ctx)
		if err != nil {
			return err
		}
		if pending {
			return store.ErrPendingMigrations
		}
		return nil
	}
	_, _, err := m.Migrate(ctx)
	return err
}

// retryStartup runs fn until it succeeds, wait has passed, ctx ends or
// the error cannot heal (pending migrations, a newer schema), logging
// each failure with the next delay (1 s doubling to 15 s).
func retryStartup(ctx context.Context, log *slog.Logger, what string, wait time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(wait)
	delay := time.Second
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || errors.Is(err, store.ErrPendingMigrations) || errors.Is(err, store.ErrSchemaTooNew) ||
			ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			if err == nil && attempt > 1 {
				log.Info(what+" is available", "attempts", attempt)
			}
			return err
		}
		log.Error(what+" unavailable at start; retrying", "err", err, "attempt", attempt, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, 15*time.Second)
	}
}

// TLSConfig returns the TLS configuration of §3.1.
func TLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// Listen binds the configured address (or addr when not empty).
func (s *Server) Listen(addr string) error {
	if addr == "" {
		addr = s.conf.Server.Bind
	}
	tlsConf, err := TLSConfig(s.conf.Server.TLSCert, s.conf.Server.TLSKey)
	if err != nil {
		return fmt.Errorf("loading TLS: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hl := newHandshakeListener(ln, tlsConf, s.conf.Server.ReadHeaderTimeout, s.conf.Security.MaxHandshakesPerIP, s.conf.Server.TrustedProxies)
	hl.observe = func(result string) { s.metrics.TLSHandshakes.WithLabelValues(result).Inc() }
	s.ln = hl
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	k := s.conf.Server.ConnectionKeepalive
	s.httpSrv = &http.Server{
		Handler:           &handler{s: s},
		ReadHeaderTimeout: s.conf.Server.ReadHeaderTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Protocols:         &protos,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: int(s.conf.Server.MaxConcurrentStreams),
			MaxReadFrameSize:     16384,
			// Our HPACK encoder indexes nothing: a /connect stream gets one
			// header block, so the table's maps would only hold memory on
			// every idle connection. The decoder keeps the default 4096:
			// net/http enforces a smaller value at once, before the client
			// has seen the SETTINGS, and a client that indexed headers in
			// the meantime gets a COMPRESSION_ERROR.
			MaxEncoderHeaderTableSize: 1,
			SendPingTimeout:           k,
			PingTimeout:               2 * k,
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return nil
}

// Addr returns the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then shuts down gracefully (§6.13).
func (s *Server) Serve(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); s.writer.Run(bg) }()
	s.bgWG.Add(1)
	go func() { defer s.bgWG.Done(); s.background(bg) }()
	if s.cluster != nil {
		s.bgWG.Add(2)
		go func() {
			defer s.bgWG.Done()
			_ = s.cluster.Run(bg, s.router.Handle, s.router.CatchUpAll)
		}()
		go func() { defer s.bgWG.Done(); s.refreshRoutes(bg) }()
		// Call pinning (§9.4): renew call:/callchan: of this node's calls.
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			s.router.RefreshCallsEvery(bg, s.cfg.Keepalive, func() []router.CallRef { return session.OwnedCalls(s.calls) })
		}()
	}

	errc := make(chan error, 1)
	go func() { errc <- s.httpSrv.Serve(s.ln) }()
	s.log.Info("listening", "addr", s.ln.Addr().String(), "domain", s.cfg.Domain)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.draining.Store(true)
	s.log.Info("shutting down", "connections", s.sessions.Active())
	s.sessions.Drain()
	grace := s.conf.Server.ShutdownGrace
	deadline := time.Now().Add(grace)
	for s.sessions.Active() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(context.Background(), max(grace, time.Second))
	_ = s.httpSrv.Shutdown(sctx)
	cancel()
	_ = s.httpSrv.Close()
	// Streams net/http no longer tracks (taken-over HTTP/1.1, WebSocket)
	// end before the storage they use closes.
	if !s.hijacked.abortAll(5 * time.Second) {
		s.log.Warn("some /connect streams did not end in time")
	}
	stopBG()
	<-writerDone
	s.bgWG.Wait()
	_ = s.ledger.Close()
	if s.cluster != nil {
		_ = s.cluster.Close()
	}
	_ = s.store.Close()
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// readiness is the state of each dependency behind /readyz (§3.7).
type readiness struct {
	Storage  error
	Redis    error // nil also without Redis
	HasRedis bool
	Draining bool
}

func (r readiness) ok() bool { return !r.Draining && r.Storage == nil && r.Redis == nil }

// report is the ?verbose body: the §3.7 word, then one key=value line
// per dependency.
func (r readiness) report() string {
	word := "ready"
	if !r.ok() {
		word = "degraded"
	}
	state := func(err error) string {
		if err != nil {
			return "error"
		}
		return "ok"
	}
	redis := "none"
	if r.HasRedis {
		redis = state(r.Redis)
	}
	return fmt.Sprintf("%s\nstorage=%s\nredis=%s\ndraining=%t\n", word, state(r.Storage), redis, r.Draining)
}

// ready checks the dependencies of /readyz (§3.7) and logs changes of
// state, so an operator sees when PostgreSQL or Redis goes away and
// comes back.
func (s *Server) ready(ctx context.Context) readiness {
	r := readiness{Draining: s.draining.Load(), HasRedis: s.cluster != nil}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r.Storage = s.store.Ping(ctx)
	if s.cluster != nil {
		r.Redis = s.cluster.Ping(ctx)
	}
	s.noteDependency("storage", &s.storageDown, r.Storage)
	if s.cluster != nil {
		s.noteDependency("redis", &s.redisDown, r.Redis)
	}
	return r
}

// noteDependency logs a dependency going down or coming back once per
// transition.
func (s *Server) noteDependency(name string, down *atomic.Bool, err error) {
	if err != nil && !down.Swap(true) {
		s.log.Error(name+" unavailable", "err", err)
	} else if err == nil && down.Swap(false) {
		s.log.Info(name + " available again")
	}
}

// live reports whether the session's connection is open (§8.2): on this
// node when the registry holds it; on another node when the session is
// not closed and the device's route still names that node (a node that
// died stops renewing its routes, §9.4).
func (s *Server) live(ss store.Session) bool {
	if ss.ClosedAt != nil {
		return false
	}
	if p := s.reg.Lookup(ss.DeviceID); p != nil && p.SessionID() == ss.ID {
		return true
	}
	if s.cluster == nil || ss.NodeID == s.cfg.NodeID {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	node, err := s.cluster.RouteOf(ctx, ss.DeviceID)
	return err == nil && node == ss.NodeID
}

// refreshRoutes renews this node's route keys every K (§9.4).
func (s *Server) refreshRoutes(ctx context.Context) {
	t := time.NewTicker(s.cfg.Keepalive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		peers := s.reg.All()
		devs := make([]string, len(peers))
		for i, p := range peers {
			devs[i] = p.DeviceID()
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := s.cluster.RefreshRoutes(rctx, devs); err != nil {
			s.log.Warn("refreshing routes", "err", err)
		}
		cancel()
	}
}

// clientIP is the client IP of §3.2.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	return ratelimit.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), s.cfg.TrustedProxies)
}

// background runs the periodic tasks of §9.3.
func (s *Server) background(ctx context.Context) {
	minute := time.NewTicker(60 * time.Second)
	defer minute.Stop()
	hour := time.NewTicker(time.Hour)
	defer hour.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-minute.C:
			s.purgeInbox(ctx)
			if s.local != nil {
				s.local.Sweep(s.now())
			}
			if err := s.keys.tick(ctx); err != nil {
				s.log.Warn("noise key rotation", "err", err)
			}
			if err := s.admins.Tick(ctx); err != nil {
				s.log.Warn("admin token rotation", "err", err)
			}
		case <-hour.C:
			if n, err := s.store.DeleteClosedSessions(ctx, s.now().Add(-s.cfg.SessionTTL)); err != nil {
				s.log.Warn("deleting old sessions", "err", err)
			} else if n > 0 {
				s.log.Info("deleted old sessions", "count", n)
			}
		}
	}
}

func (s *Server) purgeInbox(ctx context.Context) {
	n, err := s.store.PurgeExpiredInbox(ctx, s.now())
	if err != nil {
		s.log.Warn("purging expired inbox entries", "err", err)
		return
	}
	if n > 0 {
		s.metrics.RelayExpired.Add(float64(n))
		s.log.Info("purged expired inbox entries", "count", n)
	}
}

// Reload is the SIGHUP action. It reloads the noise_keys and admin_tokens
// tables at once (§12.1, §10.4). When next is the configuration file read
// again, it also applies the settings that can change without a restart
// (issue: rate-limit zones and the log level, through level); every
// other key keeps its value until the next start.
func (s *Server) Reload(ctx context.Context, next *config.Config, level *slog.LevelVar) error {
	var errs []error
	if err := s.keys.reload(ctx); err != nil {
		errs = append(errs, fmt.Errorf("noise keys: %w", err))
	}
	if err := s.admins.Reload(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin tokens: %w", err))
	}
	if next != nil {
		zone := func(name string, l *ratelimit.Limiter, z config.RateLimit) {
			if err := l.SetConfig(ratelimit.Config{Burst: z.Burst, Window: z.Window, Penalty: z.Penalty}); err != nil {
				errs = append(errs, fmt.Errorf("security.rate_limit %s: %w", name, err))
			}
		}
		rl := next.Security.RateLimit
		zone("http", s.httpZone, rl.HTTP)
		zone("connect", s.connectZone, rl.Connect)
		zone("pairing", s.pairingZone, rl.Pairing)
		if level != nil {
			level.Set(next.Log.Level)
		}
	}
	s.log.Info("reloaded", "noise_keys", len(s.keys.current()), "errors", len(errs))
	return errors.Join(errs...)
}
