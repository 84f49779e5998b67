// Package supervisor runs a private containerd for one lab (or connects to an
// existing one) and keeps it alive.
//
// The private containerd is started in its own process group so that a signal
// aimed at the pi daemon (Ctrl-C, SIGTERM from `pi down`) does not reach it,
// and it records its pid in RunDir so that a later daemon can adopt it after
// the previous one was killed. Container shims are started by containerd in
// their own process groups as well, so pods keep running while containerd is
// stopped or restarted.
package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"golang.org/x/sys/unix"
)

// Options configures Start.
type Options struct {
	Lab     string // containerd namespace name and prefix
	Root    string // lab root dir; containerd root = Root/containerd
	RunDir  string // lab run dir; containerd state = RunDir/containerd, socket RunDir/containerd/containerd.sock
	Address string // if set: use this existing containerd, start nothing
	// Log receives supervisor events (restarts) and, if it is an *os.File,
	// containerd's own output. Any other writer (or nil) sends containerd's
	// output to Root/containerd.log instead: containerd must never write to a
	// pipe into pi, or it would die of SIGPIPE when pi is killed.
	Log io.Writer
}

// Tunables; variables so tests can shorten them.
var (
	stopGrace      = 10 * time.Second
	readyTimeout   = 30 * time.Second
	backoffInitial = 200 * time.Millisecond
	backoffMax     = 30 * time.Second
	// A process that ran this long is considered healthy again and the
	// restart back-off starts over.
	backoffReset = time.Minute
)

// maxSocketPath is sizeof(sockaddr_un.sun_path) minus the trailing NUL.
const maxSocketPath = 107

// Supervisor owns a containerd client and, for a private containerd, the
// process behind it.
type Supervisor struct {
	opts      Options
	address   string
	client    *containerd.Client
	private   bool
	logFile   *os.File // opened by us: Root/containerd.log
	daemonOut *os.File // containerd's stdout and stderr

	mu      sync.Mutex
	proc    *process
	stop    chan struct{}
	stopped bool
	done    chan struct{} // closed when the monitor goroutine has returned
}

// process is a running containerd, either our child or adopted.
type process struct {
	pid     int
	started time.Time
	exited  chan struct{} // closed when the process is gone
	status  string        // exit description, valid after exited is closed
}

// Paths derived from Options; exported through functions so other packages
// (pi reset, tests) agree on them.

// StateDir is containerd's state directory for a lab run dir.
func StateDir(runDir string) string { return filepath.Join(runDir, "containerd") }

// SocketPath is the gRPC socket of the private containerd for a lab run dir.
func SocketPath(runDir string) string { return filepath.Join(StateDir(runDir), "containerd.sock") }

func pidFile(runDir string) string    { return filepath.Join(runDir, "containerd.pid") }
func configFile(runDir string) string { return filepath.Join(runDir, "containerd.toml") }
func lockFile(runDir string) string   { return filepath.Join(runDir, "containerd.lock") }
func rootDir(root string) string      { return filepath.Join(root, "containerd") }

// LogPath is where containerd's output goes unless Options.Log is a file.
func LogPath(root string) string { return filepath.Join(root, "containerd.log") }

