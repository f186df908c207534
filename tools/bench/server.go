package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// certFiles are the PEM files of one run: a CA and a server certificate
// (ECDSA P-256, SAN IP 127.0.0.1 and DNS localhost), and in tunnel mode a
// client certificate for agent A (SAN URI clientSAN).
type certFiles struct {
	ca, serverCert, serverKey string
	clientCert, clientKey     string
}

// clientSAN is agent A's identity in tunnel mode, what agent B's allow
// list names.
const clientSAN = "spiffe://intransit-bench/agent-a"

func writeCerts(dir string, clientCert bool) (certFiles, error) {
	f := certFiles{
		ca:         filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.crt"),
		serverKey:  filepath.Join(dir, "server.key"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "intransit-bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return f, err
	}
	blocks := map[string]*pem.Block{
		f.ca:         {Type: "CERTIFICATE", Bytes: caDER},
		f.serverCert: {Type: "CERTIFICATE", Bytes: der},
		f.serverKey:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	}
	if clientCert {
		f.clientCert, f.clientKey = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		ckey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return f, err
		}
		uri, _ := url.Parse(clientSAN)
		ctmpl := &x509.Certificate{
			SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "agent-a"},
			URIs:      []*url.URL{uri},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		cder, err := x509.CreateCertificate(rand.Reader, ctmpl, caCert, &ckey.PublicKey, caKey)
		if err != nil {
			return f, err
		}
		ckeyDER, err := x509.MarshalECPrivateKey(ckey)
		if err != nil {
			return f, err
		}
		blocks[f.clientCert] = &pem.Block{Type: "CERTIFICATE", Bytes: cder}
		blocks[f.clientKey] = &pem.Block{Type: "EC PRIVATE KEY", Bytes: ckeyDER}
	}
	for path, block := range blocks {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return f, err
		}
	}
	return f, nil
}

// runServer is the TLS server subprocess: TLS 1.3, X25519 first, session
// tickets on (Go's default); with -plain (tunnel mode) the same sink over
// plaintext TCP. Like shared/bench's sink, the first byte of a
// connection picks the mode: 'E' echoes everything, 'T' reads an 8-byte
// length N, then N bytes, and replies with the count. It prints
// "LISTEN addr" once bound and exits when its stdin closes.
func runServer(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	certFile := fs.String("cert", "", "certificate PEM")
	keyFile := fs.String("key", "", "key PEM")
	plain := fs.Bool("plain", false, "plaintext TCP, no TLS")
	_ = fs.Parse(args)
	var cfg *tls.Config
	if !*plain {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("bench server: %v", err)
		}
		cfg = &tls.Config{
			Certificates:     []tls.Certificate{cert},
			MinVersion:       tls.VersionTLS13,
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("bench server: %v", err)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("bench server: accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if cfg == nil {
			go serveConn(c)
		} else {
			go serveConn(tls.Server(c, cfg))
		}
	}
}

func serveConn(c net.Conn) {
	defer c.Close()
	var m [1]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return
	}
	switch m[0] {
	case 'E':
		buf := make([]byte, 16<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case 'T':
		var h [8]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		want := binary.BigEndian.Uint64(h[:])
		buf := make([]byte, 256<<10)
		var got uint64
		for got < want {
			n, err := c.Read(buf)
			got += uint64(n)
			if err != nil {
				break
			}
		}
		binary.BigEndian.PutUint64(h[:], got)
		_, _ = c.Write(h[:])
	}
}
