package daemon

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"golang.org/x/sys/unix"
)

// labDirs records a lab named lab with its root and run dir below base, as `pi daemon` does at start.
func labDirs(t *testing.T, base, lab, hostNetns string) Config {
	t.Helper()
	cfg := Config{Lab: lab, Root: filepath.Join(base, lab, "root"), RunDir: filepath.Join(base, lab, "run"), HostNetns: hostNetns}
	if err := WriteIdentity(cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Defaults()
	return cfg
}

// TestLocateActsOnlyOnTheNamedLab: a root, run dir or socket another lab recorded as its own is refused
// with a message naming that lab; flags left out come from the named lab's record.
func TestLocateActsOnlyOnTheNamedLab(t *testing.T) {
	base := t.TempDir()
	a := labDirs(t, base, "ua", "inet-ua")
	b := labDirs(t, base, "ub", "")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"root of another lab", Config{Lab: "ua", Root: b.Root}, b.Root + ` is the root of lab "ub" (recorded in ` + b.Root + `/lab.json), not of lab "ua"; name that lab (--lab ub)`},
		{"run dir of another lab", Config{Lab: "ua", Root: a.Root, RunDir: b.RunDir}, b.RunDir + ` is the run dir of lab "ub"`},
		{"socket of another lab", Config{Lab: "ua", Root: a.Root, Socket: b.Socket}, `--socket ` + b.Socket + ` belongs to lab "ub"`},
		{"default lab, socket of another", Config{Socket: b.Socket}, `belongs to lab "ub" with root ` + b.Root + ` (recorded in ` + b.RunDir + `/lab.json), not to lab "pi"`},
		{"socket not the lab's", Config{Lab: "ua", Root: a.Root, Socket: filepath.Join(base, "other.sock")}, `--socket ` + base + `/other.sock is not lab "ua"'s: its socket is ` + a.Socket + ` (recorded in ` + a.Root + `/lab.json)`},
		{"host netns not the lab's", Config{Lab: "ua", Root: a.Root, HostNetns: "inet-ub"}, `--host-netns inet-ub is not lab "ua"'s: its host-netns is inet-ua`},
		{"containerd not the lab's", Config{Lab: "ua", Root: a.Root, ContainerdAddress: "/run/containerd/containerd.sock"}, `--containerd-address /run/containerd/containerd.sock is not lab "ua"'s: its containerd-address is none`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Locate(tc.cfg, true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Locate(%+v): %v\nwant an error containing %q", tc.cfg, err, tc.want)
			}
		})
	}
	tg, err := Locate(Config{Lab: "ua", Root: a.Root}, true)
	if err != nil {
		t.Fatal(err)
	}
	if tg.RunDir != a.RunDir || tg.Socket != a.Socket || tg.HostNetns != "inet-ua" || tg.Recorded == nil {
		t.Errorf("Locate took %+v, want the recorded run dir %s, socket %s, host netns inet-ua", tg.Config, a.RunDir, a.Socket)
	}
	// A lab found by its run dir's record alone: its --root need not be given again.
	if tg, err := Locate(Config{Lab: "ub", RunDir: b.RunDir}, true); err != nil || tg.Root != b.Root {
		t.Errorf("Locate by run dir: %v, root %q, want %s", err, tg.Root, b.Root)
	}
	// Not strict (pi up): another socket for the lab is its choice, another lab's socket is still refused.
	if _, err := Locate(Config{Lab: "ua", Root: a.Root, Socket: filepath.Join(base, "new.sock")}, false); err != nil {
		t.Errorf("pi up with a new socket: %v", err)
	}
	if _, err := Locate(Config{Lab: "ua", Root: a.Root, Socket: b.Socket}, false); err == nil {
		t.Errorf("pi up with lab ub's socket: no error")
	}
}

// TestDaemonPidAndResetRefusal: the daemon is found by state.db's lock or by its pid file, and Reset
// refuses while it is alive, naming the pid and `pi down --lab X`, and leaves the lab's dirs alone.
func TestDaemonPidAndResetRefusal(t *testing.T) {
	cfg := labDirs(t, t.TempDir(), "ua", "")
	if pid, how := DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir); pid != 0 {
		t.Fatalf("DaemonPid of a lab with no daemon: %d (%s)", pid, how)
	}
	db, err := os.OpenFile(StateDB(cfg.Root), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// As bbolt does: an exclusive flock for as long as the store is open.
	if err := unix.Flock(int(db.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	pid, how := DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir)
	if pid != os.Getpid() || !strings.Contains(how, "holds the lock on "+StateDB(cfg.Root)) {
		t.Errorf("DaemonPid with state.db locked: %d (%s), want %d holding the lock", pid, how, os.Getpid())
	}
	tg, err := Locate(Config{Lab: "ua", Root: cfg.Root}, true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Reset(context.Background(), tg)
	var re *RunningError
	if !errors.As(err, &re) || re.Pid != os.Getpid() {
		t.Fatalf("Reset of a running lab: %v, want a RunningError naming pid %d", err, os.Getpid())
	}
	want := `lab "ua" is running (daemon pid ` + strconv.Itoa(os.Getpid()) + `: it holds the lock on ` + StateDB(cfg.Root) + `); stop it with ` + "`pi down --lab ua`" + ` first`
	if err.Error() != want {
		t.Errorf("Reset refusal:\n got %s\nwant %s", err, want)
	}
	if _, err := os.Stat(StateDB(cfg.Root)); err != nil {
		t.Errorf("Reset refused but state.db is gone: %v", err)
	}
	unix.Flock(int(db.Fd()), unix.LOCK_UN)

	// The pid file alone: the process must have this lab's state.db open (we do), else it is a stale file.
	if err := os.WriteFile(PidFile(cfg.RunDir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if pid, how := DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir); pid != os.Getpid() || !strings.Contains(how, "has "+StateDB(cfg.Root)+" open") {
		t.Errorf("DaemonPid by pid file: %d (%s)", pid, how)
	}
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	os.WriteFile(PidFile(cfg.RunDir), []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644)
	if pid, how := DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir); pid != 0 {
		t.Errorf("DaemonPid with a pid file naming an unrelated process: %d (%s), want 0", pid, how)
	}
}

// TestLeftoversFindsWhatIsLeft: reset's final check sees a netns, a dir, a mount and a socket of the lab.
func TestLeftoversFindsWhatIsLeft(t *testing.T) {
	netnstest.RequireRoot(t, "makes a network namespace and a mount")
	lab := netnstest.Lab()
	cfg := labDirs(t, t.TempDir(), lab, "")
	if _, err := netns.EnsureNamed(lab + "-x"); err != nil {
		t.Fatal(err)
	}
	defer netns.DeleteNamed(lab + "-x")
	mnt := filepath.Join(cfg.RunDir, "m")
	os.MkdirAll(mnt, 0o700)
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	os.WriteFile(cfg.Socket, nil, 0o600)
	left := strings.Join(Leftovers(cfg), "\n")
	for _, want := range []string{"netns " + lab + "-x", "mount " + mnt, "directory " + cfg.RunDir, "directory " + cfg.Root, "socket " + cfg.Socket} {
		if !strings.Contains(left, want) {
			t.Errorf("Leftovers misses %q; found:\n%s", want, left)
		}
	}
}
