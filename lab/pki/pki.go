// Package pki keeps a lab's certificates under its root: a CA, the HTTPS listener's server certificate and
// the admin's client certificate. The daemon makes them on first start and reuses them after; `pi
// kubeconfig` reads them. Keys are ECDSA P-256, as kubeadm's; every file is 0600 in a 0700 dir.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// File names in the PKI dir.
const (
	CACert     = "ca.crt"
	CAKey      = "ca.key"
	ServerCert = "server.crt"
	ServerKey  = "server.key"
	AdminCert  = "admin.crt"
	AdminKey   = "admin.key"
)

// AdminUser and AdminGroup are the admin certificate's subject: the group is Kubernetes' superuser group.
const (
	AdminUser  = "pilab-admin"
	AdminGroup = "system:masters"
)

// leafValidity is how long server and client certificates last (kubeadm's year); renewBefore is how close
// to expiry a start makes a new one.
const (
	leafValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// Options say where the PKI lives and what the server certificate must name.
type Options struct {
	Dir string // <root>/pki
	Lab string // names the CA: "pilab-<lab>-ca"
	// SANs are extra names of the server (--tls-san): IPs or DNS names, beside 127.0.0.1, ::1, localhost
	// and the hostname.
	SANs []string
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// PKI is a lab's loaded certificates.
type PKI struct {
	Dir      string
	CA       *x509.Certificate
	CAPEM    []byte
	Server   tls.Certificate // the listener's chain and key
	AdminPEM []byte          // the admin's certificate
	AdminKey []byte          // and key (PEM)
	// Made lists the files this call wrote (empty when everything was reused).
	Made []string
}

// Ensure loads the PKI in o.Dir, making what is missing: the CA if there is none; the server certificate
// if it is missing, not from this CA, names other SANs or expires within 30 days; the admin certificate
// likewise. A new CA renews both leaves.
func Ensure(o Options) (*PKI, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("make the lab's PKI dir %s: %w", o.Dir, err)
	}
	if err := os.Chmod(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("make the lab's PKI dir %s private: %w", o.Dir, err)
	}
	p := &PKI{Dir: o.Dir}
	ca, caKey, err := loadPair(o.Dir, CACert, CAKey)
	if err != nil || !ca.IsCA || now().After(ca.NotAfter) {
		key, kerr := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
		if kerr != nil {
			return nil, fmt.Errorf("make the lab CA's key: %w", kerr)
		}
		ca, err = certutil.NewSelfSignedCACert(certutil.Config{CommonName: "pilab-" + o.Lab + "-ca"}, key)
		if err != nil {
			return nil, fmt.Errorf("make the lab CA: %w", err)
		}
		caKey = key
		if err := p.write(CACert, CAKey, ca, key); err != nil {
			return nil, err
		}
	}
	p.CA = ca
	p.CAPEM = encodeCert(ca)

	ips, dns := serverSANs(o.SANs)
	srv, srvKey, err := loadPair(o.Dir, ServerCert, ServerKey)
	if err != nil || !fresh(srv, ca, now()) || !sameSANs(srv, ips, dns) {
		srv, srvKey, err = p.issue(ca, caKey, now(), pkix.Name{CommonName: "pilab-" + o.Lab}, ips, dns, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return nil, err
		}
		if err := p.write(ServerCert, ServerKey, srv, srvKey); err != nil {
			return nil, err
		}
	}
	p.Server = tls.Certificate{Certificate: [][]byte{srv.Raw, ca.Raw}, PrivateKey: srvKey, Leaf: srv}

	adm, admKey, err := loadPair(o.Dir, AdminCert, AdminKey)
	if err != nil || !fresh(adm, ca, now()) || adm.Subject.CommonName != AdminUser || !slices.Equal(adm.Subject.Organization, []string{AdminGroup}) {
		adm, admKey, err = p.issue(ca, caKey, now(), pkix.Name{CommonName: AdminUser, Organization: []string{AdminGroup}}, nil, nil, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return nil, err
		}
		if err := p.write(AdminCert, AdminKey, adm, admKey); err != nil {
			return nil, err
		}
	}
	p.AdminPEM = encodeCert(adm)
	if p.AdminKey, err = keyutil.MarshalPrivateKeyToPEM(admKey); err != nil {
		return nil, fmt.Errorf("encode the admin key: %w", err)
	}
	return p, nil
}

// LoadClient reads what a client of the lab needs (the CA and the admin's certificate and key) from dir,
// without making anything.
func LoadClient(dir string) (*PKI, error) {
	p := &PKI{Dir: dir}
	var err error
	for _, f := range []struct {
		name string
		to   *[]byte
	}{{CACert, &p.CAPEM}, {AdminCert, &p.AdminPEM}, {AdminKey, &p.AdminKey}} {
		if *f.to, err = os.ReadFile(filepath.Join(dir, f.name)); err != nil {
			return nil, fmt.Errorf("read the lab's %s: %w", f.name, err)
		}
	}
	certs, err := certutil.ParseCertsPEM(p.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("read the lab CA %s: %w", filepath.Join(dir, CACert), err)
	}
	p.CA = certs[0]
	return p, nil
}

// ClientCAs is a pool holding the lab CA: the one issuer of client certificates the listener accepts.
func (p *PKI) ClientCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	return pool
}

