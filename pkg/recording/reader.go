package recording

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Status is a recording's verdict on read.
type Status string

// Statuses, from worst: a tampered recording is reported tampered whatever
// else is true of it.
const (
	// StatusTampered: the chain, the structure or index.log contradicts the
	// file (a hash mismatch, a sequence gap, a removed seal, trailing bytes,
	// a rewritten file...). Problems says what and where.
	StatusTampered Status = "tampered"
	// StatusOpen: a writer holds the file now; what was read is returned,
	// a partial last chunk is expected.
	StatusOpen Status = "open"
	// StatusTruncated: the file ends inside a chunk (a crash mid-write, or
	// a cut file) and index.log does not say it was sealed.
	StatusTruncated Status = "truncated"
	// StatusUnverified: keyed (HMAC) recording read without the key: the
	// structure and index.log were checked, the hashes could not be.
	StatusUnverified Status = "unverified"
	// StatusUnfinished: whole chunks, chain intact, no seal, and index.log
	// does not say it was sealed: the writer crashed or was abandoned.
	StatusUnfinished Status = "unfinished"
	// StatusSealed: chain intact, End and Seal present and consistent,
	// matching index.log when it has the recording.
	StatusSealed Status = "sealed"
)

// maxProblems bounds the problems kept per recording (a wrong key makes
// every chunk mismatch).
const maxProblems = 32

// Recording is a whole recording as read by Load.
type Recording struct {
	ID       string
	Path     string
	Meta     Meta
	Chunks   []Chunk // every whole chunk read, Meta, End and Seal included
	End      *End
	Seal     *Seal
	Status   Status
	Problems []string
	Keyed    bool   // HMAC-SHA256 chain
	Size     int64  // file size
	FinalMAC string // hex chain value of the last whole chunk (the seal's when sealed)
}

// Result is Verify's report.
type Result struct {
	ID       string   `json:"id"`
	Status   Status   `json:"status"`
	Chunks   uint64   `json:"chunks"` // whole chunks read
	Size     int64    `json:"size"`
	Keyed    bool     `json:"keyed"`
	FinalMAC string   `json:"final_mac"`
	Problems []string `json:"problems,omitempty"`
}

// Summary describes one recording in a List.
type Summary struct {
	ID       string   `json:"id"`
	Meta     Meta     `json:"meta"`
	End      *End     `json:"end,omitempty"` // nil when there is no End chunk
	Status   Status   `json:"status"`
	Size     int64    `json:"size"`
	Chunks   uint64   `json:"chunks"`
	Path     string   `json:"path"`
	Keyed    bool     `json:"keyed"`
	Problems []string `json:"problems,omitempty"`
}

// decoded is what one pass over a recording file found.
type decoded struct {
	id       string
	size     int64
	meta     Meta
	end      *End
	seal     *Seal
	chunks   []Chunk
	n        uint64 // whole chunks
	final    [MACSize]byte
	keyed    bool
	verified bool // the chain was checked (not a keyed file read without key)
	sealed   bool
	open     bool

	tampered  bool
	truncated string // why, if the file ends inside a chunk
	problems  []string
	more      int
}

func (d *decoded) problem(tamper bool, format string, a ...any) {
	if len(d.problems) < maxProblems {
		d.problems = append(d.problems, fmt.Sprintf(format, a...))
	} else {
		d.more++
	}
	d.tampered = d.tampered || tamper
}

