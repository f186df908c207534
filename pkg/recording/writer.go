package recording

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
	"unicode/utf8"
)

// Writer appends chunks to one recording. It is not safe for concurrent
// use: the caller serialises (the two relay directions share one writer
// under the caller's mutex). Chunks are chained and buffered by Append and
// reach the file on Flush, in one write.
type Writer struct {
	store *Store
	id    string
	path  string
	f     *os.File
	ch    *chain
	flags uint16

	seq     uint64        // next sequence number
	prev    [MACSize]byte // chain value of the last appended chunk
	buf     []byte        // encoded chunks not yet written
	flushed int64         // bytes in the file

	// State at the last successful flush, to drop the buffer when the
	// store is full at Finish.
	flushedSeq  uint64
	flushedPrev [MACSize]byte

	capped bool  // ErrSessionCap returned: stream chunks refused from now on
	err    error // sticky write error
	closed bool
}

// ID returns the recording id.
func (w *Writer) ID() string { return w.id }

// Path returns the recording file's path.
func (w *Writer) Path() string { return w.path }

// Size returns the recording's size once everything appended is flushed:
// bytes in the file plus bytes buffered.
func (w *Writer) Size() int64 { return w.flushed + int64(len(w.buf)) }

// Append assigns the chunk its sequence number (and the current time if
// Time is zero), chains it and buffers it. Only stream and note kinds may be
// appended: Meta is written by Create, End and Seal by Finish.
//
// If the chunk would take the recording over the per-session cap, nothing
// is written for it and the error wraps ErrSessionCap; stream chunks are
// refused from then on, but a Note still fits (write one saying so), and
// End and Seal always do.
func (w *Writer) Append(c Chunk) error {
	if w.closed {
		return fmt.Errorf("recording %s: append: %w", w.id, ErrClosed)
	}
	if w.err != nil {
		return w.err
	}
	switch c.Kind {
	case KindData, KindHTTPHead, KindHTTPBody, KindHTTPEnd, KindNote:
	default:
		return fmt.Errorf("recording %s: append: chunk kind %d cannot be appended (Meta, End and Seal are written by Create and Finish)", w.id, c.Kind)
	}
	if c.Dir > DirServerToClient {
		return fmt.Errorf("recording %s: append: invalid direction %d", w.id, c.Dir)
	}
	if len(c.Payload) > MaxPayload {
		return fmt.Errorf("recording %s: append: %d bytes: %w (%d)", w.id, len(c.Payload), ErrChunkTooLarge, MaxPayload)
	}
	limit := w.store.o.MaxSessionBytes - SessionReserve
	if c.Kind == KindNote {
		limit = w.store.o.MaxSessionBytes - EndReserve
	}
	n := chunkSize(len(c.Payload))
	if (w.capped && c.Kind != KindNote) || w.Size()+n > limit {
		if c.Kind != KindNote {
			w.capped = true
		}
		return fmt.Errorf("recording %s: chunk %d (%d bytes) would exceed the per-session cap of %d bytes: %w",
			w.id, w.seq, n, w.store.o.MaxSessionBytes, ErrSessionCap)
	}
	if c.Time.IsZero() {
		c.Time = time.Now()
	}
	w.appendChunk(c.Kind, c.Dir, c.Exchange, c.Time, c.Payload)
	return nil
}

// appendChunk encodes, chains and buffers one chunk.
func (w *Writer) appendChunk(kind Kind, dir Dir, exchange uint32, t time.Time, payload []byte) {
	if w.buf == nil {
		w.buf = getBuf()
	}
	start := len(w.buf)
	w.buf = append(w.buf, make([]byte, HeaderSize)...)
	putHeader(w.buf[start:], header{
		length:   uint32(len(payload)),
		kind:     kind,
		dir:      dir,
		flags:    w.flags,
		seq:      w.seq,
		time:     t.UnixNano(),
		exchange: exchange,
	})
	w.buf = append(w.buf, payload...)
	w.prev = w.ch.next(&w.prev, w.buf[start:start+HeaderSize], w.buf[start+HeaderSize:])
	w.buf = append(w.buf, w.prev[:]...)
	w.seq++
}

// Flush writes the buffered chunks to the file in one write, after
// charging them to the store (which may evict older recordings; when it
// cannot make room the error wraps ErrStoreFull and the chunks stay
// buffered). A write error wraps the OS error (errors.Is(err,
// syscall.ENOSPC) works) and is sticky: the file is cut back to the last
// whole chunk when possible, and the writer can only be abandoned; the
// recording then reads as unfinished.
func (w *Writer) Flush() error {
	if w.closed {
		return fmt.Errorf("recording %s: flush: %w", w.id, ErrClosed)
	}
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	n := int64(len(w.buf))
	if err := w.store.charge(w.id, n); err != nil {
		return fmt.Errorf("recording %s: flush %d bytes: %w", w.id, n, err)
	}
	return w.write(n)
}

