package redact

import "fmt"

// Stream redacts input that arrives in pieces and passes the result to
// emit. A secret may be split across writes at any byte: the Stream holds
// back the start of anything that could still become a secret, so the
// concatenated output equals Bytes of the whole input (as long as no
// candidate outgrows MaxHold, which is then masked to its end instead).
//
// A Stream is not safe for concurrent use. The slice passed to emit is only
// valid during the call.
type Stream struct {
	r    *Redactor
	emit func([]byte) error
	// buf is context (already emitted input the rules look back into)
	// followed by held input.
	buf     []byte
	ctx     int
	atStart bool // buf[0] is the first byte of the stream
	// pend is the open value at ctx, when it is a value: the next write
	// feeds it instead of rescanning the held input.
	pend    candidate
	hasPend bool
	fed     int // pend.val has consumed buf[:fed]
	// skipping: a value outgrew MaxHold and was masked; its remaining
	// bytes are dropped until it ends.
	skip     valScan
	skipping bool
	scratch  candidate
	out      []byte
	err      error
}

// seamExtra is how far past the context a direct write's seam reaches: room
// for the seam's own held tail, which is short unless a secret straddles it.
const seamExtra = 128

// NewStream returns a Stream that passes redacted output to emit.
func (r *Redactor) NewStream(emit func([]byte) error) *Stream {
	return &Stream{r: r, emit: emit, atStart: true}
}

// Held returns the number of input bytes currently held back.
func (s *Stream) Held() int { return len(s.buf) - s.ctx }

// Write redacts p and emits what is decided; it may hold back a tail. An
// error from emit is returned, wrapped, by this and every later call.
func (s *Stream) Write(p []byte) error {
	if s.err != nil {
		return s.err
	}
	if s.skipping {
		end, st := s.skip.feed(p)
		if st == vMore {
			s.keep(p)
			return nil
		}
		end = max(end, 0)
		s.skipping = false
		s.keep(p[:end])
		p = p[end:]
	}
	if len(p) == 0 {
		return nil
	}
	if done, err := s.direct(p); done {
		return err
	}
	s.buf = append(s.buf, p...)
	return s.run(false)
}

// direct handles a large write while nothing is held without copying it
// into buf: a seam (the context and the first ctx+seamExtra bytes of p) is
// scanned in buf, and from the point it decided, at least ctx bytes into p,
// p is scanned in place: every look-back then stays inside p. It reports
// false, having changed nothing, when it cannot.
func (s *Stream) direct(p []byte) (bool, error) {
	k := s.r.ctx
	seam := k + seamExtra
	if s.hasPend || s.Held() > 0 || len(p) < 2*seam {
		return false, nil
	}
	base := len(s.buf)
	s.buf = append(s.buf, p[:seam]...)
	out, h1, matched := s.r.scan(s.buf, base, s.atStart, false, false, s.out[:0], &s.scratch)
	h1 -= base // now in p
	if h1 < k {
		s.buf = s.buf[:base]
		return false, nil
	}
	if !matched {
		out = append(out, p[:h1]...)
	}
	out, h, matched2 := s.r.scan(p, h1, false, false, false, out, &s.scratch)
	var chunk []byte
	switch {
	case matched2:
		chunk = out
	case matched:
		out = append(out, p[h1:h]...)
		chunk = out
	default:
		chunk = p[:h]
	}
	s.out = out[:0]
	if err := s.send(chunk); err != nil {
		return true, err
	}
	// Keep the context and the held tail.
	start := h - k
	s.buf = append(s.buf[:0], p[start:]...)
	s.ctx, s.atStart = k, false
	if c := &s.scratch; c.st == stMore {
		c.hold -= start
		c.vs -= start
		if c.inVal {
			s.pend, s.hasPend, s.fed = *c, true, len(s.buf)
			if len(s.buf)-c.hold > MaxHold {
				return true, s.overflow(c)
			}
		}
	}
	return true, nil
}

// Flush emits whatever is held back, redacted, treating the end of the
// stream as the end of any open candidate. The Stream then starts over as
// if new.
func (s *Stream) Flush() error {
	if s.err != nil {
		return s.err
	}
	var err error
	if !s.skipping {
		err = s.run(true)
	}
	s.buf = s.buf[:0]
	s.ctx, s.atStart, s.hasPend, s.skipping = 0, true, false, false
	return err
}

// run decides as much of the held input as it can and emits it.
func (s *Stream) run(final bool) error {
	b := s.buf
	if s.hasPend && !final {
		// Feed only the new input to the open value; once it ends, the
		// held input is scanned again, once, as Bytes would.
		c := &s.pend
		if _, st := c.val.feed(b[s.fed:]); st == vMore {
			s.fed = len(b)
			if len(b)-c.hold > MaxHold {
				return s.overflow(c)
			}
			return nil
		}
	}
	s.hasPend = false
	out, h, matched := s.r.scan(b, s.ctx, s.atStart, final, false, s.out[:0], &s.scratch)
	chunk := b[s.ctx:h]
	if matched {
		chunk = out
	}
	s.out = out[:0]
	if err := s.send(chunk); err != nil {
		return err
	}
	if c := &s.scratch; c.st == stMore {
		// Only a value can outgrow MaxHold: what comes before one (a
		// JWT header, a PEM label, spaces...) is bounded well below it.
		if c.inVal {
			s.pend, s.hasPend, s.fed = *c, true, len(b)
			if len(b)-h > MaxHold {
				return s.overflow(c)
			}
		}
	}
	s.compact(h)
	return nil
}

// overflow masks the open value c, held for more than MaxHold: it emits
// the rule's kept bytes and the replacement, then drops the value's
// remaining bytes as they arrive.
func (s *Stream) overflow(c *candidate) error {
	out := append(s.out[:0], s.buf[c.hold:c.vs]...)
	out = append(out, c.repl...)
	s.skip, s.skipping = c.val, true
	s.hasPend = false
	s.out = out[:0]
	if err := s.send(out); err != nil {
		return err
	}
	s.compact(len(s.buf))
	return nil
}

func (s *Stream) send(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if err := s.emit(p); err != nil {
		s.err = fmt.Errorf("redact: emit: %w", err)
		return s.err
	}
	return nil
}

// compact drops input before h except the context the rules look back
// into; the rest (from h) is held.
func (s *Stream) compact(h int) {
	start := h - s.r.ctx
	if start <= 0 {
		s.ctx = h
		return
	}
	n := copy(s.buf, s.buf[start:])
	s.buf = s.buf[:n]
	s.ctx = h - start
	s.atStart = false
	if s.hasPend {
		s.pend.hold -= start
		s.pend.vs -= start
		s.fed -= start
	}
}

// keep adds input consumed while skipping to the context.
func (s *Stream) keep(p []byte) {
	if len(p) > s.r.ctx {
		p = p[len(p)-s.r.ctx:]
		s.buf = s.buf[:0]
		s.atStart = false
	}
	s.buf = append(s.buf, p...)
	s.compact(len(s.buf))
}
