package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testDNSName is the DNS SAN of the generated server certificates.
const testDNSName = "upstream.test"

// testPKI is a throwaway PKI written into a test's temp dir.
type testPKI struct {
	caFile      string // CA that signed every leaf below
	otherCAFile string // unrelated CA

	server     tls.Certificate // SAN IP 127.0.0.1 + testDNSName, serverAuth
	expired    tls.Certificate // like server, but expired
	clientOnly tls.Certificate // clientAuth usage only

	clientOnlyCertFile, clientOnlyKeyFile string
	caPool                                *x509.CertPool // for servers verifying clients
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := newCA(t, "intransit test CA")
	other := newCA(t, "unrelated CA")

	p := &testPKI{
		caFile:      filepath.Join(dir, "ca.pem"),
		otherCAFile: filepath.Join(dir, "other-ca.pem"),
		caPool:      x509.NewCertPool(),
	}
	p.caPool.AddCert(ca.cert)
	writePEM(t, p.caFile, "CERTIFICATE", ca.cert.Raw)
	writePEM(t, p.otherCAFile, "CERTIFICATE", other.cert.Raw)

	now := time.Now()
	p.server = newLeaf(t, ca, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageServerAuth)
	p.expired = newLeaf(t, ca, now.Add(-48*time.Hour), now.Add(-24*time.Hour), x509.ExtKeyUsageServerAuth)
	p.clientOnly = newLeaf(t, ca, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageClientAuth)

	p.clientOnlyCertFile = filepath.Join(dir, "client.pem")
	p.clientOnlyKeyFile = filepath.Join(dir, "client-key.pem")
	writePEM(t, p.clientOnlyCertFile, "CERTIFICATE", p.clientOnly.Certificate[0])
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.clientOnly.PrivateKey)
	if err != nil {
		t.Fatalf("marshal client key: %v", err)
	}
	writePEM(t, p.clientOnlyKeyFile, "PRIVATE KEY", keyDER)
	return p
}

func newCA(t testing.TB, name string) issuer {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create CA %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA %s: %v", name, err)
	}
	return issuer{cert: cert, key: key}
}

// newLeaf issues an ECDSA P-256 leaf (needed for the ECDHE_ECDSA suites).
func newLeaf(t testing.TB, ca issuer, notBefore, notAfter time.Time, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: testDNSName},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{testDNSName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("create leaf: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
