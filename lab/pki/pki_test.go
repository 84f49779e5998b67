package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestEnsureReuses: a second start makes nothing and serves the same certificates; every file is 0600 in a
// 0700 dir; the CA is named after the lab and the admin is in system:masters.
func TestEnsureReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	p1, err := Ensure(Options{Dir: dir, Lab: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p1.Made) != 6 {
		t.Fatalf("first start made %v, want all six files", p1.Made)
	}
	if p1.CA.Subject.CommonName != "pilab-t1-ca" || !p1.CA.IsCA || p1.CA.NotAfter.Before(time.Now().Add(9*365*24*time.Hour)) {
		t.Errorf("CA %q IsCA=%v until %s, want pilab-t1-ca, a CA, 10 years", p1.CA.Subject.CommonName, p1.CA.IsCA, p1.CA.NotAfter)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		st, _ := os.Stat(filepath.Join(dir, e.Name()))
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), st.Mode().Perm())
		}
	}
	if len(ents) != 6 {
		t.Errorf("dir holds %d files, want 6", len(ents))
	}
	p2, err := Ensure(Options{Dir: dir, Lab: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Made) != 0 {
		t.Errorf("second start made %v, want nothing", p2.Made)
	}
	if !bytes.Equal(p1.Server.Leaf.Raw, p2.Server.Leaf.Raw) || !bytes.Equal(p1.AdminPEM, p2.AdminPEM) || !bytes.Equal(p1.CAPEM, p2.CAPEM) {
		t.Error("second start changed certificates")
	}
	adm, err := x509.ParseCertificate(mustDER(t, p2.AdminPEM))
	if err != nil {
		t.Fatal(err)
	}
	if adm.Subject.CommonName != AdminUser || !slices.Equal(adm.Subject.Organization, []string{AdminGroup}) {
		t.Errorf("admin subject %v", adm.Subject)
	}
	if _, err := adm.Verify(x509.VerifyOptions{Roots: p2.ClientCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate does not verify against the lab CA: %v", err)
	}
	if err := p2.Server.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := p2.Server.Leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := p2.Server.Leaf.VerifyHostname("::1"); err != nil {
		t.Error(err)
	}
}

// TestEnsureSANChange: a new --tls-san makes a new server certificate (same CA, admin kept); an expiring
// server certificate is renewed.
func TestEnsureSANChange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	p1, err := Ensure(Options{Dir: dir, Lab: "t2"})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Ensure(Options{Dir: dir, Lab: "t2", SANs: []string{"10.1.2.3", "lab.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p2.Made, []string{ServerKey, ServerCert}) {
		t.Errorf("SAN change made %v, want the server key and certificate only", p2.Made)
	}
	if !bytes.Equal(p1.CAPEM, p2.CAPEM) {
		t.Error("SAN change replaced the CA")
	}
	for _, h := range []string{"10.1.2.3", "lab.example", "127.0.0.1"} {
		if err := p2.Server.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("new server certificate: %v", err)
		}
	}
	// 340 days later the server certificate expires within 30 days: a start renews it.
	later := func() time.Time { return time.Now().Add(340 * 24 * time.Hour) }
	p3, err := Ensure(Options{Dir: dir, Lab: "t2", SANs: []string{"10.1.2.3", "lab.example"}, Now: later})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p3.Made, ServerCert) || !slices.Contains(p3.Made, AdminCert) || slices.Contains(p3.Made, CACert) {
		t.Errorf("near expiry made %v, want server and admin renewed, CA kept", p3.Made)
	}
}

func mustDER(t *testing.T, pemBytes []byte) []byte {
	t.Helper()
	b, err := pemDecode(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemDecode(b []byte) ([]byte, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, os.ErrInvalid
	}
	return blk.Bytes, nil
}
