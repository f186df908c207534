package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Bounds of identity.token.kubernetes.ttl; the TokenRequest API refuses
// anything shorter than ten minutes.
const (
	MinTokenTTL = 10 * time.Minute
	MaxTokenTTL = 24 * time.Hour
)

func (c *Config) checkIdentity(p *problems) {
	t := c.Identity.Token
	if t == nil {
		return
	}
	const key = "identity.token"
	var set []string
	if t.File != "" {
		set = append(set, "file")
	}
	if t.ClientCredentials != nil {
		set = append(set, "clientCredentials")
	}
	if t.Kubernetes != nil {
		set = append(set, "kubernetes")
	}
	switch len(set) {
	case 0:
		p.add(key, "no source is set; set exactly one of file, clientCredentials, kubernetes")
	case 1:
	case 2:
		p.add(key, "%s and %s are both set; set exactly one of file, clientCredentials, kubernetes", set[0], set[1])
	default:
		p.add(key, "%s, %s and %s are all set; set exactly one of file, clientCredentials, kubernetes", set[0], set[1], set[2])
	}
	if t.File != "" {
		checkTokenFile(p, key+".file", t.File)
	}
	if cc := t.ClientCredentials; cc != nil {
		checkClientCredentials(p, key+".clientCredentials", cc)
	}
	if k := t.Kubernetes; k != nil {
		if d := k.TTL.Duration; d < MinTokenTTL || d > MaxTokenTTL {
			p.add(key+".kubernetes.ttl", "%s is not in 10m..24h (the TokenRequest minimum is 10 minutes)", d)
		}
	}
}

// checkTokenFile accepts an existing readable regular file, or a missing one
// in an existing directory: another agent may write it after we start.
func checkTokenFile(p *problems, key, path string) {
	err := checkRegular(path)
	if err == nil {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			f.Close()
			return
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		p.addErr(fmt.Errorf("%s: %q: %w", key, path, err))
		return
	}
	dir := filepath.Dir(path)
	switch fi, err := os.Stat(dir); {
	case err != nil:
		p.addErr(fmt.Errorf("%s: %q: directory: %w", key, path, err))
	case !fi.IsDir():
		p.add(key, "%q: %s is not a directory", path, dir)
	}
}

func checkClientCredentials(p *problems, key string, cc *ClientCredentials) {
	switch {
	case cc.Issuer == "" && cc.TokenURL == "":
		p.add(key, "neither issuer nor tokenURL is set; set exactly one of the two")
	case cc.Issuer != "" && cc.TokenURL != "":
		p.add(key, "issuer %q and tokenURL %q are both set; set exactly one of the two", cc.Issuer, cc.TokenURL)
	}
	if cc.Issuer != "" {
		checkIssuerURL(p, key+".issuer", cc.Issuer)
	}
	if cc.TokenURL != "" {
		checkURL(p, key+".tokenURL", cc.TokenURL)
	}
	if cc.ClientID == "" {
		p.add(key+".clientID", "required")
	}
	if cc.ClientSecretFile == "" {
		p.add(key+".clientSecretFile", "required (a file holding the secret; secrets are never written in the config)")
	} else if err := checkSecretFile(cc.ClientSecretFile); err != nil {
		p.addErr(fmt.Errorf("%s.clientSecretFile: %q: %w", key, cc.ClientSecretFile, err))
	}
	for i, s := range cc.Scopes {
		skey := fmt.Sprintf("%s.scopes[%d]", key, i)
		switch {
		case s == "":
			p.add(skey, "empty scope")
		case strings.ContainsAny(s, " \t\r\n"):
			p.add(skey, "%q contains whitespace (list each scope separately)", s)
		}
	}
}

// checkSecretFile wants a readable regular file with something in it.
func checkSecretFile(path string) error {
	data, err := readSmall(path)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(data)) == "" {
		return errors.New("is empty")
	}
	return nil
}

// checkURL wants an absolute https URL; http only towards a loopback host,
// where nothing crosses the network.
func checkURL(p *problems, key, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		p.add(key, "%q is not a URL: %v", s, err)
		return nil
	}
	switch {
	case !u.IsAbs() || u.Host == "" || u.Hostname() == "":
		p.add(key, "%q is not an absolute URL such as https://issuer.example", s)
	case u.User != nil:
		p.add(key, "%q carries credentials; they do not belong in the config", u.Redacted())
	case u.Fragment != "":
		p.add(key, "%q has a fragment", s)
	case u.Scheme == "https":
		return u
	case u.Scheme == "http" && loopbackHost(u.Hostname()):
		return u
	case u.Scheme == "http":
		p.add(key, "%q is plain http; use https (http is only allowed for loopback hosts)", s)
	default:
		p.add(key, "%q: scheme %q is not https", s, u.Scheme)
	}
	return nil
}

// checkIssuerURL is checkURL plus the OIDC rule that an issuer has no query.
func checkIssuerURL(p *problems, key, s string) {
	if u := checkURL(p, key, s); u != nil && (u.RawQuery != "" || u.ForceQuery) {
		p.add(key, "%q has a query; an OIDC issuer URL has none", s)
	}
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
