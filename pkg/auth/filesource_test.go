package auth

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestFileSource(t *testing.T, path string, clock *fakeClock) *FileSource {
	t.Helper()
	f, err := NewFileSource(path)
	if err != nil {
		t.Fatal(err)
	}
	f.log = slog.New(slog.DiscardHandler)
	f.watch.now = clock.Now
	return f
}

func token(t *testing.T, s TokenSource) string {
	t.Helper()
	tok, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestFileSourceReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeAtomic(t, path, []byte("  first\n"))
	clock := newFakeClock()
	f := newTestFileSource(t, path, clock)
	if got := token(t, f); got != "first" {
		t.Fatalf("token %q", got)
	}

	// Not stat'ed again within the interval.
	writeAtomic(t, path, []byte("second\n"))
	if got := token(t, f); got != "first" {
		t.Fatalf("token %q before the stat interval passed", got)
	}
	clock.Advance(time.Second)
	if got := token(t, f); got != "second" {
		t.Fatalf("token %q after rewrite", got)
	}

	// An in-place rewrite (same inode) is noticed too.
	if err := os.WriteFile(path, []byte("third-longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if got := token(t, f); got != "third-longer" {
		t.Fatalf("token %q after in-place rewrite", got)
	}
}

func TestFileSourceKeepsLastGoodToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeAtomic(t, path, []byte("good"))
	clock := newFakeClock()
	f := newTestFileSource(t, path, clock)

	writeAtomic(t, path, []byte(" \n"))
	clock.Advance(time.Second)
	if got := token(t, f); got != "good" {
		t.Fatalf("token %q after an empty rewrite", got)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if got := token(t, f); got != "good" {
		t.Fatalf("token %q after the file went away", got)
	}
	writeAtomic(t, path, []byte("better"))
	clock.Advance(time.Second)
	if got := token(t, f); got != "better" {
		t.Fatalf("token %q after the file came back", got)
	}
}

func TestNewFileSourceErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	if _, err := NewFileSource(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	writeAtomic(t, empty, []byte("\n\t"))
	if _, err := NewFileSource(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty file: %v", err)
	}
}
