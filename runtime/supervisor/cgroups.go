package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// RemoveCgroupParents removes the per-namespace cgroup directories runc
// leaves behind (runc removes a container's own cgroup, not its parents).
// Only empty ones can go; a non-empty one means a container still exists.
func RemoveCgroupParents(ns string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
	if fi, err := os.Stat("/sys/fs/cgroup/" + ns); err == nil && fi.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+ns) // cgroup v2
	}
	var errs []error
	for _, d := range roots {
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
