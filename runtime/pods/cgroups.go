package pods

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/pilab/pi/runtime/supervisor"
	"golang.org/x/sys/unix"
)

// Issue 11, "a fair share": every container of an account runs under the
// account's own cgroup, which caps the CPU and memory of all its pods
// together, and under its pod's cgroup, which caps the pod's processes:
//
//	/<containerd namespace>/a-<account UID>/p-<pod UID>/<container id>
//
// Only UIDs name the levels: account and pod names could be joined into
// the same path by two different pairs ("x"+"y-z" and "x-y"+"z"), UIDs are
// unique by construction and safe as directory names (validUID).
//
// runc creates the levels it is missing in every hierarchy when it creates
// the container's own cgroup, but it writes limits only on the container's.
// The account's and pod's limits are written here, before the container is
// created, so the first process of an account's first pod already runs
// under them.

// PodPidsLimit is the pids.max of a pod's cgroup: all the pod's containers
// (and their execs) together. Each container's own PidsLimit stays, so a
// fork bomb in one container stops there and its siblings keep a little
// room; the pod level keeps a pod of many containers from multiplying it.
const PodPidsLimit = 1024

// cfsPeriod is the CFS period (µs) of the account's CPU ceiling, the
// kernel's default; a quota of n CPUs is n periods' worth of runtime.
const cfsPeriod = 100000

// AccountCgroup is the account a pod belongs to and the ceilings of the
// account's cgroup. The lab's controller always sets it; a zero UID (only
// runtime tests that are not about accounts) leaves the container at
// containerd's default cgroup /<ns>/<container id>.
type AccountCgroup struct {
	UID string // the Account object's metadata.uid
	// CPUMilli is the account's CPU ceiling in millicores (1000 = one CPU)
	// for all its pods together; 0 means the machine's CPUs (no ceiling
	// beyond the machine).
	CPUMilli int64
	// MemoryBytes is the account's memory ceiling for all its pods
	// together; 0 is refused (the API always fills a default).
	MemoryBytes int64
}

// cpuMilli is the account's CPU ceiling with the default filled in: the
// machine's cpus.
func (a AccountCgroup) cpuMilli(cpus int) int64 {
	if a.CPUMilli > 0 {
		return a.CPUMilli
	}
	return int64(cpus) * 1000
}

// cgroupMode is which cgroup interface the machine has.
type cgroupMode int

const (
	cgroupV1 cgroupMode = iota + 1 // one hierarchy per controller, /sys/fs/cgroup/<controller>/...
	cgroupV2                       // the unified hierarchy at /sys/fs/cgroup
)

// cgroupRoot is where cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// detectCgroupMode tells v2 (cgroup2 mounted at /sys/fs/cgroup) from v1 and
// hybrid (a tmpfs with a mount per v1 controller, and maybe an empty v2 at
// unified/ that holds no controller, so limits go to v1).
func detectCgroupMode() (cgroupMode, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w; is cgroupfs mounted?", cgroupRoot, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return cgroupV2, nil
	}
	for _, c := range []string{"cpu", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, c, "cgroup.procs")); err != nil {
			return 0, fmt.Errorf("cgroup v1 controller %s is not mounted at %s/%s (%v); mount it, or boot with cgroup v2", c, cgroupRoot, c, err)
		}
	}
	return cgroupV1, nil
}

// cgroupWrite is one control file to write, relative to cgroupRoot.
type cgroupWrite struct {
	File  string
	Value string
	// IfExists: the file is there only with some kernel options (swap
	// accounting); without it there is nothing to limit.
	IfExists bool
	// Enable: a v2 cgroup.subtree_control; Value's controllers are
	// written only if not already enabled (writing to an enabled one
	// that has processes, e.g. the root in a container, is refused).
	Enable bool
}

// cgroupPlan is what makes a pod's levels: directories to create (parents
// first), then files to write in order.
type cgroupPlan struct {
	Dirs   []string
	Writes []cgroupWrite
}

// accountCgroup and podCgroup are the levels' paths below a hierarchy.
func accountCgroup(ns, accountUID string) string { return filepath.Join(ns, "a-"+accountUID) }
func podCgroup(ns, accountUID, podUID string) string {
	return filepath.Join(accountCgroup(ns, accountUID), "p-"+podUID)
}

// CgroupsPath is the cgroupsPath of a container in the OCI spec: runc
// (cgroupfs driver) creates it below every hierarchy.
func CgroupsPath(ns, accountUID, podUID, containerID string) string {
	return "/" + filepath.Join(podCgroup(ns, accountUID, podUID), containerID)
}

