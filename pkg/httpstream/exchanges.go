package httpstream

import "sync"

// Exchanges pairs the requests and responses of one connection: the request
// parser queues each request, the response parser takes them in order
// (HTTP/1.1 pipelining is FIFO). It is safe for concurrent use by the two
// directions' parsers, each fed from its own goroutine.
//
// A response can only be paired with a request the request parser has
// already seen, so feed client bytes to the request parser before
// forwarding them upstream.
type Exchanges struct {
	mu   sync.Mutex
	q    []pending // q[head:] are queued
	head int
}

// pending is a request awaiting its final response.
type pending struct {
	n       uint32
	head    bool   // HEAD: the response has no body
	connect bool   // CONNECT: a 2xx response starts a tunnel
	upgrade string // protocol asked for with Upgrade and Connection: upgrade
}

// NewExchanges returns an empty queue.
func NewExchanges() *Exchanges { return &Exchanges{} }

func (x *Exchanges) push(e pending) {
	if x == nil {
		return
	}
	x.mu.Lock()
	if x.head > 0 && len(x.q) == cap(x.q) {
		// Reuse the taken slots rather than grow.
		x.q = x.q[:copy(x.q, x.q[x.head:])]
		x.head = 0
	}
	x.q = append(x.q, e)
	x.mu.Unlock()
}

// front returns the oldest request awaiting a response, removing it if pop
// (a final response; interim 1xx responses leave it queued).
func (x *Exchanges) front(pop bool) (pending, bool) {
	if x == nil {
		return pending{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.head == len(x.q) {
		return pending{}, false
	}
	e := x.q[x.head]
	if pop {
		if x.head++; x.head == len(x.q) {
			x.q, x.head = x.q[:0], 0
		}
	}
	return e, true
}
