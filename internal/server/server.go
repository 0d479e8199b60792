// Package server wires a Config into a running mail server: it opens the
// mail store and the audit log, builds TLS, the authenticator and the
// delivery agent, binds every configured listener and runs the protocol
// servers on them, and shuts them down gracefully. It holds no protocol
// logic of its own.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/connserver"
	"github.com/letterbox/letterbox/internal/delivery"
	"github.com/letterbox/letterbox/internal/imap"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/postgres"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
	"github.com/letterbox/letterbox/internal/pop3"
	"github.com/letterbox/letterbox/internal/smtp"
)

// protocolServer is what every protocol package's Server offers.
type protocolServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Server is a running Letterbox instance.
type Server struct {
	Config *config.Config
	Store  mailstore.Store
	Auth   *auth.Authenticator
	Agent  *delivery.Agent
	TLS    *tls.Config
	Logger *slog.Logger
	// Audit is the audit log of security events, nil when
	// audit.enabled is false.
	Audit *audit.Log
	// Limiter holds the connection and session limits of [limits],
	// shared by every listener.
	Limiter *connserver.Limiter

	mu        sync.Mutex
	listeners []*listener
	wg        sync.WaitGroup
	stopGC    context.CancelFunc
}

// gcInterval is how often unreferenced message bodies (expunged messages,
// crash leftovers) are removed.
const gcInterval = time.Hour

type listener struct {
	name string
	l    net.Listener
	srv  protocolServer
}

// storeOpenTimeout bounds connecting to (and migrating) a PostgreSQL
// store at start.
const storeOpenTimeout = time.Minute

