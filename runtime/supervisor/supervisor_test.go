package supervisor_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/supervisor"
	"github.com/pilab/pi/runtime/supervisor/supervisortest"
)

// labDirs returns short dirs (socket paths are limited to 107 bytes) that are
// removed after the test.
func labDirs(t *testing.T) supervisor.Options {
	t.Helper()
	lab := netnstest.Lab()
	dir, err := os.MkdirTemp("/tmp", "pi"+lab+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test did, no containerd may outlive it.
		if pid := supervisor.FindProcess(filepath.Join(dir, "run")); pid != 0 {
			t.Errorf("containerd pid %d of lab %s still running at cleanup; killing it", pid, lab)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		os.RemoveAll(dir)
	})
	return supervisor.Options{Lab: lab, Root: filepath.Join(dir, "root"), RunDir: filepath.Join(dir, "run")}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && b[i+2] != 'Z'
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPrivateStartRestartClose(t *testing.T) {
	supervisortest.Require(t)
	defer supervisor.SetBackoffForTest(50 * time.Millisecond)()
	o := labDirs(t)
	log := &supervisortest.Buffer{}
	o.Log = log
	ctx := ctxT(t)

	s, err := supervisor.Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	if want := supervisor.SocketPath(o.RunDir); s.Address() != want {
		t.Errorf("Address() = %q, want %q", s.Address(), want)
	}
	v, err := s.Client().Version(ctx)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if !strings.HasPrefix(v.Version, "1.") {
		t.Errorf("containerd version %q", v.Version)
	}
	if ns, _ := s.Client().NamespaceService().List(ctx); len(ns) != 0 {
		// A fresh root has no namespaces; a shared one would.
		t.Errorf("fresh private containerd has namespaces %v; is it really private?", ns)
	}
	// The default namespace must be the lab: creating a lease lands there.
	lease, err := s.Client().LeasesService().Create(ctx)
	if err != nil {
		t.Fatalf("create lease in default namespace: %v", err)
	}
	ns, err := s.Client().NamespaceService().List(ctx)
	if err != nil || len(ns) != 1 || ns[0] != o.Lab {
		t.Errorf("namespaces after lease = %v, %v; want [%s]", ns, err, o.Lab)
	}
	s.Client().LeasesService().Delete(namespaces.WithNamespace(ctx, o.Lab), lease)

	pid := s.Pid()
	if pid == 0 || !alive(pid) {
		t.Fatalf("Pid() = %d, not a live process", pid)
	}
	b, err := os.ReadFile(filepath.Join(o.RunDir, "containerd.pid"))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("pid file = %q, %v; want %d", b, err, pid)
	}
	if pgid, _ := syscall.Getpgid(pid); pgid != pid {
		t.Errorf("containerd pgid = %d, want its own group %d (signals to pi must not reach it)", pgid, pid)
	}
	cfg, _ := os.ReadFile(supervisor.ConfigFile(o.RunDir))
	for _, want := range []string{`"io.containerd.grpc.v1.cri"`, o.Root, o.RunDir} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
	plugins, err := s.Client().IntrospectionService().Plugins(ctx, nil)
	if err != nil {
		t.Fatalf("introspection: %v", err)
	}
	for _, p := range plugins.Plugins {
		if p.Type+"."+p.ID == "io.containerd.grpc.v1.cri" && p.InitErr == nil {
			t.Errorf("CRI plugin is loaded; the config should disable it")
		}
		if p.ID == "overlayfs" && p.InitErr != nil {
			t.Errorf("overlayfs snapshotter failed: %v", p.InitErr.Message)
		}
	}

	// kill -9: the supervisor must notice and bring up a new containerd on
	// the same socket; the same client keeps working.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "containerd restart", 30*time.Second, func() bool {
		np := s.Pid()
		if np == 0 || np == pid || !alive(np) {
			return false
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := s.Client().Version(c)
		return err == nil
	})
	if !strings.Contains(log.String(), "restarting in") {
		t.Errorf("restart not logged; log:\n%s", log.String())
	}
	// A non-file Log must not become containerd's stderr (a pipe into pi).
	if b, _ := os.ReadFile(supervisor.LogPath(o.Root)); strings.Count(string(b), "containerd successfully booted") != 2 {
		t.Errorf("%s should hold the output of both containerd runs:\n%s", supervisor.LogPath(o.Root), b)
	}

	newPid := s.Pid()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if alive(newPid) {
		t.Errorf("containerd pid %d still alive after Close", newPid)
	}
	if p := supervisor.FindProcess(o.RunDir); p != 0 {
		t.Errorf("a containerd of the lab (pid %d) runs after Close", p)
	}
	for _, f := range []string{supervisor.SocketPath(o.RunDir), filepath.Join(o.RunDir, "containerd.pid")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after Close (err %v)", f, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// helperEnv makes the test binary act as a pi daemon that starts the
// supervisor and then waits to be SIGKILLed.
const helperEnv = "PI_SUPERVISOR_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperDaemon()
	}
	os.Exit(m.Run())
}

