// Package supervisortest starts a throwaway private containerd for tests of
// packages that need a real one (runtime/pods, runtime/images, ...).
package supervisortest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/supervisor"
)

// Require stops the test (failing in CI, see netnstest.Missing) unless it runs as root with containerd, its
// runc shim and runc installed.
func Require(t testing.TB) {
	t.Helper()
	netnstest.RequireRoot(t, "runs a private containerd")
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			netnstest.Missing(t, b+" not in PATH (apt-get install containerd runc)")
		}
	}
}

// Start starts a private containerd for a fresh lab in short temp dirs
// (the socket path must stay under 108 bytes) and stops it and removes its
// dirs in t.Cleanup. The returned client's default namespace is the lab.
// Containers the test creates must be removed by the test's own cleanup,
// registered after Start so it runs before containerd stops.
func Start(t testing.TB) *supervisor.Supervisor {
	t.Helper()
	Require(t)
	lab := netnstest.Lab()
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

// Buffer is a bytes.Buffer safe for one goroutine writing (a container's output, the supervisor's log) while
// another reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// logBuffer keeps containerd's log so a failing test can show it without
// flooding passing runs.
type logBuffer struct {
	Buffer
	root string
}

// tail returns the end of the supervisor events and of containerd's own
// log file.
func (l *logBuffer) tail(n int) string {
	b := []byte(l.String())
	if f, err := os.ReadFile(supervisor.LogPath(l.root)); err == nil {
		b = append(b, f...)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
