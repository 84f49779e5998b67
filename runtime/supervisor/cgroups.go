package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// RemoveCgroupParents removes the cgroup directories of namespace ns that
// runc leaves behind (runc removes a container's own cgroup, not its
// parents): /<ns> and everything below it, which since issue 11 is
// /<ns>/a-<account>/p-<pod>/ levels, in every hierarchy. Only empty
// cgroups can go; one with a process means a container still exists, and
// is reported.
func RemoveCgroupParents(ns string) error {
	var errs []error
	for _, root := range cgroupRoots(ns) {
		errs = append(errs, RemoveCgroupTree(root))
	}
	return errors.Join(errs...)
}

// RemoveCgroupTree removes the cgroup dir and every cgroup below it,
// deepest first: rmdir of a cgroup with a child cgroup fails (EBUSY), and
// a cgroup dir holds only control files, which rmdir takes with it. A dir
// already gone is fine.
func RemoveCgroupTree(dir string) error {
	dirs := cgroupTree(dir)
	var errs []error
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w%s", d, err, busyHint(d, err)))
		}
	}
	return errors.Join(errs...)
}

// cgroupTree lists dir and the dirs below it, children before parents.
func cgroupTree(dir string) []string {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// A child's path is its parent's plus more: deepest first by depth.
	sort.SliceStable(dirs, func(i, j int) bool {
		return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/")
	})
	return dirs
}

// busyHint says which processes keep a cgroup busy.
func busyHint(d string, err error) string {
	if !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.ENOTEMPTY) {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	if procs := strings.Fields(string(b)); len(procs) > 0 {
		return fmt.Sprintf(" (processes %s still in it: a container is still running; stop it first, or pi reset)", strings.Join(procs, ","))
	}
	return ""
}