// Start connects to Options.Address, or starts (or adopts) the lab's private
// containerd, and returns once it answers. ctx bounds only the start-up; the
// private containerd lives until Close.
func Start(ctx context.Context, o Options) (*Supervisor, error) {
	if o.Lab == "" {
		return nil, errors.New("supervisor: Options.Lab is empty; it names the containerd namespace")
	}
	if o.Address != "" {
		return connectExisting(ctx, o)
	}
	if o.Root == "" || o.RunDir == "" {
		return nil, fmt.Errorf("supervisor: lab %q: Options.Root and Options.RunDir are required for a private containerd", o.Lab)
	}
	var err error
	if o.Root, err = filepath.Abs(o.Root); err != nil {
		return nil, err
	}
	if o.RunDir, err = filepath.Abs(o.RunDir); err != nil {
		return nil, err
	}
	sock := SocketPath(o.RunDir)
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("supervisor: containerd socket path %s is %d bytes, the limit is %d; use a shorter run dir", sock, len(sock), maxSocketPath)
	}
	if err := checkBinaries(); err != nil {
		return nil, err
	}
	for _, d := range []string{rootDir(o.Root), StateDir(o.RunDir)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("supervisor: create containerd dir: %w", err)
		}
	}

	s := &Supervisor{opts: o, address: sock, private: true, stop: make(chan struct{}), done: make(chan struct{})}
	if f, isFile := o.Log.(*os.File); isFile {
		s.daemonOut = f
	} else {
		f, err := os.OpenFile(LogPath(o.Root), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("supervisor: open containerd log: %w", err)
		}
		s.logFile, s.daemonOut = f, f
		if o.Log == nil {
			s.opts.Log = f
		}
	}

	ok := false
	defer func() {
		if !ok && s.logFile != nil {
			s.logFile.Close()
		}
	}()

	// The lock makes start-or-adopt atomic between concurrent pi processes of
	// the same lab; without it both could launch a containerd on one root.
	unlock, err := lockRunDir(o.RunDir)
	if err != nil {
		return nil, err
	}
	p, err := s.adopt()
	if err == nil && p == nil {
		if err = writeConfig(o); err == nil {
			p, err = s.launch()
		}
	}
	unlock()
	if err != nil {
		return nil, err
	}
	s.proc = p

	// containerd's socket file exists from bind() on, before it listens, and the client gives up at once
	// on "connection refused": wait until the socket accepts.
	if err := waitListening(ctx, sock, p); err != nil {
		s.kill(p)
		return nil, fmt.Errorf("supervisor: containerd at %s did not start listening (see its log): %w", sock, err)
	}
	client, err := containerd.New(sock, containerd.WithDefaultNamespace(o.Lab), dialTimeout(ctx))
	if err != nil {
		s.kill(p)
		return nil, fmt.Errorf("supervisor: connect to containerd at %s: %w", sock, err)
	}
	s.client = client
	if err := waitServing(ctx, client, p); err != nil {
		client.Close()
		s.kill(p)
		return nil, fmt.Errorf("supervisor: containerd at %s did not become ready (see its log): %w", sock, err)
	}
	go s.monitor()
	ok = true
	return s, nil
}

func connectExisting(ctx context.Context, o Options) (*Supervisor, error) {
	addr := strings.TrimPrefix(o.Address, "unix://")
	client, err := containerd.New(addr, containerd.WithDefaultNamespace(o.Lab), dialTimeout(ctx))
	if err != nil {
		return nil, fmt.Errorf("supervisor: connect to containerd at %s: %w", addr, err)
	}
	if err := waitServing(ctx, client, nil); err != nil {
		client.Close()
		return nil, fmt.Errorf("supervisor: containerd at %s does not answer: %w; is it running?", addr, err)
	}
	done := make(chan struct{})
	close(done)
	return &Supervisor{opts: o, address: addr, client: client, done: done}, nil
}

// dialTimeout bounds containerd.New's blocking dial by ctx's deadline.
func dialTimeout(ctx context.Context) containerd.ClientOpt {
	d := readyTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return containerd.WithTimeout(max(d, 100*time.Millisecond))
}

func checkBinaries() error {
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found in PATH; install it: apt-get install containerd runc", b)
		}
	}
	return nil
}

// Client returns a client whose default namespace is the lab's. It survives
// restarts of the private containerd (gRPC reconnects).
func (s *Supervisor) Client() *containerd.Client { return s.client }

// Lab is the lab name, which is also the client's default namespace.
func (s *Supervisor) Lab() string { return s.opts.Lab }

// Address is the containerd socket path.
func (s *Supervisor) Address() string { return s.address }

// Pid is the pid of the private containerd currently supervised, 0 if none.
func (s *Supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.pid
}

