package audit

import (
	"sync"
	"sync/atomic"
)

// recentSize is how many lines Recent keeps for `intransit status`.
const recentSize = 256

// fanout keeps the recent-lines ring and feeds live subscribers. Lines are
// shared, not copied: receivers must not modify them.
type fanout struct {
	mu     sync.Mutex
	ring   [recentSize][]byte
	next   int // ring slot for the next line
	filled int
	subs   map[chan []byte]struct{}
	ended  bool // Close ran; no new subscriptions
	drops  atomic.Uint64
}

func (f *fanout) subscribe(n int) (<-chan []byte, func()) {
	if n < 1 {
		n = 1
	}
	ch := make(chan []byte, n)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		close(ch)
		return ch, func() {}
	}
	if f.subs == nil {
		f.subs = make(map[chan []byte]struct{})
	}
	f.subs[ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}
}

func (f *fanout) dropped() uint64 {
	return f.drops.Load()
}

func (f *fanout) recent() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]byte, 0, f.filled)
	start := f.next - f.filled
	if start < 0 {
		start += recentSize
	}
	for i := range f.filled {
		out = append(out, f.ring[(start+i)%recentSize])
	}
	return out
}

func (f *fanout) publish(line []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ring[f.next] = line
	f.next = (f.next + 1) % recentSize
	if f.filled < recentSize {
		f.filled++
	}
	for ch := range f.subs {
		select {
		case ch <- line:
		default:
			f.drops.Add(1)
		}
	}
}

func (f *fanout) closeSubscribers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = true
	for ch := range f.subs {
		delete(f.subs, ch)
		close(ch)
	}
}

// Subscribe streams encoded lines (each ending in '\n') logged from now on
// into a channel buffered for n lines. A subscriber that falls behind loses
// lines (see Dropped) instead of slowing the data path. The returned cancel
// func closes the channel; Close ends every subscription the same way.
// Lines are shared: receivers must not modify them.
func (l *Logger) Subscribe(n int) (<-chan []byte, func()) {
	return l.fan.subscribe(n)
}

// Dropped returns how many lines slow subscribers have missed.
func (l *Logger) Dropped() uint64 {
	return l.fan.dropped()
}

// Recent returns up to the last 256 logged lines, oldest first. Lines are
// shared: callers must not modify them.
func (l *Logger) Recent() [][]byte {
	return l.fan.recent()
}
