// Package supervisortest starts a throwaway private containerd for tests of
// packages that need a real one (runtime/pods, runtime/images, ...).
package supervisortest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/runtime/supervisor"
)

// Require fails (CI=true) or skips the test unless it runs as root with
// containerd, its runc shim and runc installed.
func Require(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else {
		for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
			if _, err := exec.LookPath(b); err != nil {
				why = b + " not in PATH (apt-get install containerd runc)"
				break
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing in CI: %s", why)
	}
	t.Skipf("skipping: %s", why)
}

// Lab returns a fresh lab prefix of the form "t" + 5 hex chars.
func Lab() string {
	b := make([]byte, 3)
	rand.Read(b)
	return ("t" + hex.EncodeToString(b))[:6]
}

// Start starts a private containerd for a fresh lab in short temp dirs
// (the socket path must stay under 108 bytes) and stops it and removes its
// dirs in t.Cleanup. The returned client's default namespace is the lab.
// Containers the test creates must be removed by the test's own cleanup,
// registered after Start so it runs before containerd stops.
func Start(t testing.TB) *supervisor.Supervisor {
	t.Helper()
	Require(t)
	lab := Lab()
	dir, err := os.MkdirTemp("/tmp", "pi"+lab+"-")
	if err != nil {
		t.Fatal(err)
	}
	log := &logBuffer{root: filepath.Join(dir, "root")}
	o := supervisor.Options{
		Lab:    lab,
		Root:   filepath.Join(dir, "root"),
		RunDir: filepath.Join(dir, "run"),
		Log:    log,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := supervisor.Start(ctx, o)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start private containerd: %v\ncontainerd log:\n%s", err, log.tail(8192))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log (tail):\n%s", log.tail(8192))
		}
		if err := s.Close(); err != nil {
			t.Errorf("stop private containerd: %v", err)
		}
		// Containers a test ran leave runc's per-namespace cgroup parents; the containers are gone by now.
		if err := supervisor.RemoveCgroupParents(o.Lab); err != nil {
			t.Errorf("%v", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove lab dir: %v", err)
		}
	})
	return s
}

// logBuffer keeps containerd's log so a failing test can show it without
// flooding passing runs.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	root string
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// tail returns the end of the supervisor events and of containerd's own
// log file.
func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	b := append([]byte(nil), l.buf.Bytes()...)
	l.mu.Unlock()
	if f, err := os.ReadFile(supervisor.LogPath(l.root)); err == nil {
		b = append(b, f...)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
