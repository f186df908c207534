// Package listener accepts the connections the datapath redirected to the
// proxy and pairs each with the original destination the kernel recorded.
// A connection the kernel knows nothing about is refused: the destination
// never comes from anything the client controls.
package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/intransit/intransit/pkg/redirect"
)

// Resolver yields the original destination of a redirected connection, keyed
// by the client's address (the remote address seen on accept).
type Resolver interface {
	Take(remote netip.AddrPort) (redirect.Orig, error)
}

// Handler takes ownership of an accepted connection.
// It runs on the accept goroutine and must return quickly (start a
// goroutine): the caller can then count the session before the next accept,
// so a shutdown that stops accepting never misses one.
type Handler func(c *net.TCPConn, orig redirect.Orig)

// Refuser is told about each connection refused for lack of an entry.
type Refuser func(remote, local netip.AddrPort, err error)

// Listener is the proxy's pair of loopback listeners.
type Listener struct {
	lns  []*net.TCPListener
	log  *slog.Logger
	port uint16

	// Per-namespace addresses (pod gateways on this host), added and
	// removed while serving; see SetExtra.
	mu      sync.Mutex
	extra   map[netip.Addr]*net.TCPListener
	serving func(*net.TCPListener) // starts an accept loop; nil until Serve
	closed  bool
}

// Listen binds 127.0.0.1:port and [::1]:port, and pod:port when pod is
// valid (where connects from pod network namespaces are sent). IPv6 is
// optional: without it, IPv6 connects redirected to ::1 simply fail, which
// is the safe outcome.
func Listen(port uint16, pod netip.Addr, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{log: log, port: port, extra: map[netip.Addr]*net.TCPListener{}}
	v4, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		return nil, fmt.Errorf("listen on proxy.port 127.0.0.1:%d: %w", port, err)
	}
	l.lns = append(l.lns, v4)
	if pod.IsValid() {
		// Reachable from the network too: anyone dialling it without a
		// redirect entry is refused like any direct dial (threat T1).
		pl, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(pod, port)))
		if err != nil {
			v4.Close()
			return nil, fmt.Errorf("listen on proxy.podAddress %s:%d: %w", pod, port, err)
		}
		l.lns = append(l.lns, pl)
	}
	v6, err := net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback, Port: int(port)})
	if err != nil {
		log.Warn("no IPv6 proxy listener; IPv6 connects to protected ports will be refused", "address", fmt.Sprintf("[::1]:%d", port), "error", err)
	} else {
		l.lns = append(l.lns, v6)
	}
	return l, nil
}

// Addrs lists the bound addresses.
func (l *Listener) Addrs() []net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]net.Addr, 0, len(l.lns)+len(l.extra))
	for _, ln := range l.lns {
		out = append(out, ln.Addr())
	}
	for _, ln := range l.extra {
		out = append(out, ln.Addr())
	}
	return out
}

// SetExtra makes the proxy listen on exactly these addresses besides its
// fixed ones: host addresses that pod namespaces reach (their gateways).
// Like any proxy address, a direct dial there finds no redirect entry and
// is refused (threat T1). Addresses that cannot be bound are reported and
// skipped; the rest still apply.
func (l *Listener) SetExtra(addrs []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	want := map[netip.Addr]bool{}
	var errs []error
	for _, a := range addrs {
		want[a] = true
		if _, ok := l.extra[a]; ok || l.fixed(a) {
			continue
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, l.port)))
		if err != nil {
			errs = append(errs, fmt.Errorf("listen on %s:%d for pod namespaces: %w", a, l.port, err))
			continue
		}
		l.extra[a] = ln
		if l.serving != nil {
			l.serving(ln)
		}
	}
	for a, ln := range l.extra {
		if !want[a] {
			ln.Close()
			delete(l.extra, a)
		}
	}
	return errors.Join(errs...)
}

// fixed reports whether a is one of the addresses bound by Listen.
func (l *Listener) fixed(a netip.Addr) bool {
	for _, ln := range l.lns {
		if ln.Addr().(*net.TCPAddr).AddrPort().Addr().Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

// Serve accepts until ctx is done or Close is called. Each connection is
// resolved on the accept goroutine (one map syscall) and handed to handle on
// its own goroutine.
func (l *Listener) Serve(ctx context.Context, res Resolver, handle Handler, refuse Refuser) error {
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	start := func(ln *net.TCPListener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.acceptLoop(ln, res, handle, refuse); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
	}
	l.mu.Lock()
	for _, ln := range l.lns {
		start(ln)
	}
	for _, ln := range l.extra {
		start(ln)
	}
	l.serving = start
	l.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Listener) acceptLoop(ln *net.TCPListener, res Resolver, handle Handler, refuse Refuser) error {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and friends: log and keep serving rather than exit.
			l.log.Error("accept failed", "error", err)
			continue
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		orig, err := res.Take(netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
		if err != nil {
			// Reset rather than FIN: the client learns at once that nothing
			// will be relayed.
			_ = c.SetLinger(0)
			c.Close()
			if refuse != nil {
				refuse(remote, local, err)
			}
			continue
		}
		handle(c, orig) // returns at once: it starts the session's goroutine
	}
}

// Close stops accepting. Already accepted connections are not touched.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	var errs []error
	for a, ln := range l.extra {
		ln.Close()
		delete(l.extra, a)
	}
	for _, ln := range l.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