// decode reads one recording of size bytes from r. It never panics on
// garbage and allocates at most MaxPayload beyond what the file holds.
// Only I/O errors other than a short file are returned.
func decode(r io.Reader, size int64, id string, key []byte, keep bool) (*decoded, error) {
	d := &decoded{id: id, size: size}
	br := bufio.NewReaderSize(r, int(max(16, min(size, 256<<10))))
	short := func(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }

	var m [len(Magic)]byte
	n, err := io.ReadFull(br, m[:min(size, int64(len(Magic)))])
	if err != nil && !short(err) {
		return nil, err
	}
	if string(m[:n]) != Magic[:n] {
		if n >= 7 && string(m[:6]) == Magic[:6] {
			d.problem(true, "unsupported format version %d (this reader knows %d)", m[6], FormatVersion)
			return d, nil
		}
		// Go on: the chain seed uses the real magic, so the chunks can
		// still be checked and shown.
		d.problem(true, "wrong magic %q: not a recording file, or its first bytes were altered", m[:n])
	}
	if n < len(Magic) {
		d.truncated = fmt.Sprintf("truncated: file ends inside the magic (%d of %d bytes)", n, len(Magic))
		return d, nil
	}

	var (
		off      = int64(len(Magic))
		ch       *chain
		prev     [MACSize]byte
		hdr      [HeaderSize]byte
		mac      [MACSize]byte
		scratch  []byte
		lastKind Kind
	)
	for i := uint64(0); off < size; i++ {
		if d.sealed {
			d.problem(true, "%d trailing bytes after the seal", size-off)
			break
		}
		if size-off < HeaderSize {
			d.truncated = fmt.Sprintf("truncated: file ends inside chunk %d's header (offset %d)", i, off)
			break
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if short(err) {
				d.truncated = fmt.Sprintf("truncated: file ends inside chunk %d's header (offset %d)", i, off)
				break
			}
			return nil, err
		}
		h := parseHeader(hdr[:])
		if h.length > MaxPayload {
			d.problem(true, "chunk %d (offset %d): payload length %d exceeds the %d-byte limit (corrupt header)", i, off, h.length, MaxPayload)
			break
		}
		if rest := size - off - HeaderSize; rest < int64(h.length)+MACSize {
			d.truncated = fmt.Sprintf("truncated: file ends inside chunk %d (offset %d: %d payload and %d hash bytes announced, %d remain)",
				i, off, h.length, MACSize, rest)
			break
		}
		var payload []byte
		if keep || h.kind == KindMeta || h.kind == KindEnd || h.kind == KindSeal {
			payload = make([]byte, h.length)
		} else {
			if cap(scratch) < int(h.length) {
				scratch = make([]byte, h.length)
			}
			payload = scratch[:h.length]
		}
		if _, err := io.ReadFull(br, payload); err != nil {
			if short(err) {
				d.truncated = fmt.Sprintf("truncated: file ends inside chunk %d (offset %d)", i, off)
				break
			}
			return nil, err
		}
		if _, err := io.ReadFull(br, mac[:]); err != nil {
			if short(err) {
				d.truncated = fmt.Sprintf("truncated: file ends inside chunk %d's hash (offset %d)", i, off)
				break
			}
			return nil, err
		}

		if i == 0 {
			d.keyed = h.flags&FlagKeyed != 0
			switch {
			case d.keyed && len(key) == 0:
				// Cannot check: the status will say unverified.
			case !d.keyed && len(key) > 0:
				d.problem(true, "recording is not keyed (plain SHA-256 chain) but a key was given: whoever can write the file can recompute an unkeyed chain (if it was recorded before the key was configured, verify it without the key)")
				ch = newChain(nil)
			default:
				ch = newChain(key)
			}
			if ch != nil {
				prev = ch.seed(id)
			}
			d.verified = ch != nil
		}
		if h.flags&^FlagKeyed != 0 {
			d.problem(true, "chunk %d: unknown flags %#04x", i, h.flags)
		} else if (h.flags&FlagKeyed != 0) != d.keyed {
			d.problem(true, "chunk %d: keyed flag differs from chunk 0's", i)
		}
		if ch != nil && ch.next(&prev, hdr[:], payload) != mac {
			why := "tampered"
			if i == 0 {
				if ch.keyed {
					why = "tampered, wrong key, or file renamed"
				} else {
					why = "tampered, or file renamed"
				}
			}
			d.problem(true, "chunk %d: hash mismatch (%s)", i, why)
		}
		prev = mac // go on from the stored value: one edit, one mismatch
		if h.seq != i {
			d.problem(true, "chunk %d: sequence number %d, expected %d (chunk dropped, inserted or reordered)", i, h.seq, i)
		}
		if h.dir > DirServerToClient {
			d.problem(true, "chunk %d: invalid direction %d", i, h.dir)
		}
		switch {
		case i == 0 && h.kind != KindMeta:
			d.problem(true, "chunk 0 is of kind %d, not Meta", h.kind)
		case i != 0 && h.kind == KindMeta:
			d.problem(true, "chunk %d: a second Meta chunk", i)
		case d.end != nil && h.kind != KindSeal:
			d.problem(true, "chunk %d: kind %d after End", i, h.kind)
		}
		switch h.kind {
		case KindMeta:
			if i == 0 {
				if err := json.Unmarshal(payload, &d.meta); err != nil {
					d.problem(true, "chunk 0: bad Meta: %v", err)
				} else if d.meta.ID != id {
					d.problem(true, "Meta id %q does not match the file's id %s (file renamed or copied?)", d.meta.ID, id)
				}
			}
		case KindEnd:
			if d.end == nil {
				var e End
				if err := json.Unmarshal(payload, &e); err != nil {
					d.problem(true, "chunk %d: bad End: %v", i, err)
				}
				d.end = &e
			}
		case KindSeal:
			var s Seal
			if err := json.Unmarshal(payload, &s); err != nil {
				d.problem(true, "chunk %d: bad Seal: %v", i, err)
				break
			}
			if lastKind != KindEnd {
				d.problem(true, "chunk %d: Seal not preceded by End", i)
			}
			if s.Chunks != i+1 {
				d.problem(true, "Seal says %d chunks, the file has %d", s.Chunks, i+1)
			}
			if s.Bytes != off {
				d.problem(true, "Seal says %d bytes before it, the file has %d", s.Bytes, off)
			}
			d.seal, d.sealed = &s, true
		case KindData, KindHTTPHead, KindHTTPBody, KindHTTPEnd, KindNote:
		default:
			d.problem(true, "chunk %d: unknown kind %d", i, h.kind)
		}
		if keep {
			d.chunks = append(d.chunks, Chunk{Seq: h.seq, Time: unixTime(h.time), Kind: h.kind, Dir: h.dir, Exchange: h.exchange, Payload: payload})
		}
		d.n++
		d.final = mac
		lastKind = h.kind
		off += chunkSize(int(h.length))
	}
	return d, nil
}

