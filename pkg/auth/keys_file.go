package auth

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// fileKeys serves a static JWKS file, reloading it when it changes. A
// reload that fails keeps the previous keys: a half-written file must not
// lock every workload out.
type fileKeys struct {
	log *slog.Logger

	mu    sync.Mutex
	watch fileWatch
	set   *keySet
}

func newFileKeys(path string, statInterval time.Duration, now func() time.Time, log *slog.Logger) (*fileKeys, error) {
	f := &fileKeys{log: log, watch: fileWatch{path: path, interval: statInterval, now: now}}
	sig, err := statFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwks file: %w", err)
	}
	if err := f.load(sig); err != nil {
		return nil, fmt.Errorf("jwks file %s: %w", path, err)
	}
	return f, nil
}

func (f *fileKeys) current() *keySet {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reload(false)
	return f.set
}

// refresh looks at the file now: a token naming a key we lack may be the
// first one signed after a rotation.
func (f *fileKeys) refresh(context.Context) (*keySet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reload(true)
	return f.set, nil
}

func (f *fileKeys) reload(force bool) {
	sig, changed := f.watch.changed(force)
	if !changed {
		return
	}
	if err := f.load(sig); err != nil {
		f.log.Warn("jwks file reload failed, keeping the previous keys", "path", f.watch.path, "err", err)
	}
}

func (f *fileKeys) load(sig fileSig) error {
	doc, err := readSmall(f.watch.path, maxJWKSBytes)
	if err != nil {
		return err
	}
	f.watch.markLoaded(sig)
	keys, digest, err := parseJWKS(doc)
	if err != nil {
		return err
	}
	f.set = f.set.next(keys, digest)
	return nil
}
