package recording

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// index.log: one line per sealed or evicted recording, each line chained to
// the previous one. It is what tells a crash-interrupted recording (never
// sealed) from one whose end was cut off, and a file rewritten with a
// recomputed unkeyed chain from the original.
//
//	seal <id> <time> <chunks> <size> <final-mac-hex> <alg> <line-hash-hex>\n
//	evict <id> <time> <size> <alg> <line-hash-hex>\n
//
// line-hash = H_alg(prev-line-hash || body), body being the line up to and
// including <alg> (no trailing space), prev-line-hash 32 zero bytes for the
// first line. alg is "sha256" or "hmac-sha256".

const (
	algSHA256 = "sha256"
	algHMAC   = "hmac-sha256"
	// maxIndexLine bounds one line; real lines are under 250 bytes.
	maxIndexLine = 1024
)

func algOf(c *chain) string {
	if c.keyed {
		return algHMAC
	}
	return algSHA256
}

// indexLine builds a line from its body fields and returns it with its hash.
func indexLine(c *chain, prev *[MACSize]byte, fields ...string) ([]byte, [MACSize]byte) {
	body := strings.Join(append(fields, algOf(c)), " ")
	h := c.next(prev, []byte(body), nil)
	line := make([]byte, 0, len(body)+1+2*MACSize+1)
	line = append(line, body...)
	line = append(line, ' ')
	line = hex.AppendEncode(line, h[:])
	line = append(line, '\n')
	return line, h
}

func sealLine(c *chain, prev *[MACSize]byte, id string, t time.Time, chunks uint64, size int64, final [MACSize]byte) ([]byte, [MACSize]byte) {
	return indexLine(c, prev, "seal", id, t.UTC().Format(time.RFC3339Nano),
		strconv.FormatUint(chunks, 10), strconv.FormatInt(size, 10), hex.EncodeToString(final[:]))
}

func evictLine(c *chain, prev *[MACSize]byte, id string, t time.Time, size int64) ([]byte, [MACSize]byte) {
	return indexLine(c, prev, "evict", id, t.UTC().Format(time.RFC3339Nano), strconv.FormatInt(size, 10))
}

// indexEntry is the seal line that counts for one id: the last one after
// the id's last evict line.
type indexEntry struct {
	line   int
	chunks uint64
	size   int64
	mac    [MACSize]byte
	keyed  bool // the line is HMAC-chained
}

type indexInfo struct {
	exists   bool
	seals    map[string]indexEntry
	evicted  map[string]int // id -> line of an evict line not followed by a seal
	problems []string
	tampered bool
	last     [MACSize]byte // hash of the last well-formed line (the next prev)
	partial  bool          // the file does not end with a newline
	size     int64
}

func (ix *indexInfo) problem(tamper bool, format string, a ...any) {
	if len(ix.problems) < maxProblems {
		ix.problems = append(ix.problems, fmt.Sprintf(format, a...))
	}
	ix.tampered = ix.tampered || tamper
}