// judge weighs the file against index.log (ix may be nil: no index) and
// sets the status.
func (d *decoded) judge(ix *indexInfo) Status {
	if ix != nil {
		for _, p := range ix.problems {
			d.problem(false, "%s", p)
		}
		d.tampered = d.tampered || ix.tampered
		if e, ok := ix.seals[d.id]; ok && !d.open {
			switch {
			case !d.sealed:
				d.problem(true, "index.log line %d says it was sealed with %d chunks and %d bytes, but the file has no seal (%d whole chunks, %d bytes): last chunks removed",
					e.line, e.chunks, e.size, d.n, d.size)
			case e.chunks != d.n || e.size != d.size || e.mac != d.final:
				d.problem(true, "index.log line %d says %d chunks, %d bytes, final hash %x; the file has %d chunks, %d bytes, final hash %x: file rewritten",
					e.line, e.chunks, e.size, e.mac[:8], d.n, d.size, d.final[:8])
			case d.keyed && !e.keyed:
				d.problem(true, "index.log line %d: unkeyed index line for a keyed recording (forged line?)", e.line)
			}
		} else if line, ok := ix.evicted[d.id]; ok {
			d.problem(false, "index.log line %d says this recording was evicted, yet the file exists (restored?)", line)
		} else if d.sealed {
			d.problem(false, "sealed, but not recorded in index.log (index rotated, a crash between seal and index write, or its line removed)")
		}
	}
	var st Status
	switch {
	case d.tampered:
		st = StatusTampered
	case d.open:
		st = StatusOpen
	case d.truncated != "":
		st = StatusTruncated
	case !d.verified:
		st = StatusUnverified
	case d.sealed:
		st = StatusSealed
	default:
		st = StatusUnfinished
	}
	if d.truncated != "" && !d.open {
		d.problem(false, "%s", d.truncated)
	}
	if !d.sealed && !d.open && d.truncated == "" && d.n > 0 {
		d.problem(false, "unfinished: no seal (the writer crashed, was abandoned or failed to write)")
	}
	if d.keyed && !d.verified {
		d.problem(false, "keyed chain (HMAC-SHA256) not checked: no key given")
	}
	if d.more > 0 {
		d.problems = append(d.problems, fmt.Sprintf("... and %d more problems", d.more))
		d.more = 0
	}
	return st
}

func (d *decoded) finalHex() string {
	if d.n == 0 {
		return ""
	}
	return hex.EncodeToString(d.final[:])
}

func recordingPath(dir, id string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("recording %q: %w", id, ErrInvalidID)
	}
	return filepath.Join(dir, id+fileExt), nil
}

