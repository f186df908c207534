// Package sdnotify tells systemd about the service's state (sd_notify(3)):
// readiness, reloads, shutdown, status lines and watchdog keep-alives, as
// datagrams on the unix socket named by $NOTIFY_SOCKET. Without that
// variable (not started by systemd, or Type= is not notify) every call is a
// no-op, so callers need no special case.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends state to the service manager. A nil or zero Notifier is a
// no-op.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns a Notifier for $NOTIFY_SOCKET: an absolute path, or an
// abstract socket written with a leading "@". Unset yields a no-op Notifier;
// another form (e.g. systemd's vsock: addresses) an error and a no-op one.
func New() (*Notifier, error) {
	s := os.Getenv("NOTIFY_SOCKET")
	switch {
	case s == "":
		return &Notifier{}, nil
	case strings.HasPrefix(s, "/"), strings.HasPrefix(s, "@"):
		// Go's unix addresses spell an abstract name with a leading "@".
		return &Notifier{addr: &net.UnixAddr{Name: s, Net: "unixgram"}}, nil
	default:
		return &Notifier{}, fmt.Errorf("NOTIFY_SOCKET=%q: only a path or an @abstract name is supported", s)
	}
}

// Enabled reports whether messages go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Send sends one message made of VAR=value lines.
func (n *Notifier) Send(lines ...string) error {
	if !n.Enabled() || len(lines) == 0 {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Ready reports start-up or a reload complete; status, if not empty, is
// shown by systemctl status.
func (n *Notifier) Ready(status string) error {
	return n.Send(withStatus([]string{"READY=1"}, status)...)
}

// Reloading reports that a reload begins; Ready ends it. MONOTONIC_USEC
// lets systemd (Type=notify-reload, 253+) match it to its reload request.
func (n *Notifier) Reloading(status string) error {
	return n.Send(withStatus([]string{"RELOADING=1", "MONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10)}, status)...)
}

// Stopping reports that shutdown begins.
func (n *Notifier) Stopping(status string) error {
	return n.Send(withStatus([]string{"STOPPING=1"}, status)...)
}

// Status updates the status line alone.
func (n *Notifier) Status(status string) error {
	return n.Send(withStatus(nil, status)...)
}

// Watchdog sends one keep-alive.
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// WatchdogInterval is how often to send keep-alives: half of
// $WATCHDOG_USEC, if systemd's watchdog is on for this process
// ($WATCHDOG_PID unset or this pid).
func WatchdogInterval() (time.Duration, bool) {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0, false
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0, false
	}
	return time.Duration(us) * time.Microsecond / 2, true
}

// RunWatchdog sends a keep-alive at once and then every WatchdogInterval
// until ctx is done; a failed send is passed to onError (if not nil) and
// the keep-alives go on. Without a watchdog (or without $NOTIFY_SOCKET) it
// returns at once.
func (n *Notifier) RunWatchdog(ctx context.Context, onError func(error)) {
	every, ok := WatchdogInterval()
	if !ok || !n.Enabled() {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := n.Watchdog(); err != nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func withStatus(lines []string, status string) []string {
	if status == "" {
		return lines
	}
	// One line: a newline would start another assignment.
	status = strings.Join(strings.Fields(strings.ReplaceAll(status, "\n", "; ")), " ")
	return append(lines, "STATUS="+status)
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}