// readIndex reads dir/index.log (a missing file is an empty index). With
// only set, entries are kept for that id alone; the chain is checked over
// every line either way. HMAC lines are checked only when key is set.
func readIndex(dir string, key []byte, only string) (*indexInfo, error) {
	path := filepath.Join(dir, indexName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &indexInfo{seals: map[string]indexEntry{}, evicted: map[string]int{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recordings index: %w", err)
	}
	defer f.Close()
	ix, err := parseIndex(f, key, only)
	if err != nil {
		return nil, fmt.Errorf("recordings index %s: %w", path, err)
	}
	ix.exists = true
	return ix, nil
}

func parseIndex(r io.Reader, key []byte, only string) (*indexInfo, error) {
	ix := &indexInfo{seals: map[string]indexEntry{}, evicted: map[string]int{}}
	plain := newChain(nil)
	var keyed *chain
	if len(key) > 0 {
		keyed = newChain(key)
	}
	br := bufio.NewReaderSize(r, 16<<10)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		ix.size += int64(len(line))
		tooLong := false
		for errors.Is(err, bufio.ErrBufferFull) || (err == nil && len(line) > maxIndexLine) {
			// Skip the rest of an absurdly long line.
			tooLong = true
			if err == nil {
				break
			}
			var more []byte
			more, err = br.ReadSlice('\n')
			ix.size += int64(len(more))
		}
		if err == io.EOF {
			if len(line) > 0 {
				ix.partial = true
				ix.problem(false, "index.log line %d: incomplete last line (interrupted write), ignored", n)
			}
			return ix, nil
		}
		if err != nil {
			return nil, err
		}
		if tooLong {
			ix.problem(false, "index.log line %d: malformed (too long), ignored", n)
			continue
		}
		ix.parseLine(n, line[:len(line)-1], plain, keyed, only)
	}
}

func (ix *indexInfo) parseLine(n int, line []byte, plain, keyed *chain, only string) {
	f := strings.Split(string(line), " ")
	malformed := func(why string) {
		ix.problem(false, "index.log line %d: malformed (%s), ignored", n, why)
	}
	var want int
	switch f[0] {
	case "seal":
		want = 8
	case "evict":
		want = 6
	default:
		malformed("unknown line type")
		return
	}
	if len(f) != want {
		malformed("wrong field count")
		return
	}
	id, alg := f[1], f[want-2]
	if !ValidID(id) {
		malformed("bad id")
		return
	}
	if _, err := time.Parse(time.RFC3339Nano, f[2]); err != nil {
		malformed("bad time")
		return
	}
	var stored [MACSize]byte
	if len(f[want-1]) != 2*MACSize || !isLowerHex(f[want-1]) {
		malformed("bad line hash")
		return
	}
	hex.Decode(stored[:], []byte(f[want-1]))
	var c *chain
	switch alg {
	case algSHA256:
		c = plain
	case algHMAC:
		c = keyed // nil without a key: the line cannot be checked
	default:
		malformed("unknown hash algorithm")
		return
	}
	var e indexEntry
	if f[0] == "seal" {
		var err error
		if e.chunks, err = strconv.ParseUint(f[3], 10, 64); err != nil {
			malformed("bad chunk count")
			return
		}
		if e.size, err = strconv.ParseInt(f[4], 10, 64); err != nil || e.size < 0 {
			malformed("bad size")
			return
		}
		if len(f[5]) != 2*MACSize || !isLowerHex(f[5]) {
			malformed("bad final hash")
			return
		}
		hex.Decode(e.mac[:], []byte(f[5]))
	} else if size, err := strconv.ParseInt(f[3], 10, 64); err != nil || size < 0 {
		malformed("bad size")
		return
	}
	if c != nil {
		body := line[:len(line)-1-2*MACSize]
		if c.next(&ix.last, body, nil) != stored {
			why := "index.log edited"
			if alg == algHMAC {
				why = "index.log edited, or wrong key"
			}
			ix.problem(true, "index.log line %d: hash mismatch (%s)", n, why)
		}
	}
	ix.last = stored
	if only != "" && id != only {
		return
	}
	if f[0] == "seal" {
		e.line, e.keyed = n, alg == algHMAC
		ix.seals[id] = e
		delete(ix.evicted, id)
	} else {
		delete(ix.seals, id)
		ix.evicted[id] = n
	}
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// indexTail returns what a writer needs to continue the chain: the last
// well-formed line's hash and whether the file ends mid-line.
func indexTail(f *os.File) (last [MACSize]byte, partial bool, size int64, err error) {
	if _, err = f.Seek(0, io.SeekStart); err != nil {
		return last, false, 0, err
	}
	ix, err := parseIndex(f, nil, "\x00")
	if err != nil {
		return last, false, 0, err
	}
	return ix.last, ix.partial, ix.size, nil
}
