package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Identity is what a lab records about itself, in <root>/lab.json (kept across `pi down`) and
// <run-dir>/lab.json (gone with the run dir at reboot). `pi down` and `pi reset` read it to act on the lab
// they were named and on nothing else: a --root, --run-dir or --socket of another lab is refused, and the
// flags left out come from here (the --host-netns whose transit links reset must remove, the socket the
// daemon listens on).
type Identity struct {
	Lab               string `json:"lab"`
	Root              string `json:"root"`
	RunDir            string `json:"runDir"`
	Socket            string `json:"socket"`
	HostNetns         string `json:"hostNetns,omitempty"`
	ContainerdAddress string `json:"containerdAddress,omitempty"`
	// KubeListen is the HTTPS listener's address (listen.go): `pi kubeconfig` points kubectl at it, and the
	// next start takes it again if it is free.
	KubeListen string `json:"kubeListen,omitempty"`
}

// IdentityFile is the name of the identity record in a lab's root and run dir.
const IdentityFile = "lab.json"

// PidFile is the daemon's pid file in the lab's run dir.
func PidFile(runDir string) string { return filepath.Join(runDir, "pi.pid") }

// StateDB is the lab's bbolt store; the daemon holds its flock while it runs.
func StateDB(root string) string { return filepath.Join(root, "state.db") }

// WriteIdentity records cfg (with Defaults applied) as the lab's identity in its root and run dir.
func WriteIdentity(cfg Config) error {
	cfg.Defaults()
	id := Identity{Lab: cfg.Lab, Root: abs(cfg.Root), RunDir: abs(cfg.RunDir), Socket: abs(cfg.Socket),
		HostNetns: cfg.HostNetns, ContainerdAddress: cfg.ContainerdAddress, KubeListen: cfg.KubeListen}
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	for _, dir := range []string{cfg.Root, cfg.RunDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("record lab %q: %w", cfg.Lab, err)
		}
		p := filepath.Join(dir, IdentityFile)
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("record lab %q in %s: %w", cfg.Lab, p, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("record lab %q in %s: %w", cfg.Lab, p, err)
		}
	}
	return nil
}

// ReadIdentity reads the identity recorded in dir (a root or run dir); nil without error if there is none.
func ReadIdentity(dir string) (*Identity, error) {
	p := filepath.Join(dir, IdentityFile)
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lab record %s: %w", p, err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil || id.Lab == "" {
		return nil, fmt.Errorf("lab record %s is not a pi lab record (%v); remove it if the dir is not a lab's", p, err)
	}
	return &id, nil
}

// Target is a lab located by its own records: what `pi up`, `pi down` and `pi reset` act on.
type Target struct {
	Config                 // flags given, completed from the record, then from the defaults
	Recorded     *Identity // the lab's record, nil if it has none (never started, or by an older pi)
	RecordedIn   string    // the file Recorded was read from
	Pid          int       // the lab's live daemon, 0 if none
	PidEvidence  string    // how Pid was found
	SocketGiven  bool      // --socket (or PI_SOCKET) was given
	LabDefaulted bool      // --lab (and PI_LAB) were not given: the lab is the default "pi"
}

