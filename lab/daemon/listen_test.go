package daemon

import (
	"bytes"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenKube: the listener takes the address the lab recorded when it is free; when it is taken it
// takes a free port on the same host and says so in the log; a --kube-listen that is taken, or not on
// loopback, is an error naming it.
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
	if _, _, err := d.listenKube(); err == nil || !strings.Contains(err.Error(), recorded) || !strings.Contains(err.Error(), "--kube-listen") {
		t.Errorf("--kube-listen %s taken: %v, want an error naming it and --kube-listen", recorded, err)
	}
	kl.close()

	d.cfg.KubeListen = "0.0.0.0:0"
	if _, _, err := d.listenKube(); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("--kube-listen 0.0.0.0:0: %v, want refused as not loopback", err)
	}
}
