package auth

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// fileSig identifies one version of a file. The inode catches an atomic
// rename (and the symlink swap of Kubernetes projected volumes); size and
// mtime catch an in-place rewrite.
type fileSig struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// fileWatch tells when a file has changed since it was last loaded,
// stat'ing at most once per interval. It is not safe for concurrent use: its
// owner holds a lock around it.
type fileWatch struct {
	path     string
	interval time.Duration
	now      func() time.Time

	checked time.Time
	loaded  fileSig
}

// changed stats the file if a check is due (or forced) and reports its
// signature if it differs from the loaded one. Stat errors report no change:
// the owner keeps what it has.
func (w *fileWatch) changed(force bool) (fileSig, bool) {
	now := w.now()
	if !force && now.Sub(w.checked) < w.interval {
		return fileSig{}, false
	}
	w.checked = now
	sig, err := statFile(w.path)
	if err != nil || sig == w.loaded {
		return fileSig{}, false
	}
	return sig, true
}

// markLoaded records that the content seen at sig has been read (good or
// bad), so it is not read again until the file changes.
func (w *fileWatch) markLoaded(sig fileSig) { w.loaded = sig }

func statFile(path string) (fileSig, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileSig{}, err
	}
	sig := fileSig{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sig.dev, sig.ino = uint64(st.Dev), st.Ino
	}
	return sig, nil
}

// readSmall reads a file that should be small (a token, a key set),
// refusing one larger than limit.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}
