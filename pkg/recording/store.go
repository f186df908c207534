package recording

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StoreOptions bound the store's disk use and pick the chain's hash.
type StoreOptions struct {
	MaxSessionBytes int64  // per-session cap, >= MinSessionBytes
	MaxTotalBytes   int64  // total cap for the directory (recordings and index.log), >= MinSessionBytes
	Key             []byte // nil: unkeyed SHA-256 chain; else HMAC-SHA256, at least 16 bytes
}

// Store owns a recordings directory: it creates recordings, accounts for
// their bytes, evicts the oldest closed ones to stay under the total cap and
// keeps index.log. It is safe for concurrent use. One process at a time: the
// store holds an exclusive flock on index.log until Close.
type Store struct {
	dir string
	o   StoreOptions

	mu       sync.Mutex
	index    *os.File
	ixChain  *chain
	ixPrev   [MACSize]byte
	ixNL     bool // index.log ends mid-line: start the next line on a new one
	usage    int64
	reserved int64 // EndReserve per open writer
	evicted  uint64
	byID     map[string]*storeEntry
	order    []*storeEntry // oldest first (start, then id)
	closed   bool
}

type storeEntry struct {
	id       string
	start    time.Time
	size     int64
	open     bool
	reserved bool  // holds EndReserve in Store.reserved
	stuck    error // removal failed: don't try again
}

func entryLess(a, b *storeEntry) int {
	if c := a.start.Compare(b.start); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

// OpenStore opens (creating it 0700 if needed) a recordings directory and
// scans it for usage accounting and eviction order. A directory owned by
// another user is refused; a group- or other-accessible one is tightened to
// 0700, and recordings or index.log readable by others to 0600.
func OpenStore(dir string, o StoreOptions) (*Store, error) {
	if o.MaxSessionBytes < MinSessionBytes {
		return nil, fmt.Errorf("recordings %s: per-session cap %d is below the minimum %d bytes", dir, o.MaxSessionBytes, MinSessionBytes)
	}
	if o.MaxTotalBytes < MinSessionBytes {
		return nil, fmt.Errorf("recordings %s: total cap %d is below the minimum %d bytes", dir, o.MaxTotalBytes, MinSessionBytes)
	}
	if len(o.Key) > 0 && len(o.Key) < minKeyLen {
		return nil, fmt.Errorf("recordings %s: key is %d bytes, want at least %d", dir, len(o.Key), minKeyLen)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recordings: create %s: %w", dir, err)
	}
	if err := tighten(dir, 0o700, true); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, o: o, ixChain: newChain(o.Key), byID: map[string]*storeEntry{}}
	if err := s.openIndex(); err != nil {
		return nil, err
	}
	if err := s.scan(); err != nil {
		s.index.Close()
		return nil, err
	}
	return s, nil
}

// tighten checks ownership and removes group/other permissions from path.
func tighten(path string, mode os.FileMode, isDir bool) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("recordings: %w", err)
	}
	if fi.IsDir() != isDir {
		return fmt.Errorf("recordings: %s: not a %s", path, map[bool]string{true: "directory", false: "regular file"}[isDir])
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		// Its owner could rewrite recordings and the index.
		return fmt.Errorf("recordings: %s is owned by uid %d, not by this process's uid %d: refusing", path, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("recordings: %s has mode %v, readable by others, and could not be tightened to %v: %w", path, fi.Mode().Perm(), mode, err)
		}
	}
	return nil
}

func (s *Store) openIndex() error {
	path := filepath.Join(s.dir, indexName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("recordings index %s: %w", path, err)
	}
	if err := tighten(path, 0o600, false); err != nil {
		f.Close()
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("recordings %s: in use by another store (index.log is locked)", s.dir)
		}
		return fmt.Errorf("recordings index %s: lock: %w", path, err)
	}
	last, partial, size, err := indexTail(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("recordings index %s: %w", path, err)
	}
	s.index, s.ixPrev, s.ixNL, s.usage = f, last, partial, size
	return nil
}

// scan accounts for the recordings already in the directory. Other files
// are neither counted nor touched.
func (s *Store) scan() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("recordings: scan %s: %w", s.dir, err)
	}
	for _, de := range ents {
		id, ok := strings.CutSuffix(de.Name(), fileExt)
		if !ok || !ValidID(id) || !de.Type().IsRegular() {
			continue
		}
		path := filepath.Join(s.dir, de.Name())
		fi, err := de.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("recordings: scan %s: %w", path, err)
		}
		if err := tighten(path, 0o600, false); err != nil {
			return err
		}
		start := fi.ModTime()
		if m, err := readMeta(path, id); err == nil && !m.Start.IsZero() {
			start = m.Start
		}
		e := &storeEntry{id: id, start: start, size: fi.Size()}
		s.byID[id] = e
		s.order = append(s.order, e)
		s.usage += e.size
	}
	slices.SortFunc(s.order, entryLess)
	return nil
}