// Locate finds the lab cfg names (cfg as the flags give it: Defaults not yet applied, empty = not given)
// by its own records. It refuses a --root or --run-dir that another lab recorded as its own, and, when
// strict (down, reset: commands that act on what exists), a --run-dir, --socket, --host-netns or
// --containerd-address that differs from what the lab recorded. Flags left out are taken from the record.
func Locate(cfg Config, strict bool) (*Target, error) {
	if cfg.Lab == "" {
		cfg.Lab = "pi"
	}
	if err := CheckLabName(cfg.Lab); err != nil {
		return nil, err
	}
	t := &Target{SocketGiven: cfg.Socket != ""}
	given := cfg
	if cfg.Root == "" {
		// A lab started with its own --root is found through its run dir's record.
		runDir := cfg.RunDir
		if runDir == "" {
			runDir = filepath.Join("/run/pilab", cfg.Lab)
		}
		if rec, _ := ReadIdentity(abs(runDir)); rec != nil && rec.Lab == cfg.Lab {
			cfg.Root = rec.Root
		} else {
			cfg.Root = filepath.Join("/var/lib/pilab", cfg.Lab)
		}
	}
	cfg.Root = abs(cfg.Root)
	rec, err := ReadIdentity(cfg.Root)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		t.Recorded, t.RecordedIn = rec, filepath.Join(cfg.Root, IdentityFile)
		if rec.Lab != cfg.Lab {
			return nil, fmt.Errorf("%s is the root of lab %q (recorded in %s), not of lab %q; name that lab (--lab %s) or give lab %s's own --root",
				cfg.Root, rec.Lab, t.RecordedIn, cfg.Lab, rec.Lab, cfg.Lab)
		}
		if cfg.RunDir == "" {
			cfg.RunDir = rec.RunDir
		}
		if cfg.Socket == "" {
			cfg.Socket = rec.Socket
		}
		if cfg.HostNetns == "" {
			cfg.HostNetns = rec.HostNetns
		}
		if cfg.ContainerdAddress == "" {
			cfg.ContainerdAddress = rec.ContainerdAddress
		}
	}
	cfg.Defaults()
	cfg.RunDir, cfg.Socket = abs(cfg.RunDir), abs(cfg.Socket)
	if given.Socket != "" {
		if owner := socketOwner(cfg.Socket); owner != nil && (owner.Lab != cfg.Lab || owner.Root != cfg.Root) {
			return nil, fmt.Errorf("--socket %s belongs to lab %q with root %s (recorded in %s), not to lab %q with root %s; to act on lab %s say --lab %s",
				cfg.Socket, owner.Lab, owner.Root, filepath.Join(filepath.Dir(cfg.Socket), IdentityFile), cfg.Lab, cfg.Root, owner.Lab, owner.Lab)
		}
	}
	if runRec, err := ReadIdentity(cfg.RunDir); err != nil {
		return nil, err
	} else if runRec != nil && (runRec.Lab != cfg.Lab || runRec.Root != cfg.Root) {
		return nil, fmt.Errorf("%s is the run dir of lab %q with root %s (recorded in %s), not of lab %q with root %s; give lab %s's own --run-dir",
			cfg.RunDir, runRec.Lab, runRec.Root, filepath.Join(cfg.RunDir, IdentityFile), cfg.Lab, cfg.Root, cfg.Lab)
	}
	if strict {
		want := Identity{Lab: cfg.Lab, Root: cfg.Root, RunDir: filepath.Join("/run/pilab", cfg.Lab), Socket: filepath.Join("/run/pilab", cfg.Lab, "pi.sock")}
		from := "the default"
		if rec != nil {
			want, from = *rec, "recorded in "+t.RecordedIn
		} else if given.RunDir != "" {
			want.RunDir = cfg.RunDir
			want.Socket = filepath.Join(cfg.RunDir, "pi.sock")
		}
		for _, c := range []struct{ flag, given, want string }{
			{"--run-dir", abs(given.RunDir), want.RunDir},
			{"--socket", abs(given.Socket), want.Socket},
			{"--host-netns", given.HostNetns, want.HostNetns},
			{"--containerd-address", given.ContainerdAddress, want.ContainerdAddress},
		} {
			// Without a record only the paths have defaults to compare with.
			if c.given == "" || c.given == c.want || (rec == nil && (c.flag == "--host-netns" || c.flag == "--containerd-address")) {
				continue
			}
			what := "none"
			if c.want != "" {
				what = c.want
			}
			return nil, fmt.Errorf("%s %s is not lab %q's: its %s is %s (%s); leave the flag out, or name the lab it belongs to with --lab",
				c.flag, c.given, cfg.Lab, strings.TrimPrefix(c.flag, "--"), what, from)
		}
	}
	t.Config = cfg
	t.Pid, t.PidEvidence = DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir)
	return t, nil
}