// Close stops supervising. For a private containerd it also stops containerd
// (SIGTERM, then SIGKILL after 10s); container shims keep running.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	if s.stop != nil {
		close(s.stop)
	}
	s.mu.Unlock()
	<-s.done

	var errs []error
	if s.client != nil {
		if err := s.client.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.private {
		s.mu.Lock()
		p := s.proc
		s.proc = nil
		s.mu.Unlock()
		if p != nil {
			if err := terminate(p.pid, p.exited, stopGrace); err != nil {
				errs = append(errs, err)
			}
		}
		cleanupRunFiles(s.opts.RunDir)
		removeSharedRunDirs(s.opts.Lab)
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
	return errors.Join(errs...)
}

// Shutdown stops the private containerd of a lab run dir, found via its pid
// file or, failing that, by its config path on the command line. It is a
// no-op when none is running.
func Shutdown(runDir string) error {
	runDir, err := filepath.Abs(runDir)
	if err != nil {
		return err
	}
	pid := findProcess(runDir)
	if pid == 0 {
		cleanupRunFiles(runDir)
		return nil
	}
	exited := make(chan struct{})
	go func() { waitGone(pid, nil); close(exited) }()
	err = terminate(pid, exited, stopGrace)
	cleanupRunFiles(runDir)
	removeSharedRunDirs("")
	return err
}

// removeSharedRunDirs removes containerd's hard-coded shared dirs if they
// are empty: shims put their sockets in /run/containerd/s whatever the
// state dir, runc keeps container state in /run/containerd/runc/<namespace>
// unless the client sets a runc root, and clients default FIFOs to
// /run/containerd/fifo. Anything still in use keeps its dir non-empty, and
// os.Remove never removes a non-empty dir, so this cannot disturb others.
func removeSharedRunDirs(lab string) {
	for _, d := range []string{"/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc/" + lab, "/run/containerd/runc", "/run/containerd"} {
		os.Remove(d)
	}
}

func cleanupRunFiles(runDir string) {
	os.Remove(pidFile(runDir))
	// containerd removes its sockets on a clean exit but not after SIGKILL;
	// a stale socket would make the next start's readiness probe misleading.
	os.Remove(SocketPath(runDir))
	os.Remove(SocketPath(runDir) + ".ttrpc")
}

// terminate sends SIGTERM, waits up to grace, then SIGKILLs.
func terminate(pid int, exited <-chan struct{}, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("supervisor: stop containerd (pid %d): %w", pid, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("supervisor: kill containerd (pid %d): %w", pid, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("supervisor: containerd (pid %d) still alive after SIGKILL", pid)
	}
}

// kill is used when Start fails after launching: the process must not be
// left behind.
func (s *Supervisor) kill(p *process) {
	terminate(p.pid, p.exited, 2*time.Second)
	cleanupRunFiles(s.opts.RunDir)
}

func (s *Supervisor) logf(format string, args ...any) {
	fmt.Fprintf(s.opts.Log, "%s pilab-supervisor[%s]: %s\n", time.Now().Format(time.RFC3339), s.opts.Lab, fmt.Sprintf(format, args...))
}

// writeConfig renders containerd's config. Plugins the lab never uses are
// disabled: CRI would start its own CNI/stream servers, and the extra
// snapshotters probe (and sometimes log errors about) host filesystems.
func writeConfig(o Options) error {
	cfg := fmt.Sprintf(`# Written by pi for lab %[1]q; regenerated on every start.
version = 2
root = %[2]q
state = %[3]q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %[4]q

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/amd64"]
`, o.Lab, rootDir(o.Root), StateDir(o.RunDir), SocketPath(o.RunDir), filepath.Join(rootDir(o.Root), "opt"))
	if err := os.WriteFile(configFile(o.RunDir), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("supervisor: write containerd config: %w", err)
	}
	return nil
}

// launch starts containerd as our child.
func (s *Supervisor) launch() (*process, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("containerd not found in PATH; install it: apt-get install containerd runc")
	}
	// A stale socket from a SIGKILLed containerd would answer nothing and
	// confuse readiness; containerd also refuses to listen if it exists.
	os.Remove(s.address)
	cmd := exec.Command(bin, "--config", configFile(s.opts.RunDir))
	cmd.Stdout = s.daemonOut
	cmd.Stderr = s.daemonOut
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("supervisor: start containerd: %w", err)
	}
	p := &process{pid: cmd.Process.Pid, started: time.Now(), exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err != nil {
			p.status = err.Error()
		} else {
			p.status = "exit status 0"
		}
		close(p.exited)
	}()
	if err := os.WriteFile(pidFile(s.opts.RunDir), []byte(strconv.Itoa(p.pid)+"\n"), 0o644); err != nil {
		terminate(p.pid, p.exited, time.Second)
		return nil, fmt.Errorf("supervisor: write pid file: %w", err)
	}
	s.logf("started containerd pid %d (config %s)", p.pid, configFile(s.opts.RunDir))
	return p, nil
}

