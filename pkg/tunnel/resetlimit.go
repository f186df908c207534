package tunnel

import (
	"sync"
	"time"
)

// Budget for streams a client resets before the server answered them.
// Legitimate clients do this only when a caller gives up mid-CONNECT; a
// rapid-reset attacker does it as fast as it can write frames. x/net already
// bounds how many Handlers run (see the package documentation); this bounds
// how much Handler work a connection can start and throw away per second.
// hyper's h2, under ztunnel, has the same kind of budget
// (max_pending_accept_reset_streams).
const (
	resetBurst = 200
	resetRate  = 100 // per second
)

// resetLimiter is a token bucket over early resets on one connection.
type resetLimiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// allow takes a token and reports whether one was left.
func (l *resetLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = resetBurst
	} else {
		l.tokens = min(resetBurst, l.tokens+now.Sub(l.last).Seconds()*resetRate)
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