// readFile decodes dir/id.rec. A missing file is an error wrapping
// os.ErrNotExist.
func readFile(dir, id string, key []byte, keep bool) (*decoded, error) {
	path, err := recordingPath(dir, id)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("recording %s: %w", id, err)
	}
	defer f.Close()
	// A writer holds an exclusive lock for the recording's life. Probe
	// before taking the size, so a recording seen as not open is complete.
	open := false
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
		open = true
	} else if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("recording %s: %w", id, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("recording %s: %s is not a regular file", id, path)
	}
	d, err := decode(f, fi.Size(), id, key, keep)
	if err != nil {
		return nil, fmt.Errorf("recording %s: read %s: %w", id, path, err)
	}
	d.open = open
	return d, nil
}

// missing explains a missing recording from index.log.
func missing(dir, id string, key []byte, err error) error {
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ix, ierr := readIndex(dir, key, id)
	if ierr != nil {
		return err
	}
	if line, ok := ix.evicted[id]; ok {
		return fmt.Errorf("recording %s: evicted (index.log line %d): %w", id, line, os.ErrNotExist)
	}
	if e, ok := ix.seals[id]; ok {
		return fmt.Errorf("recording %s: sealed per index.log line %d, but the file is gone (deleted): %w", id, e.line, os.ErrNotExist)
	}
	return err
}

// indexFor reads index.log after the file(s): the index only grows, so a
// recording seen sealed is in the index read after it (unless the writer
// crashed in between). An unreadable index becomes a problem, not an error.
func indexFor(dir string, key []byte, only string) *indexInfo {
	ix, err := readIndex(dir, key, only)
	if err != nil {
		return &indexInfo{seals: map[string]indexEntry{}, evicted: map[string]int{},
			problems: []string{fmt.Sprintf("index.log unreadable, not consulted: %v", err)}}
	}
	return ix
}

// Load reads a whole recording, checking the chain as it goes (with key,
// for keyed recordings) and weighing it against index.log. It is tolerant:
// whatever could be read is returned with Status and Problems; the error is
// for an invalid id, a missing file (wrapping os.ErrNotExist, saying if it
// was evicted) or an I/O error.
func Load(dir, id string, key []byte) (*Recording, error) {
	d, err := readFile(dir, id, key, true)
	if err != nil {
		return nil, missing(dir, id, key, err)
	}
	st := d.judge(indexFor(dir, key, id))
	r := &Recording{
		ID: id, Path: filepath.Join(dir, id+fileExt), Meta: d.meta, Chunks: d.chunks, End: d.end, Seal: d.seal,
		Status: st, Problems: d.problems, Keyed: d.keyed, Size: d.size, FinalMAC: d.finalHex(),
	}
	return r, nil
}

// Verify checks a recording without keeping its payloads: chain, sequence,
// structure, seal, trailing bytes, and index.log (a removed end, a rewritten
// file). Status is StatusSealed only if all of it holds.
func Verify(dir, id string, key []byte) (Result, error) {
	d, err := readFile(dir, id, key, false)
	if err != nil {
		return Result{}, missing(dir, id, key, err)
	}
	st := d.judge(indexFor(dir, key, id))
	return Result{ID: id, Status: st, Chunks: d.n, Size: d.size, Keyed: d.keyed, FinalMAC: d.finalHex(), Problems: d.problems}, nil
}

// List reads every recording in dir, sorted by start (then id). Each file
// is read in full to check its chain; keyed recordings read as unverified
// (use ListKey).
func List(dir string) ([]Summary, error) { return ListKey(dir, nil) }

// ListKey is List checking keyed chains with key.
func ListKey(dir string, key []byte) ([]Summary, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("recordings: list %s: %w", dir, err)
	}
	var ds []*decoded
	for _, de := range ents {
		id, ok := strings.CutSuffix(de.Name(), fileExt)
		if !ok || !ValidID(id) || !de.Type().IsRegular() {
			continue
		}
		d, err := readFile(dir, id, key, false)
		if errors.Is(err, os.ErrNotExist) {
			continue // evicted meanwhile
		}
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	ix := indexFor(dir, key, "")
	out := make([]Summary, 0, len(ds))
	for _, d := range ds {
		st := d.judge(ix)
		out = append(out, Summary{ID: d.id, Meta: d.meta, End: d.end, Status: st, Size: d.size, Chunks: d.n,
			Path: filepath.Join(dir, d.id+fileExt), Keyed: d.keyed, Problems: d.problems})
	}
	slices.SortFunc(out, func(a, b Summary) int {
		if c := a.Meta.Start.Compare(b.Meta.Start); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}
