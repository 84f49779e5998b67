package supervisor_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/supervisor"
)

// Issue 11's layout nests /<ns>/a-<account>/p-<pod>/<container>: reset's
// cleanup removes the whole tree, deepest first, in every hierarchy; a
// cgroup with a process stays and the error names it; CgroupProcs finds
// that process however deep it is.
func TestRemoveCgroupParentsNested(t *testing.T) {
	ns := netnstest.Lab()
	var hierarchies []string
	for _, h := range []string{"pids", "memory", "cpu", "freezer"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, "cgroup.procs")); err == nil {
			hierarchies = append(hierarchies, filepath.Join("/sys/fs/cgroup", h, ns))
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		hierarchies = append(hierarchies, filepath.Join("/sys/fs/cgroup", ns)) // cgroup v2
	}
	if len(hierarchies) == 0 {
		t.Skip("no cgroup v1 hierarchy or v2 tree at /sys/fs/cgroup")
	}
	t.Cleanup(func() {
		for _, h := range hierarchies {
			supervisor.RemoveCgroupTree(h)
		}
	})
	leaves := []string{"a-A1/p-P1/c1", "a-A1/p-P1/c2", "a-A1/p-P2/c1", "a-A2/p-P3/c1"}
	for _, h := range hierarchies {
		for _, l := range leaves {
			if err := os.MkdirAll(filepath.Join(h, l), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A process in a deep leaf of the first hierarchy keeps that branch.
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleep.Process.Kill()
	busy := filepath.Join(hierarchies[0], "a-A2/p-P3/c1")
	if err := os.WriteFile(filepath.Join(busy, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	if procs := supervisor.CgroupProcs(ns); len(procs) != 1 || procs[0] != sleep.Process.Pid {
		t.Errorf("CgroupProcs = %v, want [%d] (the process three levels down)", procs, sleep.Process.Pid)
	}
	err := supervisor.RemoveCgroupParents(ns)
	if err == nil || !strings.Contains(err.Error(), busy) || !strings.Contains(err.Error(), strconv.Itoa(sleep.Process.Pid)) {
		t.Errorf("RemoveCgroupParents with a process in %s: err = %v, want one naming that cgroup and process", busy, err)
	}
	if _, err := os.Stat(filepath.Join(hierarchies[0], "a-A1")); !os.IsNotExist(err) {
		t.Errorf("the idle branch a-A1 of %s stays: %v", hierarchies[0], err)
	}

	// Move it out (to the hierarchy's root) and everything goes.
	root := filepath.Dir(hierarchies[0])
	if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	if err := supervisor.RemoveCgroupParents(ns); err != nil {
		t.Fatal(err)
	}
	for _, h := range hierarchies {
		if _, err := os.Stat(h); !os.IsNotExist(err) {
			t.Errorf("%s left after RemoveCgroupParents (%v)", h, err)
		}
	}
}
