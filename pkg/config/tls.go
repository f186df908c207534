package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// maxPEMSize bounds what validation reads; real CA bundles are far smaller.
const maxPEMSize = 16 << 20

func checkTLS(p *problems, key string, t *TLS) {
	if t.Port != 0 && !validPort(t.Port) {
		p.add(key+".port", "%d is not in 1..65535 (0 or unset means the original port)", t.Port)
	}
	checkClientTLS(p, key, t.ServerName, t.CAFile, t.CertFile, t.KeyFile)
}

// checkClientTLS checks what upstream.tls and upstream.tunnel share: the
// name to verify, the CA bundle and the optional client certificate.
func checkClientTLS(p *problems, key, serverName, caFile, certFile, keyFile string) {
	if serverName != "" && !validServerName(serverName) {
		p.add(key+".serverName", "%q is not a valid DNS name or IP address", serverName)
	}
	checkCAFileKey(p, key+".caFile", caFile)
	switch {
	case certFile != "" && keyFile == "":
		p.add(key, "certFile %q is set but keyFile is empty; set both or neither", certFile)
	case certFile == "" && keyFile != "":
		p.add(key, "keyFile %q is set but certFile is empty; set both or neither", keyFile)
	case certFile != "":
		checkKeyPair(p, key, certFile, keyFile)
	}
}

// checkCAFileKey checks an optional CA bundle named by key.
func checkCAFileKey(p *problems, key, path string) {
	if path == "" {
		return
	}
	if err := checkCAFile(path); err != nil {
		p.addErr(fmt.Errorf("%s: %q: %w", key, path, err))
	}
}

func checkKeyPair(p *problems, key, certFile, keyFile string) {
	ok := true
	for _, f := range []struct{ key, path string }{{key + ".certFile", certFile}, {key + ".keyFile", keyFile}} {
		if err := checkRegular(f.path); err != nil {
			p.addErr(fmt.Errorf("%s: %q: %w", f.key, f.path, err))
			ok = false
		}
	}
	if !ok {
		return
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		p.addErr(fmt.Errorf("%s.certFile %q and %s.keyFile %q: %w", key, certFile, key, keyFile, err))
	}
}

// checkCAFile wants at least one PEM certificate and every one to parse;
// x509.CertPool.AppendCertsFromPEM would silently skip broken ones.
func checkCAFile(path string) error {
	data, err := readSmall(path)
	if err != nil {
		return err
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		n++
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate #%d: %w", n, err)
		}
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	return nil
}

// checkRegular refuses directories, devices and FIFOs, which would make
// reading them fail oddly or block (e.g. /dev/zero, a named pipe).
func checkRegular(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		return errors.New("is a directory")
	case !fi.Mode().IsRegular():
		return fmt.Errorf("not a regular file (mode %s)", fi.Mode())
	}
	return nil
}

func readSmall(path string) ([]byte, error) {
	if err := checkRegular(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPEMSize {
		return nil, fmt.Errorf("larger than %d bytes", maxPEMSize)
	}
	return data, nil
}

// checkAuditFile accepts "-" or a path in an existing directory; the audit
// writer creates the file itself.
func checkAuditFile(p *problems, key, path string) {
	if path == AuditStdout {
		return
	}
	if path == "" {
		p.add(key, "required (%q for stdout)", AuditStdout)
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		p.add(key, "%q is a directory", path)
		return
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		p.addErr(fmt.Errorf("%s: %q: directory: %w", key, path, err))
	case !fi.IsDir():
		p.add(key, "%q: %s is not a directory", path, dir)
	}
}

// validServerName accepts an IP address or a DNS host name usable as SNI:
// no wildcard, no trailing dot, no zone.
func validServerName(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			ch := l[i]
			// '_' is not a host name character, but internal names use it and
			// Go's verifier tolerates it.
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return false
			}
		}
	}
	// An all-numeric last label is a mistyped IP address, not a name.
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}