// readMeta reads the Meta chunk only (for eviction order), without
// checking the chain.
func readMeta(path, id string) (Meta, error) {
	var m Meta
	f, err := os.Open(path)
	if err != nil {
		return m, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var b [len(Magic) + HeaderSize]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		return m, err
	}
	h := parseHeader(b[len(Magic):])
	if string(b[:len(Magic)]) != Magic || h.kind != KindMeta || h.length > 1<<20 {
		return m, errors.New("no Meta chunk")
	}
	p := make([]byte, h.length)
	if _, err := io.ReadFull(br, p); err != nil {
		return m, err
	}
	if err := json.Unmarshal(p, &m); err != nil {
		return m, err
	}
	if m.ID != id {
		return m, errors.New("meta id mismatch")
	}
	return m, nil
}

// Dir returns the recordings directory.
func (s *Store) Dir() string { return s.dir }

// Usage returns the bytes on disk now: recordings and index.log (for a
// gauge).
func (s *Store) Usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage
}

// Evicted returns how many recordings were evicted so far (for a counter).
func (s *Store) Evicted() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evicted
}

// Close releases index.log. Finish all writers first: a writer finished
// after Close cannot record its seal in the index.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.index.Close(); err != nil {
		return fmt.Errorf("recordings index %s: %w", filepath.Join(s.dir, indexName), err)
	}
	return nil
}

// Create starts a recording: meta.ID is used if set (it must be 16
// lowercase hex digits and not exist yet), else a random id is assigned;
// meta.Start defaults to now. The file is created 0600 with O_EXCL and
// the Meta chunk is written at once, so even a session that crashes
// immediately leaves a readable (unfinished) recording. Older closed
// recordings are evicted to make room; when only open ones are left the
// error wraps ErrStoreFull.
func (s *Store) Create(meta Meta) (*Writer, error) {
	random := meta.ID == ""
	if !random && !ValidID(meta.ID) {
		return nil, fmt.Errorf("recordings: create %q: %w", meta.ID, ErrInvalidID)
	}
	if meta.Start.IsZero() {
		meta.Start = time.Now()
	}
	for attempt := 0; ; attempt++ {
		if random {
			var b [idLen / 2]byte
			rand.Read(b[:])
			meta.ID = hex.EncodeToString(b[:])
		}
		w, err := s.create(meta)
		if random && errors.Is(err, os.ErrExist) && attempt < 3 {
			continue
		}
		return w, err
	}
}

func (s *Store) create(meta Meta) (*Writer, error) {
	id := meta.ID
	payload, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("recording %s: encode Meta: %w", id, err)
	}
	need := int64(len(Magic)) + chunkSize(len(payload))
	if need > s.o.MaxSessionBytes-SessionReserve {
		return nil, fmt.Errorf("recording %s: Meta chunk (%d bytes) does not fit the per-session cap of %d bytes: %w", id, need, s.o.MaxSessionBytes, ErrSessionCap)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("recording %s: store %s is closed", id, s.dir)
	}
	if _, ok := s.byID[id]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("recording %s: %w", id, os.ErrExist)
	}
	if err := s.makeRoom(need + EndReserve); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("recording %s: create: %w", id, err)
	}
	// Charge Meta and reserve End+Seal now; the entry is open, so nothing
	// evicts it while the file is being created.
	e := &storeEntry{id: id, start: meta.Start, size: need, open: true, reserved: true}
	s.usage += need
	s.reserved += EndReserve
	s.byID[id] = e
	i, _ := slices.BinarySearchFunc(s.order, e, entryLess)
	s.order = slices.Insert(s.order, i, e)
	s.mu.Unlock()

	w := &Writer{store: s, id: id, path: filepath.Join(s.dir, id+fileExt), ch: newChain(s.o.Key)}
	if w.ch.keyed {
		w.flags = FlagKeyed
	}
	fail := func(err error) (*Writer, error) {
		s.drop(id)
		return nil, err
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fail(fmt.Errorf("recording %s: create: %w", id, err))
	}
	// Readers see a locked file as open (being recorded), not unfinished.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(w.path)
		return fail(fmt.Errorf("recording %s: lock %s: %w", id, w.path, err))
	}
	w.f = f
	w.prev = w.ch.seed(id)
	w.buf = append(w.buf, Magic...)
	w.appendChunk(KindMeta, DirNone, 0, meta.Start, payload)
	if err := w.write(need); err != nil {
		// Nothing useful is on disk: remove it rather than leave a stub.
		f.Close()
		os.Remove(w.path)
		return fail(err)
	}
	return w, nil
}