// OpenStore opens the mail store the config's [store] names: the embedded
// sqlite store in data_dir, or the postgres backend (whose schema it brings
// up to date, see postgres.Migrate).
func OpenStore(cfg *config.Config, logger *slog.Logger) (mailstore.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir %s: %w", cfg.DataDir, err)
	}
	if cfg.Store.Backend == config.BackendPostgres {
		if err := os.MkdirAll(cfg.Store.BlobDir, 0o700); err != nil {
			return nil, fmt.Errorf("store.blob_dir %s: %w", cfg.Store.BlobDir, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
		defer cancel()
		return postgres.Open(ctx, postgres.Options{URL: cfg.Store.PostgresURL, BlobDir: cfg.Store.BlobDir, Logger: logger})
	}
	return sqlite.Open(cfg.DataDir, logger)
}

// MigrateStore brings the store's schema up to date and reports how many
// migrations it applied (`letterbox store migrate`).
func MigrateStore(cfg *config.Config, logger *slog.Logger) (int, error) {
	if cfg.Store.Backend == config.BackendPostgres {
		ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
		defer cancel()
		return postgres.Migrate(ctx, cfg.Store.PostgresURL)
	}
	st, err := OpenStore(cfg, logger) // sqlite migrates when it opens
	if err != nil {
		return 0, err
	}
	return 0, st.Close()
}

// NewAuthenticator returns the authenticator over store's accounts, with
// the default login throttle (New replaces it with NewThrottle's, which
// applies [limits]).
//
// Accounts without SCRAM keys (made before SCRAM support) get them at
// their next successful password login (auth.Authenticator.SaveSCRAM),
// stored only if the password is unchanged meanwhile.
func NewAuthenticator(store mailstore.Store) *auth.Authenticator {
	return &auth.Authenticator{
		Throttle: auth.NewThrottle(),
		Credentials: func(ctx context.Context, user string) (auth.Credentials, error) {
			a, err := store.Account(ctx, user)
			if errors.Is(err, mailstore.ErrNoSuchAccount) || errors.Is(err, mailstore.ErrInvalidName) {
				return auth.Credentials{}, auth.ErrUnknownUser
			}
			if err != nil {
				return auth.Credentials{}, err
			}
			return auth.Credentials{Name: a.Name, PasswordHash: a.PasswordHash, SCRAMSHA256: a.SCRAMSHA256}, nil
		},
		SaveSCRAM: store.SetSCRAMIfHash,
	}
}

// NewThrottle returns the login throttle that [limits] configures.
func NewThrottle(l config.Limits, logger *slog.Logger) *auth.Throttle {
	return &auth.Throttle{
		BaseDelay:  l.LoginFailureDelay.D(),
		MaxDelay:   l.LoginMaxDelay.D(),
		Forget:     l.LoginForgetAfter.D(),
		MaxEntries: l.LoginMaxTracked,
		BlockAfter: l.LoginBlockAfter,
		BlockFor:   l.LoginBlockDuration.D(),
		Logger:     logger.With("component", "auth"),
	}
}

// NewLimiter returns the connection and session limits that [limits]
// configures, shared by every listener. Loopback addresses are exempt from
// max_connections_per_ip: a webmail, a proxy or the local MTA connects from
// there on behalf of many users.
func NewLimiter(l config.Limits) *connserver.Limiter {
	return &connserver.Limiter{
		MaxConns:              l.MaxConnections,
		MaxConnsPerAddr:       l.MaxConnectionsPerIP,
		MaxSessionsPerAccount: l.MaxSessionsPerAccount,
		ExemptAddr:            func(a netip.Addr) bool { return a.IsLoopback() },
	}
}

// OpenAudit opens the audit log cfg names, or returns nil when auditing is
// off. The `user` commands use it too: every process appends to one chain.
func OpenAudit(cfg *config.Config, logger *slog.Logger) (*audit.Log, error) {
	if !cfg.Audit.Enabled {
		return nil, nil
	}
	l, err := audit.Open(cfg.Audit.Dir, audit.Options{MaxFileSize: cfg.Audit.MaxFileSize,
		Logger: logger.With("component", "audit")})
	if err != nil {
		return nil, fmt.Errorf("audit log (audit.dir %s): %w", cfg.Audit.Dir, err)
	}
	return l, nil
}

// NewAgent returns the local delivery agent for cfg.
func NewAgent(cfg *config.Config, store mailstore.Store, logger *slog.Logger) *delivery.Agent {
	return &delivery.Agent{
		Store:          store,
		Hostname:       cfg.Hostname,
		Domains:        cfg.Domains,
		MaxMessageSize: cfg.MaxMessageSize,
		Logger:         logger,
		// quota.over_quota: "defer" answers 452 4.2.2 instead of 552 5.2.2.
		OverQuotaTemporary: cfg.Quota.OverQuotaTemporary(),
	}
}

// New opens the store and prepares TLS; it binds nothing yet.
func New(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	tlsConfig, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	store, err := OpenStore(cfg, logger)
	if err != nil {
		return nil, err
	}
	auditLog, err := OpenAudit(cfg, logger)
	if err != nil {
		store.Close()
		return nil, err
	}
	warnMissingSCRAM(store, logger)
	authn := NewAuthenticator(store)
	authn.Throttle = NewThrottle(cfg.Limits, logger)
	authn.AllowPlaintextWithoutTLS = !cfg.TLS.AuthRequiresTLS()
	authn.Logger = logger.With("component", "auth")
	return &Server{
		Config:  cfg,
		Store:   store,
		Auth:    authn,
		Limiter: NewLimiter(cfg.Limits),
		Agent:   NewAgent(cfg, store, logger),
		TLS:     tlsConfig,
		Logger:  logger,
		Audit:   auditLog,
	}, nil
}

// warnMissingSCRAM logs the accounts that have no SCRAM keys (made before
// SCRAM support and not logged in with a password since): the server
// offers SCRAM-SHA-256 to everyone, and a client that picks it (mbsync and
// other Cyrus SASL clients prefer it and do not fall back) fails for those
// accounts like a wrong password until one PLAIN/LOGIN login or `letterbox
// user passwd` stores their keys. Dovecot behaves the same with a passdb
// lacking SCRAM credentials; the warning tells the operator who is
// affected.
func warnMissingSCRAM(store mailstore.Store, logger *slog.Logger) {
	accts, err := store.Accounts(context.Background())
	if err != nil {
		return // the server's first real use of the store reports it
	}
	var missing []string
	for _, a := range accts {
		if a.SCRAMSHA256 == "" {
			missing = append(missing, a.Name)
		}
	}
	if len(missing) == 0 {
		return
	}
	const show = 10
	names := missing
	if len(names) > show {
		names = names[:show]
	}
	logger.Warn("accounts without SCRAM keys: a client choosing SCRAM-SHA-256 fails for them until one password login (PLAIN/LOGIN) or `letterbox user passwd`",
		"count", len(missing), "first", strings.Join(names, ","))
}

// recorder is what the protocol servers record audit events with: nil
// (not a nil *audit.Log) when auditing is off.
func (s *Server) recorder() audit.Recorder {
	if s.Audit == nil {
		return nil
	}
	return s.Audit
}

// Close releases what New opened, for a server that is not started or
// whose Start failed (Shutdown does it for a started one).
func (s *Server) Close() error {
	var errs []error
	if s.Audit != nil {
		errs = append(errs, s.Audit.Close())
	}
	return errors.Join(append(errs, s.Store.Close())...)
}

// Start binds every configured listener and starts serving. When it
// returns nil, every listener accepts connections (the readiness signal:
// the "listening" log lines name the bound addresses).
func (s *Server) Start() error {
	cfg := s.Config
	lim := cfg.Limits
	type spec struct {
		name, addr  string
		implicitTLS bool
		make        func() protocolServer
	}
	smtpServer := func(lmtp bool) func() protocolServer {
		return func() protocolServer {
			return &smtp.Server{Agent: s.Agent, TLSConfig: s.TLS, Hostname: cfg.Hostname, LMTP: lmtp,
				Logger:        s.Logger.With("listener", map[bool]string{false: "smtp", true: "lmtp"}[lmtp]),
				Limiter:       s.Limiter,
				MaxRecipients: lim.MaxRecipients,
				ReadTimeout:   lim.SMTPCommandTimeout.D(),
				WriteTimeout:  lim.WriteTimeout.D()}
		}
	}
	pop3Server := func(name string) func() protocolServer {
		return func() protocolServer {
			return &pop3.Server{Store: s.Store, Auth: s.Auth, TLSConfig: s.TLS, Hostname: cfg.Hostname,
				Logger: s.Logger.With("listener", name), Audit: s.recorder(),
				Limiter:      s.Limiter,
				IdleTimeout:  lim.POP3IdleTimeout.D(),
				WriteTimeout: lim.WriteTimeout.D()}
		}
	}
	imapServer := func(name string) func() protocolServer {
		return func() protocolServer {
			return &imap.Server{Store: s.Store, Auth: s.Auth, TLSConfig: s.TLS, Hostname: cfg.Hostname,
				Logger: s.Logger.With("listener", name), Audit: s.recorder(),
				Limiter:        s.Limiter,
				IdleTimeout:    lim.IMAPIdleTimeout.D(),
				WriteTimeout:   lim.WriteTimeout.D(),
				MaxLineLength:  lim.IMAPMaxLineLength,
				MaxMessageSize: cfg.MaxMessageSize,
				MaxMailboxes:   lim.MaxMailboxesPerAccount,
				MaxSearchText:  lim.IMAPMaxSearchText}
		}
	}
	specs := []spec{
		{"smtp", cfg.Listen.SMTP, false, smtpServer(false)},
		{"lmtp", cfg.Listen.LMTP, false, smtpServer(true)},
		{"imap", cfg.Listen.IMAP, false, imapServer("imap")},
		{"imaps", cfg.Listen.IMAPS, true, imapServer("imaps")},
		{"pop3", cfg.Listen.POP3, false, pop3Server("pop3")},
		{"pop3s", cfg.Listen.POP3S, true, pop3Server("pop3s")},
	}
	for _, sp := range []struct{ name, addr string }{
		{"submission", cfg.Listen.Submission},
	} {
		if sp.addr != "" {
			s.Logger.Info("listener not available in this version, skipped", "listener", sp.name, "addr", sp.addr)
		}
	}
	if s.Auth.AllowPlaintextWithoutTLS {
		s.Logger.Warn("tls.require_tls_for_auth is false: plaintext passwords (IMAP LOGIN, AUTHENTICATE PLAIN/LOGIN, " +
			"POP3 USER/PASS, AUTH PLAIN/LOGIN) are accepted on unencrypted connections from any address")
	}
	for _, sp := range specs {
		if sp.addr == "" {
			continue
		}
		l, err := listen(sp.addr)
		if err != nil {
			s.closeListeners()
			return &config.Error{File: cfgName(cfg), Key: "listen." + sp.name, Msg: err.Error()}
		}
		if sp.implicitTLS {
			l = tls.NewListener(l, s.TLS)
		}
		s.listeners = append(s.listeners, &listener{name: sp.name, l: l, srv: sp.make()})
	}
	gcCtx, stopGC := context.WithCancel(context.Background())
	s.stopGC = stopGC
	s.wg.Add(1)
	go s.collectGarbage(gcCtx)
	for _, l := range s.listeners {
		s.Logger.Info("listening", "listener", l.name, "addr", l.l.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := l.srv.Serve(l.l); err != nil && !errors.Is(err, net.ErrClosed) {
				s.Logger.Error("listener stopped", "listener", l.name, "err", err)
			}
		}()
	}
	return nil
}

// collectGarbage runs the store's blob garbage collection at start and then
// every gcInterval until Shutdown.
func (s *Server) collectGarbage(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	for {
		start := time.Now()
		n, err := s.Store.CollectGarbage(ctx)
		if err != nil && ctx.Err() == nil {
			s.Logger.Error("blob garbage collection", "err", err)
		} else if n > 0 {
			s.Logger.Info("blob garbage collection", "removed", n, "duration", time.Since(start).Round(time.Millisecond))
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Addr returns the bound address of the named listener, or nil.
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if l.name == name {
			return l.l.Addr()
		}
	}
	return nil
}

func cfgName(cfg *config.Config) string {
	if cfg.File == "" {
		return "local mode"
	}
	return cfg.File
}

func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		// A stale socket from a previous run would make Listen fail.
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.l.Close()
	}
}

// Shutdown stops accepting, lets in-flight work finish (or refuses it
// cleanly with 421 / -ERR) until ctx ends, then closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.listeners))
	for i, l := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.srv.Shutdown(ctx)
		}()
	}
	wg.Wait()
	if s.stopGC != nil {
		s.stopGC()
	}
	s.wg.Wait()
	// SCRAM keys being saved after a password login go in before the
	// store closes.
	errs = append(errs, s.Auth.Wait(ctx))
	if s.Audit != nil {
		errs = append(errs, s.Audit.Close())
	}
	errs = append(errs, s.Store.Close())
	return errors.Join(errs...)
}
