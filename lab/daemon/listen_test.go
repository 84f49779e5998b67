package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/pki"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/vishvananda/netlink"
)

// TestListenKube: the listener takes the address the lab recorded when it is free; when it is taken it
// takes a free port on the same host and says so in the log; a --listen that is taken, or a name rather
// than an address, is an error naming it.
func TestListenKube(t *testing.T) {
	root := t.TempDir()
	var logb bytes.Buffer
	d := &Daemon{cfg: Config{Lab: "lt", Root: root, RunDir: filepath.Join(root, "run")}, log: slog.New(slog.NewTextHandler(&logb, nil))}

	// Take a port, record it as the lab's, and free it: the next start takes it again.
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recorded := hold.Addr().String()
	hold.Close()
	if err := WriteIdentity(Config{Lab: "lt", Root: root, RunDir: d.cfg.RunDir, KubeListen: recorded}); err != nil {
		t.Fatal(err)
	}
	kl, addr, err := d.listenKube()
	if err != nil {
		t.Fatal(err)
	}
	if addr != recorded {
		t.Errorf("took %s, want the recorded %s (free)", addr, recorded)
	}

	// Now it is held (by kl): a second start takes another port and logs it.
	kl2, addr2, err := d.listenKube()
	if err != nil {
		t.Fatal(err)
	}
	kl2.close()
	if addr2 == recorded || !strings.HasPrefix(addr2, "127.0.0.1:") {
		t.Errorf("with %s taken, took %s; want another port on 127.0.0.1", recorded, addr2)
	}
	if !strings.Contains(logb.String(), "taken="+recorded) || !strings.Contains(logb.String(), "listen="+addr2) {
		t.Errorf("log does not say the address was taken and which was used:\n%s", logb.String())
	}

	// Given explicitly and taken: an error, not another port.
	d.cfg.KubeListen = recorded
	if _, _, err := d.listenKube(); err == nil || !strings.Contains(err.Error(), recorded) || !strings.Contains(err.Error(), "--listen") {
		t.Errorf("--listen %s taken: %v, want an error naming it and --listen", recorded, err)
	}
	kl.close()

	d.cfg.KubeListen = "lab.example:6443"
	if _, _, err := d.listenKube(); err == nil || !strings.Contains(err.Error(), "give an IP address") {
		t.Errorf("--listen lab.example:6443: %v, want refused as not an address", err)
	}
}

// TestListenHostSide: a listener on an address that is not loopback opens on the lab's host side (its
// --host-netns), and its certificate names that address, so a learner there can verify it.
func TestListenHostSide(t *testing.T) {
	netnstest.RequireRoot(t, "a network namespace for the lab's host side")
	root := t.TempDir()
	host := netnstest.Lab() + "-host"
	path, err := netns.EnsureNamed(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.DeleteNamed(host) })
	h, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The host side's address, on its loopback device (this kernel has no dummy links).
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("198.51.100.7/32")
	if err := h.AddrAdd(lo, addr); err != nil {
		t.Fatal(err)
	}

	d := &Daemon{cfg: Config{Lab: "lt", Root: root, RunDir: filepath.Join(root, "run"), HostNetns: host, KubeListen: "198.51.100.7:0"},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	kl, got, err := d.listenKube()
	if err != nil {
		t.Fatal(err)
	}
	defer kl.close()
	if !strings.HasPrefix(got, "198.51.100.7:") {
		t.Fatalf("listening on %s, want 198.51.100.7:PORT", got)
	}
	// The address is not this namespace's: a socket here could not have bound it.
	go kl.serve(http.NotFoundHandler())
	defer kl.shutdown(context.Background())
	p, err := pki.LoadClient(PKIDir(root))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CAPEM)
	raw, err := netns.DialContext(path)(context.Background(), "tcp", got)
	if err != nil {
		t.Fatalf("dial %s inside the host side: %v", got, err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "198.51.100.7"})
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatalf("TLS to %s, verifying the lab CA and the address: %v", got, err)
	}
}

// TestListenRefusesOversizedHeaders: a request whose headers pass 64 KiB is refused (431) before any
// handler or credential check sees it, and the listener goes on serving.
func TestListenRefusesOversizedHeaders(t *testing.T) {
	addr, tc := teapotListener(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	req, _ := http.NewRequest("GET", "https://"+addr+"/version", nil)
	req.Header.Set("X-Padding", strings.Repeat("a", 100<<10))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB of headers: %d, want 431", resp.StatusCode)
	}
	resp, err = hc.Get("https://" + addr + "/version")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("the admin's request after it: %d, want the handler's 418", resp.StatusCode)
	}
}

// TestListenSlowloris: 100 clients that finish the TLS handshake and then trickle their headers a byte at a
// time are cut off once the header timeout passes, while an honest client is answered at once meanwhile.
func TestListenSlowloris(t *testing.T) {
	old := listenHeaderTimeout
	listenHeaderTimeout = 2 * time.Second
	defer func() { listenHeaderTimeout = old }()
	addr, tc := teapotListener(t)

	const slow = 100
	cut := make(chan time.Duration, slow)
	start := time.Now()
	for range slow {
		conn, err := tls.Dial("tcp", addr, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			conn.Write([]byte("GET /version HTTP/1.1\r\nHost: lab\r\n"))
			for {
				// A header byte every 200 ms: never the blank line that ends them.
				if _, err := conn.Write([]byte("X")); err != nil {
					break
				}
				conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				var b [1]byte
				if _, err := conn.Read(b[:]); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						continue
					}
					break // the server closed it
				}
			}
			cut <- time.Since(start)
		}()
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	for i := range 5 {
		t0 := time.Now()
		resp, err := hc.Get("https://" + addr + "/version")
		if err != nil {
			t.Fatalf("an honest request among the slow clients: %v", err)
		}
		resp.Body.Close()
		if took := time.Since(t0); resp.StatusCode != http.StatusTeapot || took > time.Second {
			t.Errorf("honest request %d: %d in %v, want the handler's 418 at once", i, resp.StatusCode, took)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for range slow {
		select {
		case at := <-cut:
			if at < listenHeaderTimeout-500*time.Millisecond {
				t.Errorf("a slow client was cut after %v, before the header timeout %v", at, listenHeaderTimeout)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("slow clients still connected %v after the header timeout", 10*time.Second)
		}
	}
}

// teapotListener is the lab's HTTPS listener on a free loopback port, with its own CA and admin
// certificate, serving a handler that answers 418; and the admin's TLS configuration for it.
func teapotListener(t *testing.T) (string, *tls.Config) {
	t.Helper()
	root := t.TempDir()
	d := &Daemon{cfg: Config{Lab: "lt", Root: root, RunDir: filepath.Join(root, "run"), KubeListen: "127.0.0.1:0"},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	kl, addr, err := d.listenKube()
	if err != nil {
		t.Fatal(err)
	}
	go kl.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	t.Cleanup(func() {
		kl.shutdown(context.Background())
		kl.close()
	})
	p, err := pki.LoadClient(PKIDir(root))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CAPEM)
	cert, err := tls.X509KeyPair(p.AdminPEM, p.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	return addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}
}
