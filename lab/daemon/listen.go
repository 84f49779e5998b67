package daemon

// The HTTPS listener: the same API as the unix socket, for kubectl and client-go (which cannot dial a unix
// socket), authenticated by client certificates of the lab's CA (the admin's) or an account's bearer token
// (lab/pki, lab/server/auth.go, lab/server/tokens.go).
//
// Where it listens: a loopback address is this machine's own door, beside the unix socket, in the
// daemon's network namespace. Any other address is where learners reach the lab from, the lab's host side:
// the --host-netns if the lab has one (a test's "machine"), else the machine itself.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/pilab/pi/lab/pki"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/net/netns"
)

// DefaultKubeListen is where the listener goes when --listen is not given and the lab recorded none:
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

// listenKube makes (or reuses) the lab's PKI and listens on the address to serve: --listen if given
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
		return nil, "", fmt.Errorf("--listen %q is not HOST:PORT: %w", want, err)
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	if !loopback && ip == nil {
		return nil, "", fmt.Errorf("--listen %s: give an IP address (a name can be added to the certificate with --tls-san)", want)
	}
	// listen opens a socket where the address belongs (above); the socket stays in that namespace.
	listen := func(addr string) (l net.Listener, err error) {
		if loopback || d.cfg.HostNetns == "" {
			return net.Listen("tcp", addr)
		}
		err = netns.Do(netns.Path(d.cfg.HostNetns), func() error {
			l, err = net.Listen("tcp", addr)
			return err
		})
		return l, err
	}
	sans := slices.Clone(d.cfg.TLSSANs)
	if !loopback {
		// The certificate names the addresses learners dial: the one given, or for 0.0.0.0 / :: every
		// address of the host side.
		if !ip.IsUnspecified() {
			sans = append(sans, ip.String())
		} else if addrs, err := hostAddrs(d.cfg.HostNetns); err == nil {
			sans = append(sans, addrs...)
		} else {
			d.log.Warn("kube listener: cannot read the host's addresses for the certificate; add them with --tls-san", "err", err)
		}
	}
	p, err := pki.Ensure(pki.Options{Dir: PKIDir(d.cfg.Root), Lab: d.cfg.Lab, SANs: sans})
	if err != nil {
		return nil, "", fmt.Errorf("lab %q's certificates in %s: %w", d.cfg.Lab, PKIDir(d.cfg.Root), err)
	}
	if len(p.Made) > 0 {
		d.log.Info("made the lab's certificates", "dir", p.Dir, "files", p.Made)
	}
	l, err := listen(want)
	if err != nil && !given && errors.Is(err, syscall.EADDRINUSE) {
		taken := want
		l, err = listen(net.JoinHostPort(host, "0"))
		if err == nil {
			d.log.Warn("kube listener: the address is taken (another lab or apiserver?); listening on a free port instead",
				"taken", taken, "listen", l.Addr().String())
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("listen for kubectl on %s: %w; choose another address with --listen", want, err)
	}
	sessions := &server.Sessions{}
	tokens := &server.Tokens{Store: d.store, Revoked: func(account string) {
		if n := sessions.End(account); n > 0 {
			d.log.Info("ended the sessions of revoked tokens", "account", account, "connections", n)
		}
	}}
	kl := &kubeListener{l: sessions.Listener(l), auth: &server.Authenticator{ClientCAs: p.ClientCAs(), Tokens: tokens, Sessions: sessions, Log: d.log},
		hs: &http.Server{ReadHeaderTimeout: listenHeaderTimeout, IdleTimeout: 5 * time.Minute, MaxHeaderBytes: 64 << 10,
			ConnContext: sessions.ConnContext,
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server},
				// Requested, not verified here: the Authenticator checks it, so that a wrong one is a 401.
				ClientAuth: tls.RequestClientCert}}}
	return kl, l.Addr().String(), nil
}

// listenHeaderTimeout bounds the TLS handshake and a request's headers on the listener: a client that
// trickles them (slowloris) holds a connection no longer than this, and costs the others nothing meanwhile
// (each connection has its own goroutine).
var listenHeaderTimeout = 10 * time.Second

// hostAddrs are the global unicast addresses of the host side (the named namespace, or this one).
func hostAddrs(hostNetns string) ([]string, error) {
	var out []string
	read := func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				out = append(out, n.IP.String())
			}
		}
		return nil
	}
	if hostNetns == "" {
		return out, read()
	}
	return out, netns.Do(netns.Path(hostNetns), read)
}

// guardsHost: a listener where pods could reach it (not on loopback) makes this a workshop server, whose
// own services are closed to the lab's pods (network.Options.GuardHost).
func (k *kubeListener) guardsHost() bool {
	a, ok := k.l.Addr().(*net.TCPAddr)
	return ok && !a.IP.IsLoopback()
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
