// Command demoserver is the "executor" of make demo: an HTTP service that
// answers on a plaintext port and on a TLS port and says which one it was
// reached on. With -gen it writes a CA and a server certificate first.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func main() {
	plain := flag.String("plain", "", "plaintext HTTP listen address (empty: none)")
	tlsAddr := flag.String("tls", "", "HTTPS listen address (empty: none)")
	dir := flag.String("certs", "", "directory with ca.pem, server.crt, server.key")
	gen := flag.String("gen", "", "generate certs into -certs for these comma-separated names/IPs, then exit")
	genToken := flag.String("gen-token", "", "write jwks.json and a token for this subject into -certs, then exit")
	issuer := flag.String("issuer", "https://issuer.demo.intransit", "issuer of -gen-token tokens")
	flag.Parse()
	if *genToken != "" {
		if err := generateToken(*dir, *issuer, *genToken); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *gen != "" {
		if err := generate(*dir, strings.Split(*gen, ",")); err != nil {
			log.Fatal(err)
		}
		return
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		how := "PLAINTEXT (the credential below crossed the network readable)"
		if host, _, _ := net.SplitHostPort(r.RemoteAddr); net.ParseIP(host).IsLoopback() {
			how = "loopback (from the intransit agent on this host; nothing readable crossed the network)"
		}
		if r.TLS != nil {
			how = fmt.Sprintf("TLS (%s, %s)", tls.VersionName(r.TLS.Version), tls.CipherSuiteName(r.TLS.CipherSuite))
		}
		auth := "none"
		if a := r.Header.Get("Authorization"); a != "" {
			// A fingerprint, not the value: the demo shows which credential
			// arrived without printing it.
			sum := sha256.Sum256([]byte(a))
			auth = fmt.Sprintf("present (%d bytes, sha256 %x)", len(a), sum[:4])
		}
		fmt.Fprintf(w, "executor: %s %s from %s over %s; Authorization header: %s\n", r.Method, r.URL.Path, r.RemoteAddr, how, auth)
	})
	errc := make(chan error, 2)
	if *plain != "" {
		go func() {
			errc <- (&http.Server{Addr: *plain, Handler: h, ReadHeaderTimeout: 5 * time.Second}).ListenAndServe()
		}()
	}
	if *tlsAddr != "" {
		go func() {
			s := &http.Server{Addr: *tlsAddr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
			errc <- s.ListenAndServeTLS(filepath.Join(*dir, "server.crt"), filepath.Join(*dir, "server.key"))
		}()
	}
	if *plain == "" && *tlsAddr == "" {
		log.Fatal(errors.New("nothing to serve: give -plain and/or -tls"))
	}
	log.Fatal(<-errc)
}

func generate(dir string, names []string) error {
	if dir == "" {
		return errors.New("-gen needs -certs DIR")
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "intransit demo CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// generateToken writes an offline key set (jwks.json) and a token signed by
// it, standing in for a cluster's OIDC issuer.
func generateToken(dir, issuer, sub string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "demo"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return err
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: issuer, Subject: sub, Audience: jwt.Audience{"intransit"},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(2 * time.Hour)),
	}).Serialize()
	if err != nil {
		return err
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "demo", Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "jwks.json"), jwks, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "token"), []byte(tok), 0o600)
}