// adopt returns the already-running private containerd of this lab, if any.
func (s *Supervisor) adopt() (*process, error) {
	pid := findProcess(s.opts.RunDir)
	if pid == 0 {
		return nil, nil
	}
	p := &process{pid: pid, started: time.Now(), exited: make(chan struct{})}
	go func() {
		waitGone(pid, nil)
		p.status = "exited (adopted process; status unknown)"
		close(p.exited)
	}()
	if err := os.WriteFile(pidFile(s.opts.RunDir), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("supervisor: write pid file: %w", err)
	}
	s.logf("adopted running containerd pid %d", pid)
	return p, nil
}

// findProcess returns the pid of the lab's containerd: the pid file if it
// names a live containerd started with our config, else a /proc scan (the pid
// file may be gone, e.g. after a crash between start and write).
func findProcess(runDir string) int {
	cfg := configFile(runDir)
	if b, err := os.ReadFile(pidFile(runDir)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && isOurs(pid, cfg) {
			return pid
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if isOurs(pid, cfg) {
			return pid
		}
	}
	return 0
}

// isOurs reports whether pid is a live containerd started with config cfg.
// Checking the command line, not just liveness, guards against pid reuse.
func isOurs(pid int, cfg string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if filepath.Base(args[0]) != "containerd" {
		return false
	}
	for i, a := range args {
		if a == "--config="+cfg || ((a == "--config" || a == "-c") && i+1 < len(args) && args[i+1] == cfg) {
			return !isZombie(pid)
		}
	}
	return false
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state field follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// waitGone blocks until pid (not our child) has exited or stop is closed.
// pidfd makes this event-driven; polling is the fallback for old kernels.
func waitGone(pid int, stop <-chan struct{}) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		defer unix.Close(fd)
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 250)
			if n > 0 || (err != nil && !errors.Is(err, unix.EINTR)) {
				return
			}
			if isZombie(pid) {
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || isZombie(pid) {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitListening waits until the unix socket at path accepts a connection, or p exits, or readyTimeout.
func waitListening(ctx context.Context, path string, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("containerd (pid %d) %s", p.pid, p.status)
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitServing(ctx context.Context, c *containerd.Client, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Version(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		last = err
		if p != nil {
			select {
			case <-p.exited:
				return fmt.Errorf("containerd (pid %d) %s", p.pid, p.status)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// monitor restarts containerd whenever it exits without Close being called.
func (s *Supervisor) monitor() {
	defer close(s.done)
	backoff := backoffInitial
	for {
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-p.exited:
		}
		if time.Since(p.started) >= backoffReset {
			backoff = backoffInitial
		}
		s.logf("containerd pid %d %s; restarting in %s", p.pid, p.status, backoff)
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, backoffMax)
			np, err := s.restart()
			if err == nil {
				s.mu.Lock()
				s.proc = np
				s.mu.Unlock()
				break
			}
			s.logf("restart failed: %v; retrying in %s", err, backoff)
		}
	}
}

func (s *Supervisor) restart() (*process, error) {
	unlock, err := lockRunDir(s.opts.RunDir)
	if err != nil {
		return nil, err
	}
	p, err := s.adopt()
	if err == nil && p == nil {
		if err = writeConfig(s.opts); err == nil {
			p, err = s.launch()
		}
	}
	unlock()
	if err != nil {
		return nil, err
	}
	// Close must not wait for a full readiness timeout.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := waitServing(ctx, s.client, p); err != nil {
		terminate(p.pid, p.exited, 2*time.Second)
		return nil, err
	}
	s.logf("containerd pid %d ready", p.pid)
	return p, nil
}

func lockRunDir(runDir string) (func(), error) {
	if err := os.MkdirAll(runDir, 0o711); err != nil {
		return nil, fmt.Errorf("supervisor: create run dir: %w", err)
	}
	f, err := os.OpenFile(lockFile(runDir), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("supervisor: open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("supervisor: lock %s: %w", f.Name(), err)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}
