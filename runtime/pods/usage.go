package pods

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Usage is what an account's pods use together, read from its cgroup (the level the ceilings are on).
type Usage struct {
	// CPUNanos is the CPU time used since the account's cgroup was made, in nanoseconds (a counter: a rate
	// is two readings apart).
	CPUNanos uint64
	// MemoryBytes is the working set, as kubectl top counts it: memory in use less the page cache the
	// kernel can drop at once (inactive files).
	MemoryBytes uint64
}

// AccountUsage reads the usage of an account's pods. An account whose pods never ran has no cgroup yet:
// its usage is zero.
func (r *Runtime) AccountUsage(accountUID string) (Usage, error) {
	if !validUID.MatchString(accountUID) || strings.Contains(accountUID, "..") {
		return Usage{}, fmt.Errorf("account UID %q is not usable as a cgroup name", accountUID)
	}
	mode, err := detectCgroupMode()
	if err != nil {
		return Usage{}, err
	}
	return readUsage(cgroupRoot, mode, accountCgroup(r.ns, accountUID))
}

// readUsage reads level's usage below root, as the cgroup interface of mode lays it out.
func readUsage(root string, mode cgroupMode, level string) (Usage, error) {
	var u Usage
	var err error
	var usage, inactive uint64
	switch mode {
	case cgroupV1:
		if u.CPUNanos, err = readUint(filepath.Join(root, "cpuacct", level, "cpuacct.usage")); err != nil {
			return Usage{}, err
		}
		if usage, err = readUint(filepath.Join(root, "memory", level, "memory.usage_in_bytes")); err != nil {
			return Usage{}, err
		}
		inactive, err = statField(filepath.Join(root, "memory", level, "memory.stat"), "total_inactive_file")
	case cgroupV2:
		var usec uint64
		if usec, err = statField(filepath.Join(root, level, "cpu.stat"), "usage_usec"); err != nil {
			return Usage{}, err
		}
		u.CPUNanos = usec * 1000
		if usage, err = readUint(filepath.Join(root, level, "memory.current")); err != nil {
			return Usage{}, err
		}
		inactive, err = statField(filepath.Join(root, level, "memory.stat"), "inactive_file")
	}
	if err != nil {
		return Usage{}, err
	}
	if usage > inactive {
		u.MemoryBytes = usage - inactive
	}
	return u, nil
}

// readUint reads a control file holding one number; a file that is not there (no cgroup yet) is 0.
func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", path, bytes.TrimSpace(b))
	}
	return n, nil
}

// statField reads one "key value" line of a stat file (memory.stat, cpu.stat); a missing file is 0.
func statField(path, key string) (uint64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %q is not a number", path, key, v)
			}
			return n, nil
		}
	}
	return 0, sc.Err()
}
