package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// FileSource serves a token from a file written by someone else (a
// Kubernetes projected service-account token, another agent), re-reading it
// when it changes. It is safe for concurrent use.
type FileSource struct {
	log *slog.Logger

	mu    sync.Mutex
	watch fileWatch
	token string
}

// NewFileSource reads the token at path now: a missing or empty file is an
// error naming the path.
func NewFileSource(path string) (*FileSource, error) {
	f := &FileSource{
		log:   slog.Default(),
		watch: fileWatch{path: path, interval: defaultStatInterval, now: time.Now},
	}
	sig, err := statFile(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	if err := f.load(sig); err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	return f, nil
}

// Token returns the current token. The file is stat'ed at most once a
// second; when a changed file cannot be read or is empty (a writer caught
// mid-rewrite), the last good token is served and the problem logged.
func (f *FileSource) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sig, changed := f.watch.changed(false); changed {
		if err := f.load(sig); err != nil {
			f.log.Warn("token file reload failed, keeping the previous token", "path", f.watch.path, "err", err)
		}
	}
	return f.token, nil
}

func (f *FileSource) load(sig fileSig) error {
	b, err := readSmall(f.watch.path, maxTokenFileBytes)
	if err != nil {
		return err
	}
	f.watch.markLoaded(sig)
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return errors.New("empty token")
	}
	f.token = tok
	return nil
}
