package connserver

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Errors of Limiter.AcquireConn: the connection is refused with the
// protocol's "try again later" and closed.
var (
	// ErrTooManyConns: the server holds max_connections connections.
	ErrTooManyConns = errors.New("too many connections")
	// ErrTooManyConnsFromAddr: the client address holds
	// max_connections_per_ip connections.
	ErrTooManyConnsFromAddr = errors.New("too many connections from this address")
)

// Limiter bounds what clients can make one server process hold: open
// connections overall and per client address (IPv6 aggregated to its /64,
// as one host usually owns a whole prefix), and logged-in IMAP/POP3
// sessions per account. One Limiter is shared by every listener (imap,
// imaps, pop3, pop3s, smtp, lmtp), so the limits count across protocols.
// Its memory is proportional to the connections and sessions it counts:
// an address or account is forgotten when its last one ends.
//
// A zero limit means no limit. Set the fields before first use. The nil
// *Limiter limits nothing.
type Limiter struct {
	MaxConns              int
	MaxConnsPerAddr       int
	MaxSessionsPerAccount int
	// ExemptAddr, if set, exempts addresses from MaxConnsPerAddr (not from
	// MaxConns): the server wires loopback here, where a webmail, a proxy
	// or the local MTA speaks for many users from one address.
	ExemptAddr func(netip.Addr) bool

	mu         sync.Mutex
	conns      int
	perAddr    map[netip.Prefix]int
	perAccount map[string]int

	// Refusals are logged at warn level, at most one line per second per
	// reason, with the number of refusals not logged since; a connection
	// flood must not become a log flood.
	logMu      sync.Mutex
	logLast    map[error]time.Time
	suppressed map[error]int

	rejecting chan struct{} // bounds the goroutines of Reject
	initOnce  sync.Once
	now       func() time.Time // tests
}

// maxRejecting bounds the refusals being written at once; beyond it a
// refused connection is closed without a word.
const maxRejecting = 64

// rejectTimeout bounds the write of a refusal (and, on an implicit-TLS
// listener, the handshake it needs).
const rejectTimeout = 5 * time.Second

func (l *Limiter) init() {
	l.initOnce.Do(func() {
		l.perAddr = make(map[netip.Prefix]int)
		l.perAccount = make(map[string]int)
		l.logLast = make(map[error]time.Time)
		l.suppressed = make(map[error]int)
		l.rejecting = make(chan struct{}, maxRejecting)
	})
}

// AddrIP returns the IP address of a connection's remote address; it is
// invalid for connections without one (unix sockets).
func AddrIP(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// addrKey returns the key an address is counted under: the address
// itself, or its /64 for IPv6.
func addrKey(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// AcquireConn counts a new connection from remote. It returns the release
// function to call once when the connection has ended, or
// ErrTooManyConns / ErrTooManyConnsFromAddr (logged at warn level with
// log) when a limit is reached.
func (l *Limiter) AcquireConn(remote net.Addr, log *slog.Logger) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	l.init()
	ip := AddrIP(remote)
	keyed := ip.IsValid() && l.MaxConnsPerAddr > 0 && (l.ExemptAddr == nil || !l.ExemptAddr(ip))
	var key netip.Prefix
	if keyed {
		key = addrKey(ip)
	}
	l.mu.Lock()
	switch {
	case l.MaxConns > 0 && l.conns >= l.MaxConns:
		err = ErrTooManyConns
	case keyed && l.perAddr[key] >= l.MaxConnsPerAddr:
		err = ErrTooManyConnsFromAddr
	}
	if err != nil {
		l.mu.Unlock()
		limit, max := "max_connections", l.MaxConns
		if err == ErrTooManyConnsFromAddr {
			limit, max = "max_connections_per_ip", l.MaxConnsPerAddr
		}
		l.logRefusal(log, err, "connection refused: "+err.Error(), "remote", addrString(remote), "limit", limit, "max", max)
		return nil, err
	}
	l.conns++
	if keyed {
		l.perAddr[key]++
	}
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.conns--
			if keyed {
				if l.perAddr[key] <= 1 {
					delete(l.perAddr, key)
				} else {
					l.perAddr[key]--
				}
			}
		})
	}, nil
}

// AcquireSession counts a logged-in IMAP or POP3 session of account (any
// case). It returns the release function to call once when the session
// logs out or ends, or ok false when the account already has
// MaxSessionsPerAccount sessions; the caller answers with the protocol's
// refusal and logs it.
func (l *Limiter) AcquireSession(account string) (release func(), ok bool) {
	if l == nil || l.MaxSessionsPerAccount <= 0 {
		return func() {}, true
	}
	l.init()
	key := strings.ToLower(account)
	l.mu.Lock()
	if l.perAccount[key] >= l.MaxSessionsPerAccount {
		l.mu.Unlock()
		return nil, false
	}
	l.perAccount[key]++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.perAccount[key] <= 1 {
				delete(l.perAccount, key)
			} else {
				l.perAccount[key]--
			}
		})
	}, true
}

// Counts returns the connections and logged-in sessions being counted
// (tests and metrics).
func (l *Limiter) Counts() (conns, addrs, accounts int) {
	if l == nil {
		return 0, 0, 0
	}
	l.init()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns, len(l.perAddr), len(l.perAccount)
}

// Reject writes line (the protocol's refusal, CRLF included) to c and
// closes it, in the background with a deadline of a few seconds, so that
// a client that does not read (or, on an implicit-TLS listener, does not
// finish the handshake) holds up neither the accept loop nor anyone else.
// At most 64 refusals are in progress at once; beyond that a refused
// connection is closed without a word.
func (l *Limiter) Reject(c net.Conn, line string) {
	if l == nil {
		c.Close()
		return
	}
	l.init()
	select {
	case l.rejecting <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.rejecting }()
		c.SetDeadline(time.Now().Add(rejectTimeout))
		c.Write([]byte(line))
		c.Close()
	}()
}

func (l *Limiter) logRefusal(log *slog.Logger, reason error, msg string, args ...any) {
	if log == nil {
		return
	}
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.logMu.Lock()
	if last, ok := l.logLast[reason]; ok && now.Sub(last) < time.Second {
		l.suppressed[reason]++
		l.logMu.Unlock()
		return
	}
	l.logLast[reason] = now
	n := l.suppressed[reason]
	l.suppressed[reason] = 0
	l.logMu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Warn(msg, args...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