// makeRoom evicts the oldest closed recordings until n more bytes fit
// under the total cap. Called with s.mu held.
func (s *Store) makeRoom(n int64) error {
	var stuck error
	for s.usage+s.reserved+n > s.o.MaxTotalBytes {
		var victim *storeEntry
		for _, e := range s.order {
			if !e.open && e.stuck == nil {
				victim = e
				break
			}
		}
		if victim == nil {
			err := fmt.Errorf("%w: %d bytes needed, %d used and %d reserved of %d in %s, nothing left to evict",
				ErrStoreFull, n, s.usage, s.reserved, s.o.MaxTotalBytes, s.dir)
			if stuck != nil {
				err = fmt.Errorf("%w (last removal error: %w)", err, stuck)
			}
			return err
		}
		path := filepath.Join(s.dir, victim.id+fileExt)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			victim.stuck, stuck = err, err
			continue
		}
		s.usage -= victim.size
		s.forgetLocked(victim.id)
		s.evicted++
		line, h := evictLine(s.ixChain, &s.ixPrev, victim.id, time.Now(), victim.size)
		// Not fsynced: an evict line lost in a crash only makes verify say
		// "missing" instead of "evicted".
		s.appendIndex(line, h, false)
	}
	return nil
}

// appendIndex writes one line. Called with s.mu held.
func (s *Store) appendIndex(line []byte, h [MACSize]byte, sync bool) error {
	if s.closed {
		return errors.New("store closed")
	}
	if s.ixNL {
		line = append([]byte{'\n'}, line...)
	}
	n, err := s.index.Write(line)
	s.usage += int64(n)
	if err != nil {
		s.ixNL = n > 0 // a partial line: the next one starts on a new line
		return err
	}
	s.ixNL = false
	s.ixPrev = h
	if sync {
		return s.index.Sync()
	}
	return nil
}

// charge admits n more bytes for id, evicting if needed.
func (s *Store) charge(id string, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.makeRoom(n); err != nil {
		return err
	}
	s.usage += n
	if e := s.byID[id]; e != nil {
		e.size += n
	}
	return nil
}

// chargeFinish admits End and Seal: they come out of the writer's
// reservation, so they are never refused.
func (s *Store) chargeFinish(id string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage += n
	e := s.byID[id]
	if e != nil {
		e.size += n
		if e.reserved {
			e.reserved = false
			s.reserved -= EndReserve
		}
	}
	// More than the reservation (cannot happen with a clipped End): make
	// it up by evicting, best effort.
	_ = s.makeRoom(0)
}

// adjust corrects id's charge by delta (a short write).
func (s *Store) adjust(id string, delta int64) {
	if delta == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage += delta
	if e := s.byID[id]; e != nil {
		e.size += delta
	}
}

// release marks id closed (evictable) and frees its reservation.
func (s *Store) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byID[id]; e != nil {
		e.open = false
		if e.reserved {
			e.reserved = false
			s.reserved -= EndReserve
		}
	}
}

// sealed closes id and records its seal in index.log (fsynced).
func (s *Store) sealed(id string, chunks uint64, size int64, final [MACSize]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byID[id]; e != nil {
		e.open = false
		if e.reserved {
			e.reserved = false
			s.reserved -= EndReserve
		}
	}
	line, h := sealLine(s.ixChain, &s.ixPrev, id, time.Now(), chunks, size, final)
	if err := s.appendIndex(line, h, true); err != nil {
		return fmt.Errorf("recording %s: sealed, but recording the seal in %s failed: %w", id, filepath.Join(s.dir, indexName), err)
	}
	return nil
}

// drop undoes a failed Create: its charge, its reservation, its entry.
func (s *Store) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byID[id]; e != nil {
		s.usage -= e.size
		if e.reserved {
			s.reserved -= EndReserve
		}
		s.forgetLocked(id)
	}
}

func (s *Store) forgetLocked(id string) {
	e := s.byID[id]
	if e == nil {
		return
	}
	delete(s.byID, id)
	if i := slices.Index(s.order, e); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
}