// Issue signs a client certificate for user (CN) in groups (O) with the lab CA; tests and issue 11's
// per-account certificates use it. It returns the certificate and key as PEM.
func Issue(dir, user string, groups []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	ca, caKey, err := loadPair(dir, CACert, CAKey)
	if err != nil {
		return nil, nil, err
	}
	p := &PKI{}
	c, k, err := p.issueFor(ca, caKey, time.Now(), validity, pkix.Name{CommonName: user, Organization: groups}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(k)
	return encodeCert(c), keyPEM, err
}

func (p *PKI) issue(ca *x509.Certificate, caKey crypto.Signer, now time.Time, subj pkix.Name, ips []net.IP, dns []string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	return p.issueFor(ca, caKey, now, leafValidity, subj, ips, dns, usage)
}

// issueFor signs a leaf certificate, as kubeadm's pkiutil.NewSignedCert does (client-go has no signer).
func (p *PKI) issueFor(ca *x509.Certificate, caKey crypto.Signer, now time.Time, validity time.Duration, subj pkix.Name, ips []net.IP, dns []string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("make a key for %q: %w", subj.CommonName, err)
	}
	serial, err := cryptorand.Int(cryptorand.Reader, new(big.Int).SetInt64(math.MaxInt64-1))
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      subj,
		IPAddresses:  ips,
		DNSNames:     dns,
		NotBefore:    ca.NotBefore,
		NotAfter:     notAfter.UTC(),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign the certificate of %q with the lab CA: %w", subj.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// write stores a certificate and its key, each 0600, each replaced whole (a crash leaves the old or the new).
func (p *PKI) write(certName, keyName string, c *x509.Certificate, key crypto.PrivateKey) error {
	kp, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return fmt.Errorf("encode the key of %s: %w", certName, err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{keyName, kp}, {certName, encodeCert(c)}} {
		path := filepath.Join(p.Dir, f.name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Chmod(tmp, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		p.Made = append(p.Made, f.name)
	}
	return nil
}

// loadPair reads a certificate and its key; an error if either is missing, unreadable or they do not match.
func loadPair(dir, certName, keyName string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(filepath.Join(dir, certName))
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, keyName))
	if err != nil {
		return nil, nil, err
	}
	certs, err := certutil.ParseCertsPEM(cb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, certName), err)
	}
	k, err := keyutil.ParsePrivateKeyPEM(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, keyName), err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s is not a signing key", filepath.Join(dir, keyName))
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", keyName, certName)
	}
	return certs[0], signer, nil
}

// fresh: signed by ca and not expiring within renewBefore.
func fresh(c, ca *x509.Certificate, now time.Time) bool {
	return c.CheckSignatureFrom(ca) == nil && now.Add(renewBefore).Before(c.NotAfter)
}

func serverSANs(extra []string) ([]net.IP, []string) {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}
	dns := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" {
		dns = append(dns, h)
	}
	for _, s := range extra {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		} else if s != "" {
			dns = append(dns, s)
		}
	}
	return ips, dns
}

func sameSANs(c *x509.Certificate, ips []net.IP, dns []string) bool {
	norm := func(ips []net.IP, dns []string) []string {
		var s []string
		for _, ip := range ips {
			s = append(s, "ip:"+ip.String())
		}
		for _, d := range dns {
			s = append(s, "dns:"+d)
		}
		sort.Strings(s)
		return slices.Compact(s)
	}
	return slices.Equal(norm(c.IPAddresses, c.DNSNames), norm(ips, dns))
}

func encodeCert(c *x509.Certificate) []byte {
	b, _ := certutil.EncodeCertificates(c)
	return bytes.Clone(b)
}