// socketOwner is the lab whose run dir holds socket path p, if that run dir has a record.
func socketOwner(p string) *Identity {
	id, _ := ReadIdentity(filepath.Dir(p))
	if id != nil && id.Socket == p {
		return id
	}
	return nil
}

// DaemonPid finds a live daemon of lab (with this root and run dir) from the lab's own records: the
// process holding the flock on <root>/state.db (bbolt takes it for as long as the store is open); else the
// process in <run-dir>/pi.pid if it has that state.db open or is a `pi daemon` of the lab (one still
// starting); else any `pi daemon` process whose command line names the lab or its root (one whose files
// were removed under it, as an older reset did). It returns 0 if there is none, else the pid (-1 if the
// lock is held by a process /proc/locks does not show) and how it was found.
func DaemonPid(lab, root, runDir string) (int, string) {
	db := StateDB(root)
	if held, pid := flockHolder(db); held {
		if pid > 0 {
			return pid, "it holds the lock on " + db
		}
		return -1, "a process holds the lock on " + db
	}
	if b, err := os.ReadFile(PidFile(runDir)); err == nil {
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 0 && processAlive(pid) {
			if hasOpen(pid, db) {
				return pid, fmt.Sprintf("its pid file %s names it and it has %s open", PidFile(runDir), db)
			}
			if isDaemonOf(pid, lab, root) {
				return pid, fmt.Sprintf("its pid file %s names it and it is a pi daemon of lab %s", PidFile(runDir), lab)
			}
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if isDaemonOf(pid, lab, root) && processAlive(pid) {
			return pid, fmt.Sprintf("its command line is a pi daemon of lab %s", lab)
		}
	}
	return 0, ""
}

// flockHolder reports whether someone holds a flock on path, and who, from /proc/locks.
func flockHolder(path string) (bool, int) {
	f, err := os.Open(path)
	if err != nil {
		return false, 0
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return false, 0
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return false, 0
	}
	return true, lockHolder(path)
}

// lockHolder finds the pid holding an exclusive flock on path in /proc/locks
// ("1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"; the device in hex, the inode in decimal).
func lockHolder(path string) int {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		// Blocked waiters are listed as "1: -> FLOCK ..."; only holders count.
		if len(fl) < 6 || fl[1] != "FLOCK" || fl[3] != "WRITE" || fl[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fl[4]); err == nil {
			return pid
		}
	}
	return 0
}

// LockState takes the flock on the lab's state.db that a running daemon holds, so that no daemon of the
// lab can open its store while reset removes it. It returns the pid of the holder if it is taken.
func LockState(root string) (unlock func(), holder int, err error) {
	f, err := os.OpenFile(StateDB(root), os.O_RDWR, 0)
	if os.IsNotExist(err) {
		return func() {}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open %s to lock it: %w", StateDB(root), err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			if h := lockHolder(StateDB(root)); h > 0 {
				return nil, h, nil
			}
			return nil, -1, nil
		}
		return nil, 0, fmt.Errorf("lock %s: %w", StateDB(root), err)
	}
	return func() { f.Close() }, 0, nil
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// hasOpen reports whether process pid has file path open.
func hasOpen(pid int, path string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == path {
			return true
		}
	}
	return false
}

// isDaemonOf reports whether pid runs `pi daemon` for this lab or root (as `pi up` starts it: --lab and
// --root always given).
func isDaemonOf(pid int, lab, root string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	daemon := false
	for i, a := range args {
		if a == "daemon" {
			daemon = true
			continue
		}
		if !daemon {
			continue
		}
		name, val, ok := strings.Cut(a, "=")
		if !ok && i+1 < len(args) {
			val = args[i+1]
		}
		if (name == "--lab" && val == lab) || (name == "--root" && abs(val) == root) {
			return true
		}
	}
	return false
}

func abs(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}