// write writes the buffer, already charged as charged bytes to the store.
func (w *Writer) write(charged int64) error {
	written, err := w.f.Write(w.buf)
	if err != nil {
		// Cut a partial chunk off so the file still ends on a chunk
		// boundary (reads as unfinished rather than truncated).
		size := w.flushed + int64(written)
		if written > 0 && w.f.Truncate(w.flushed) == nil {
			size = w.flushed
		}
		w.store.adjust(w.id, size-w.flushed-charged)
		w.flushed = size
		w.err = fmt.Errorf("recording %s: write %s: %w", w.id, w.path, err)
		return w.err
	}
	w.flushed += int64(written)
	w.store.adjust(w.id, int64(written)-charged)
	w.flushedSeq, w.flushedPrev = w.seq, w.prev
	// The buffer goes back to a pool shared by all writers: an idle
	// recorded session holds none (a burst's buffer is not pinned for the
	// session's life), and a busy one gets it back on its next chunk.
	putBuf(w.buf)
	w.buf = nil
	return nil
}

// Finish appends End and Seal, flushes, fsyncs and closes the file, and
// records the seal in index.log. The writer is closed whatever the result.
// End.Truncated is set if the per-session cap was hit or buffered chunks
// had to be dropped because the store was full (then a Note says so).
// After a write error the recording is closed unsealed, as by Abandon.
func (w *Writer) Finish(end End) error {
	if w.closed {
		return fmt.Errorf("recording %s: finish: %w", w.id, ErrClosed)
	}
	if w.err != nil {
		w.close(false)
		return fmt.Errorf("recording %s: not sealed after an earlier write error: %w", w.id, w.err)
	}
	if err := w.Flush(); err != nil {
		if w.err != nil {
			w.close(false)
			return err
		}
		// Store full: drop what could not be charged, say so, and seal
		// from the reservation End and Seal are entitled to.
		dropped := len(w.buf)
		w.buf, w.seq, w.prev = w.buf[:0], w.flushedSeq, w.flushedPrev
		note, _ := json.Marshal(Note{Code: NoteStoreFull, Message: fmt.Sprintf("%d bytes of buffered chunks dropped: %v", dropped, err)})
		w.appendChunk(KindNote, DirNone, 0, time.Now(), note)
		end.Truncated = true
	}
	if w.capped {
		end.Truncated = true
	}
	if end.End.IsZero() {
		end.End = time.Now()
	}
	end.Reason = clip(end.Reason, maxReason)
	endJSON, err := json.Marshal(end)
	if err != nil {
		w.close(false)
		return fmt.Errorf("recording %s: encode End: %w", w.id, err)
	}
	w.appendChunk(KindEnd, DirNone, 0, end.End, endJSON)
	sealJSON, _ := json.Marshal(Seal{Chunks: w.seq + 1, Bytes: w.Size()})
	w.appendChunk(KindSeal, DirNone, 0, end.End, sealJSON)
	chunks, final := w.seq, w.prev

	n := int64(len(w.buf))
	w.store.chargeFinish(w.id, n)
	if err := w.write(n); err != nil {
		w.close(false)
		return err
	}
	if err := w.f.Sync(); err != nil {
		w.close(false)
		return fmt.Errorf("recording %s: fsync %s: %w", w.id, w.path, err)
	}
	if err := w.f.Close(); err != nil {
		w.closed = true
		w.store.release(w.id)
		return fmt.Errorf("recording %s: close %s: %w", w.id, w.path, err)
	}
	w.closed = true
	return w.store.sealed(w.id, chunks, w.flushed, final)
}

// Abandon closes the file without a seal, after writing what is buffered
// if the writer has not failed. The recording stays readable and reads as
// unfinished. Abandoning a closed writer is a no-op.
func (w *Writer) Abandon() error {
	if w.closed {
		return nil
	}
	var err error
	if w.err == nil {
		err = w.Flush()
	}
	if cerr := w.close(true); err == nil {
		err = cerr
	}
	return err
}

// close closes the file unsealed; sync says whether to fsync first.
func (w *Writer) close(sync bool) error {
	var err error
	if sync && w.err == nil {
		if serr := w.f.Sync(); serr != nil {
			err = fmt.Errorf("recording %s: fsync %s: %w", w.id, w.path, serr)
		}
	}
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("recording %s: close %s: %w", w.id, w.path, cerr)
	}
	w.closed = true
	w.buf = nil
	w.store.release(w.id)
	return err
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// bufPool holds flushed write buffers for reuse across writers.
var bufPool sync.Pool

func getBuf() []byte {
	if b, ok := bufPool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

// putBuf keeps buffers up to 1 MiB; larger ones were a burst.
func putBuf(b []byte) {
	if b == nil || cap(b) > 1<<20 {
		return
	}
	bufPool.Put(&b)
}
