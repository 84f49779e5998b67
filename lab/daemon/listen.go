package daemon

// The HTTPS listener: the same API as the unix socket, for kubectl and client-go (which cannot dial a unix
// socket), authenticated by client certificates of the lab's CA (lab/pki, lab/server/auth.go).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pilab/pi/lab/pki"
	"github.com/pilab/pi/lab/server"
)

// DefaultKubeListen is where the listener goes when --kube-listen is not given and the lab recorded none:
// kube-apiserver's port, on loopback.
const DefaultKubeListen = "127.0.0.1:6443"

// PKIDir is the lab's PKI under its root (reset removes it with the root).
func PKIDir(root string) string { return filepath.Join(root, "pki") }

// kubeListener is the HTTPS listener and its server. It listens from early in the start (so its address
// is recorded with the lab) and serves once the API is built.
type kubeListener struct {
	l    net.Listener
	auth *server.Authenticator
	hs   *http.Server
}

// listenKube makes (or reuses) the lab's PKI and listens on the address to serve: --kube-listen if given
// (it must be free); else the one the lab recorded last time, else DefaultKubeListen, and if that is taken
// (another lab on the machine) a free port on the same host, said in the log. It returns the address taken.
func (d *Daemon) listenKube() (*kubeListener, string, error) {
	want, given := d.cfg.KubeListen, d.cfg.KubeListen != ""
	if !given {
		want = DefaultKubeListen
		if rec, _ := ReadIdentity(d.cfg.Root); rec != nil && rec.KubeListen != "" {
			want = rec.KubeListen
		}
	}
	host, _, err := net.SplitHostPort(want)
	if err != nil {
		return nil, "", fmt.Errorf("--kube-listen %q is not HOST:PORT: %w", want, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		// Without per-account credentials the listener is the admin's alone; a network-facing one comes
		// with bearer tokens (issue 11).
		return nil, "", fmt.Errorf("--kube-listen %s is not a loopback address; the lab's HTTPS listener serves this machine only (127.0.0.1:PORT or [::1]:PORT)", want)
	}
	p, err := pki.Ensure(pki.Options{Dir: PKIDir(d.cfg.Root), Lab: d.cfg.Lab, SANs: d.cfg.TLSSANs})
	if err != nil {
		return nil, "", fmt.Errorf("lab %q's certificates in %s: %w", d.cfg.Lab, PKIDir(d.cfg.Root), err)
	}
	if len(p.Made) > 0 {
		d.log.Info("made the lab's certificates", "dir", p.Dir, "files", p.Made)
	}
	l, err := net.Listen("tcp", want)
	if err != nil && !given && errors.Is(err, syscall.EADDRINUSE) {
		taken := want
		l, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err == nil {
			d.log.Warn("kube listener: the address is taken (another lab or apiserver?); listening on a free port instead",
				"taken", taken, "listen", l.Addr().String())
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("listen for kubectl on %s: %w; choose another address with --kube-listen", want, err)
	}
	kl := &kubeListener{l: l, auth: &server.Authenticator{ClientCAs: p.ClientCAs()}, hs: &http.Server{ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server},
			// Requested, not verified here: the Authenticator checks it, so that a wrong one is a 401.
			ClientAuth: tls.RequestClientCert}}}
	return kl, l.Addr().String(), nil
}

// serve answers with h (the API's handler, the unix socket's) behind authentication until shutdown.
func (k *kubeListener) serve(h http.Handler) error {
	k.hs.Handler = k.auth.Wrap(h)
	err := k.hs.ServeTLS(k.l, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdown stops serving; close releases the address of a listener that never served (a failed start).
func (k *kubeListener) shutdown(ctx context.Context) {
	if err := k.hs.Shutdown(ctx); err != nil {
		k.hs.Close()
	}
}

func (k *kubeListener) close() { k.l.Close() }
