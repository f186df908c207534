package certfile

import (
	"os"
	"testing"
	"time"

	"github.com/intransit/intransit/internal/testutil"
)

func TestReloadsOnChangeAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca")
	first := ca.Issue(t, dir, testutil.Leaf{CommonName: "first"})
	r, err := New(first.CertFile, first.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }
	c, _ := r.Certificate()
	if c.Leaf == nil || c.Leaf.Subject.CommonName != "first" {
		t.Fatalf("initial cert %v", c.Leaf)
	}
	// Renewal: new pair written over the same paths.
	second := ca.Issue(t, t.TempDir(), testutil.Leaf{CommonName: "first"}) // same CN, new key
	copyFile(t, second.CertFile, first.CertFile)
	copyFile(t, second.KeyFile, first.KeyFile)
	clock = clock.Add(2 * time.Second)
	c2, _ := r.Certificate()
	if string(c2.Certificate[0]) == string(c.Certificate[0]) {
		t.Fatal("renewed certificate not picked up")
	}
	// A half-written renewal (garbage) keeps the last good pair.
	if err := os.WriteFile(first.CertFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Second)
	c3, _ := r.Certificate()
	if string(c3.Certificate[0]) != string(c2.Certificate[0]) || r.LastError() == nil {
		t.Fatalf("bad reload should keep the last good pair and report an error (err %v)", r.LastError())
	}
	if _, err := New(dir+"/missing.crt", first.KeyFile); err == nil {
		t.Fatal("missing file must fail")
	}
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	// A new mtime even within the same second: size or inode may not change.
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second)
	_ = os.Chtimes(to, later, later)
}
