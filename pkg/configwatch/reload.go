package configwatch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"sync"

	"github.com/intransit/intransit/pkg/config"
)

// Reloader loads a configuration from its Sources and applies it, one reload
// at a time. A reload that fails leaves the running configuration in place
// (Apply must guarantee that for its part, as agent.Reload does).
type Reloader struct {
	Sources config.Sources
	// Apply puts a loaded configuration in service, or refuses it.
	Apply func(*config.Config) error
	// Before runs when a reload starts, After when it has ended (err nil:
	// applied); e.g. sd_notify RELOADING=1, then READY=1.
	Before func()
	After  func(cfg *config.Config, err error)
	Logger *slog.Logger

	mu   sync.Mutex
	last string // fingerprint of the files of the last load, good or bad
}

func (r *Reloader) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Load is the first load, at start-up; it remembers what it read so that
// ReloadIfChanged only acts on later changes.
func (r *Reloader) Load() (*config.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := r.Sources.Read()
	r.last = fingerprint(files, err)
	if err != nil {
		return nil, err
	}
	return config.ParseFiles(files)
}

// Reload re-reads the sources and applies them, changed or not (SIGHUP).
// trigger says why, for the log.
func (r *Reloader) Reload(trigger string) error {
	_, err := r.reload(trigger, true)
	return err
}

// ReloadIfChanged re-reads the sources and applies them only if their
// content differs from the last load, good or bad: touching a file, or a
// ConfigMap update that changes nothing, does not reload, and a broken file
// is reported once, not at every event. reloaded says whether it tried.
func (r *Reloader) ReloadIfChanged(trigger string) (reloaded bool, err error) {
	return r.reload(trigger, false)
}

func (r *Reloader) reload(trigger string, force bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := r.Sources.Read()
	fp := fingerprint(files, err)
	if !force && fp == r.last {
		return false, nil
	}
	r.last = fp
	if r.Before != nil {
		r.Before()
	}
	var cfg *config.Config
	if err == nil {
		cfg, err = config.ParseFiles(files)
	}
	if err == nil {
		if r.Apply == nil {
			panic("configwatch: Reloader.Apply not set")
		}
		err = r.Apply(cfg)
	}
	if err != nil {
		r.log().Error("configuration reload refused; still serving the previous configuration",
			"trigger", trigger, "sources", r.Sources.String(), "error", err.Error())
	} else {
		r.log().Info("configuration reload applied", "trigger", trigger, "sources", r.Sources.String(),
			"files", len(files), "rules", len(cfg.Rules), "digest", fp[:12])
	}
	if r.After != nil {
		r.After(cfg, err)
	}
	return true, err
}

// Watcher returns a Watcher that reloads whenever the files behind
// r.Sources change; o.Dirs and o.OnChange are set from the Reloader. Its Run
// first catches up with changes made since Load.
func (r *Reloader) Watcher(o Options) *Watcher {
	o.Dirs = r.Sources.WatchDirs()
	o.OnChange = func() { _, _ = r.ReloadIfChanged("file change") }
	if o.Logger == nil {
		o.Logger = r.Logger
	}
	return NewWatcher(o)
}

// Watch runs r.Watcher(o) until ctx is done.
func (r *Reloader) Watch(ctx context.Context, o Options) { r.Watcher(o).Run(ctx) }

// fingerprint is a digest of the files' names and contents in order (or of
// the error reading them).
func fingerprint(files []config.File, err error) string {
	h := sha256.New()
	if err != nil {
		h.Write([]byte("error\x00" + err.Error()))
	}
	var n [8]byte
	for _, f := range files {
		for _, b := range [][]byte{[]byte(f.Name), f.Data} {
			binary.BigEndian.PutUint64(n[:], uint64(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