// planCgroups is the pure part: what to create and write for a pod of
// account a, with cpus the machine's CPU count (the default ceiling).
func planCgroups(mode cgroupMode, ns string, a AccountCgroup, podUID string, cpus int) (cgroupPlan, error) {
	if a.MemoryBytes <= 0 {
		return cgroupPlan{}, fmt.Errorf("account %s: memory ceiling %d bytes; the account needs spec.memoryQuota (the API defaults it)", a.UID, a.MemoryBytes)
	}
	cpu := a.cpuMilli(cpus)
	quota := strconv.FormatInt(cpu*cfsPeriod/1000, 10)
	mem := strconv.FormatInt(a.MemoryBytes, 10)
	acct, pod := accountCgroup(ns, a.UID), podCgroup(ns, a.UID, podUID)
	var p cgroupPlan
	switch mode {
	case cgroupV1:
		for _, c := range []string{"cpu", "memory", "pids"} {
			p.Dirs = append(p.Dirs, filepath.Join(c, pod))
		}
		p.Writes = []cgroupWrite{
			{File: filepath.Join("memory", acct, "memory.limit_in_bytes"), Value: mem},
			// memory+swap no higher than memory: the ceiling is not
			// a ceiling if the hog can move to swap.
			{File: filepath.Join("memory", acct, "memory.memsw.limit_in_bytes"), Value: mem, IfExists: true},
			{File: filepath.Join("cpu", acct, "cpu.cfs_period_us"), Value: strconv.Itoa(cfsPeriod)},
			{File: filepath.Join("cpu", acct, "cpu.cfs_quota_us"), Value: quota},
			{File: filepath.Join("pids", pod, "pids.max"), Value: strconv.Itoa(PodPidsLimit)},
		}
	case cgroupV2:
		p.Dirs = []string{pod}
		// Each parent hands cpu, memory and pids down to the next level,
		// or the level below has no such files to write.
		for _, d := range []string{".", ns, acct, pod} {
			p.Writes = append(p.Writes, cgroupWrite{File: filepath.Join(d, "cgroup.subtree_control"), Value: "+cpu +memory +pids", Enable: true})
		}
		p.Writes = append(p.Writes,
			cgroupWrite{File: filepath.Join(acct, "memory.max"), Value: mem},
			cgroupWrite{File: filepath.Join(acct, "memory.swap.max"), Value: "0", IfExists: true},
			cgroupWrite{File: filepath.Join(acct, "cpu.max"), Value: quota + " " + strconv.Itoa(cfsPeriod)},
			cgroupWrite{File: filepath.Join(pod, "pids.max"), Value: strconv.Itoa(PodPidsLimit)},
		)
	default:
		return cgroupPlan{}, fmt.Errorf("unknown cgroup mode %d", mode)
	}
	return p, nil
}

// apply carries a plan out below root. Writing the same values again is
// harmless, so every container start applies its pod's plan.
func (p cgroupPlan) apply(root string) error {
	for _, d := range p.Dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", filepath.Join(root, d), err)
		}
	}
	for _, w := range p.Writes {
		f := filepath.Join(root, w.File)
		value := w.Value
		if w.Enable {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read %s: %w", f, err)
			}
			value = missingControllers(string(b), w.Value)
			if value == "" {
				continue
			}
		}
		if w.IfExists {
			if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
				continue
			}
		}
		if err := os.WriteFile(f, []byte(value), 0); err != nil {
			return fmt.Errorf("write %q to %s: %w", value, f, err)
		}
	}
	return nil
}

// missingControllers is the part of want ("+cpu +memory") that enabled
// (a cgroup.subtree_control's content, "cpu io") lacks.
func missingControllers(enabled, want string) string {
	have := map[string]bool{}
	for _, c := range strings.Fields(enabled) {
		have[c] = true
	}
	var out []string
	for _, c := range strings.Fields(want) {
		if !have[strings.TrimPrefix(c, "+")] {
			out = append(out, c)
		}
	}
	return strings.Join(out, " ")
}

// ensurePodCgroups creates the account's and pod's cgroups with their
// limits. Before a container of the pod is created.
func (r *Runtime) ensurePodCgroups(a AccountCgroup, podUID string) error {
	if !validUID.MatchString(a.UID) || strings.Contains(a.UID, "..") {
		return fmt.Errorf("account UID %q is not usable as a cgroup name; pass the Account object's metadata.uid", a.UID)
	}
	mode, err := detectCgroupMode()
	if err != nil {
		return err
	}
	p, err := planCgroups(mode, r.ns, a, podUID, runtime.NumCPU())
	if err != nil {
		return err
	}
	if err := p.apply(cgroupRoot); err != nil {
		return fmt.Errorf("account %s pod %s cgroups: %w", a.UID, podUID, err)
	}
	return nil
}

// levelDirs are a level's directories in every hierarchy (v1: one per
// controller, and the empty v2 of a hybrid; v2: the one tree), whatever
// the account when account is "*".
func (r *Runtime) levelDirs(level string) []string {
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", r.ns, level))
	v2, _ := filepath.Glob(filepath.Join(cgroupRoot, r.ns, level))
	return append(dirs, v2...)
}

// removePodCgroups removes a pod's level in every hierarchy, with whatever
// runc left below it. The pod's containers must be gone (RemovePod): a
// cgroup with a process cannot be removed.
func (r *Runtime) removePodCgroups(podUID string) error {
	if !validUID.MatchString(podUID) || strings.Contains(podUID, "..") {
		return fmt.Errorf("pod UID %q is not usable as a cgroup name", podUID)
	}
	var errs []error
	for _, d := range r.levelDirs(filepath.Join("a-*", "p-"+podUID)) {
		errs = append(errs, supervisor.RemoveCgroupTree(d))
	}
	return errors.Join(errs...)
}

// RemoveAccountCgroups removes an account's cgroups in every hierarchy.
// Its pods must be gone first; a pod still running keeps its account's
// cgroup busy and this fails saying so.
func (r *Runtime) RemoveAccountCgroups(accountUID string) error {
	if !validUID.MatchString(accountUID) || strings.Contains(accountUID, "..") {
		return fmt.Errorf("account UID %q is not usable as a cgroup name", accountUID)
	}
	var errs []error
	for _, d := range r.levelDirs("a-" + accountUID) {
		if err := supervisor.RemoveCgroupTree(d); err != nil {
			errs = append(errs, fmt.Errorf("account %s: %w (are its pods all deleted?)", accountUID, err))
		}
	}
	return errors.Join(errs...)
}