func helperDaemon() {
	var o supervisor.Options
	o.Lab, o.Root, o.RunDir = os.Getenv("LAB"), os.Getenv("ROOT"), os.Getenv("RUNDIR")
	f, err := os.OpenFile(filepath.Join(o.Root+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	o.Log = f
	s, err := supervisor.Start(context.Background(), o)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("PID", s.Pid())
	select {}
}

// startDaemonAndCrash runs a fake pi daemon that starts the lab's containerd,
// then kill -9s the daemon, and returns the orphaned containerd's pid.
func startDaemonAndCrash(t *testing.T, o supervisor.Options) int {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1", "LAB="+o.Lab, "ROOT="+o.Root, "RUNDIR="+o.RunDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PID ") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper daemon: %q %v", line, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "PID ")))
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !alive(pid) {
		t.Fatalf("containerd pid %d died with its daemon; it must survive (own process group)", pid)
	}
	return pid
}

func TestAdoptAfterDaemonKilled(t *testing.T) {
	supervisortest.Require(t)
	defer supervisor.SetBackoffForTest(50 * time.Millisecond)()
	o := labDirs(t)
	o.Log = &supervisortest.Buffer{}
	orphan := startDaemonAndCrash(t, o)

	ctx := ctxT(t)
	s, err := supervisor.Start(ctx, o)
	if err != nil {
		t.Fatalf("Start (adopt): %v", err)
	}
	defer s.Close()
	if s.Pid() != orphan {
		t.Fatalf("Start launched pid %d instead of adopting the running containerd %d", s.Pid(), orphan)
	}
	if _, err := s.Client().Version(ctx); err != nil {
		t.Fatalf("adopted containerd does not answer: %v", err)
	}
	// An adopted containerd is supervised too.
	syscall.Kill(orphan, syscall.SIGKILL)
	waitFor(t, "restart of adopted containerd", 30*time.Second, func() bool {
		p := s.Pid()
		return p != orphan && p != 0 && alive(p)
	})
	last := s.Pid()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if alive(last) {
		t.Errorf("containerd %d alive after Close", last)
	}
}

func TestShutdown(t *testing.T) {
	supervisortest.Require(t)
	o := labDirs(t)
	orphan := startDaemonAndCrash(t, o)
	if got := supervisor.FindProcess(o.RunDir); got != orphan {
		t.Fatalf("FindProcess = %d, want %d", got, orphan)
	}
	if err := supervisor.Shutdown(o.RunDir); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if alive(orphan) {
		t.Fatalf("containerd %d alive after Shutdown", orphan)
	}
	if err := supervisor.Shutdown(o.RunDir); err != nil {
		t.Errorf("Shutdown with nothing running: %v", err)
	}
}

func TestExistingAddress(t *testing.T) {
	s0 := supervisortest.Start(t)
	ctx := ctxT(t)
	s, err := supervisor.Start(ctx, supervisor.Options{Lab: "other", Address: "unix://" + s0.Address()})
	if err != nil {
		t.Fatalf("Start with Address: %v", err)
	}
	if s.Pid() != 0 {
		t.Errorf("Pid() = %d for an existing containerd; nothing should be supervised", s.Pid())
	}
	if _, err := s.Client().Version(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing a client of an existing containerd must not stop it.
	if _, err := s0.Client().Version(ctx); err != nil {
		t.Fatalf("existing containerd stopped by Close of a client: %v", err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := supervisor.Start(ctx, supervisor.Options{}); err == nil {
		t.Error("Start without Lab succeeded")
	}
	long := "/tmp/" + strings.Repeat("x", 90)
	_, err := supervisor.Start(ctx, supervisor.Options{Lab: "t", Root: long, RunDir: long})
	if err == nil || !strings.Contains(err.Error(), "limit is 107") {
		t.Errorf("long socket path: err = %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	_, err = supervisor.Start(ctx, supervisor.Options{Lab: "t", Root: dir, RunDir: dir})
	if err == nil || !strings.Contains(err.Error(), "not found in PATH; install it: apt-get install containerd runc") {
		t.Errorf("missing binary: err = %v", err)
	}
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := supervisor.Start(c, supervisor.Options{Lab: "t", Address: filepath.Join(dir, "nope.sock")}); err == nil {
		t.Error("Start with a dead Address succeeded")
	}
}
