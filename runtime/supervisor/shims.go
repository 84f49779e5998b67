package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Shim is a live containerd shim process: containerd starts one per container, in its own process group,
// so it outlives containerd and the pi daemon. Found from /proc alone, it can be stopped when containerd is
// gone or no longer knows the task (a start killed half way).
type Shim struct {
	Pid       int
	Namespace string // -namespace: the lab's containerd namespace
	ID        string // -id: the container
	Address   string // -address: the containerd it reports to
	Bundle    string // its working directory: the task's bundle, <state>/io.containerd.runtime.v2.task/<ns>/<id>
}

func (s Shim) String() string {
	return fmt.Sprintf("shim pid %d (container %s, namespace %s, bundle %s)", s.Pid, s.ID, s.Namespace, s.Bundle)
}

// taskDir is where containerd's v2 runtime keeps bundles below its state dir (and work dirs below its root).
const taskDir = "io.containerd.runtime.v2.task"

// BundleDir is the bundle containerd makes for container id of namespace ns under state dir stateDir.
func BundleDir(stateDir, ns, id string) string { return filepath.Join(stateDir, taskDir, ns, id) }

// FindShims lists the live shims of namespace ns that serve the containerd at address (a socket path, with
// or without unix://). A shim is recognised by its command line (containerd-shim-*, -namespace ns,
// -address address), the flags containerd starts every shim with; the namespace alone is not enough,
// since another containerd on the machine may use the same namespace name.
func FindShims(ns, address string) ([]Shim, error) {
	address = strings.TrimPrefix(address, "unix://")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []Shim
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, ok := readShim(pid)
		if !ok || s.Namespace != ns || strings.TrimPrefix(s.Address, "unix://") != address || isZombie(pid) {
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out, nil
}

func readShim(pid int) (Shim, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return Shim{}, false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
		return Shim{}, false
	}
	s := Shim{Pid: pid}
	for i := 1; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !hasVal && i+1 < len(args) {
			val = args[i+1]
		}
		switch name {
		case "namespace":
			s.Namespace = val
		case "id":
			s.ID = val
		case "address":
			s.Address = val
		default:
			continue
		}
		if !hasVal {
			i++
		}
	}
	s.Bundle, _ = os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	return s, true
}

// KillShim kills a shim's containers and then the shim (SIGKILL: they are leftovers, nobody waits for their
// exit status), and waits until they are gone. The container processes are the shim's descendants (runc
// hands each container's init to the shim, a subreaper); killing only the shim would leave them running
// as orphans.
func KillShim(s Shim) error {
	pids := append(descendants(s.Pid), s.Pid)
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill pid %d of %s: %w", p, s, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for alive(p) {
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d of %s still alive 10s after SIGKILL", p, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// alive reports whether pid exists and is not a zombie. A zombie child of ours is reaped here: the shims
// KillShim kills are normally not our children, but a test may have started one.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	if isZombie(pid) {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		return false
	}
	return true
}

// descendants lists pid's children, grandchildren..., deepest last.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := ppid(p); pp > 0 {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: state, ppid, ...
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// RemoveBundle removes a task's bundle as its shim would on a clean exit: the shim's socket (named in the
// bundle's address file, under /run/containerd/s whatever the state dir), the mounts inside the bundle (the
// container's rootfs), the work dir its work link points to, and the bundle dir. It refuses a dir that is
// not a bundle (<...>/io.containerd.runtime.v2.task/<ns>/<id>), so a wrong cwd read from /proc can never
// make it remove something else. It returns what it removed.
func RemoveBundle(bundle string) ([]string, error) {
	if filepath.Base(filepath.Dir(filepath.Dir(bundle))) != taskDir {
		return nil, fmt.Errorf("%s is not a containerd task bundle (<state>/%s/<namespace>/<id>); left alone", bundle, taskDir)
	}
	var done []string
	var errs []error
	if b, err := os.ReadFile(filepath.Join(bundle, "address")); err == nil {
		sock := strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
		if strings.HasPrefix(sock, "/run/containerd/s/") {
			if err := os.Remove(sock); err == nil {
				done = append(done, "shim socket "+sock)
			} else if !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("remove shim socket %s: %w", sock, err))
			}
		}
	}
	for _, m := range MountsUnder(bundle) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
			continue
		}
		done = append(done, "mount "+m)
	}
	if work, err := os.Readlink(filepath.Join(bundle, "work")); err == nil && filepath.Base(filepath.Dir(filepath.Dir(work))) == taskDir {
		if err := os.RemoveAll(work); err != nil {
			errs = append(errs, fmt.Errorf("remove task work dir %s: %w", work, err))
		} else {
			done = append(done, "task work dir "+work)
		}
	}
	if err := os.RemoveAll(bundle); err != nil {
		errs = append(errs, fmt.Errorf("remove bundle %s: %w", bundle, err))
	} else {
		done = append(done, "bundle "+bundle)
	}
	return done, errors.Join(errs...)
}

// MountsUnder lists the mount points at or below dir, deepest first (the order to unmount them in).
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// CgroupProcs lists the processes still in namespace ns's cgroups: runc puts every container of the
// namespace below /<ns>/ (at /<ns>/a-<account UID>/p-<pod UID>/<id> since issue 11, containerd's default
// /<ns>/<id> before), in each v1 hierarchy and in the v2 tree; the whole tree below /<ns> is read. A process there after its shim is gone is a container nothing supervises any more.
func CgroupProcs(ns string) []int {
	seen := map[int]bool{}
	for _, root := range cgroupRoots(ns) {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

func cgroupRoots(ns string) []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
	if fi, err := os.Stat("/sys/fs/cgroup/" + ns); err == nil && fi.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+ns)
	}
	return roots
}

// RemoveCgroups kills what is left in namespace ns's cgroups and removes them, deepest first. The lab's
// containers are gone by the time reset calls this; a process still here escaped its shim.
func RemoveCgroups(ns string) ([]string, error) {
	var done []string
	var errs []error
	for _, p := range CgroupProcs(ns) {
		if err := syscall.Kill(p, syscall.SIGKILL); err == nil {
			done = append(done, fmt.Sprintf("process %d (in cgroup /%s)", p, ns))
		}
	}
	for _, p := range CgroupProcs(ns) {
		deadline := time.Now().Add(5 * time.Second)
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, root := range cgroupRoots(ns) {
		// The whole tree, /<ns>/a-<account>/p-<pod>/<container> included (issue 11), children first.
		for _, d := range cgroupTree(root) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				continue
			}
			if d != root {
				done = append(done, "cgroup "+d)
			}
		}
	}
	return done, errors.Join(errs...)
}

// Running returns the pid of the lab's private containerd (the run dir's pid file, or a /proc scan for a
// containerd started with the run dir's config), 0 if none runs.
func Running(runDir string) int {
	runDir, err := filepath.Abs(runDir)
	if err != nil {
		return 0
	}
	return findProcess(runDir)
}
