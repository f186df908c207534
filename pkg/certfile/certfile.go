// Package certfile serves a certificate and key from files and picks up
// renewals (cert-manager, a CSI driver, a cron job) without a restart.
package certfile

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader loads a key pair and reloads it when either file changes. A
// failed reload keeps serving the last good pair: a half-written renewal must
// not take the listener down.
type Reloader struct {
	certFile, keyFile string
	minCheck          time.Duration
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
	checked   time.Time
	lastErr   error
}

type stamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{mod: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(interface{ Ino() uint64 }); ok {
		s.ino = st.Ino()
	}
	return s, nil
}

// New loads the pair now; an error names both files.
func New(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, minCheck: time.Second, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) load() error {
	cs, err := stampOf(r.certFile)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", r.certFile, err)
	}
	ks, err := stampOf(r.keyFile)
	if err != nil {
		return fmt.Errorf("key %s: %w", r.keyFile, err)
	}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.certStamp, r.keyStamp = &pair, cs, ks
	return nil
}

// Certificate returns the current pair, reloading it first if the files
// changed (checked at most once a second).
func (r *Reloader) Certificate() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) >= r.minCheck {
		r.checked = now
		cs, cerr := stampOf(r.certFile)
		ks, kerr := stampOf(r.keyFile)
		if cerr == nil && kerr == nil && (cs != r.certStamp || ks != r.keyStamp) {
			if err := r.load(); err != nil {
				r.lastErr = err
			} else {
				r.lastErr = nil
			}
		}
	}
	return r.cert, nil
}

// LastError is the error of the last failed reload, nil once one succeeds.
func (r *Reloader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// GetCertificate plugs into tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Certificate()
}

// GetClientCertificate plugs into tls.Config.GetClientCertificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Certificate()
}
