package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/google/nftables"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/runtime/pods"
	"github.com/pilab/pi/runtime/supervisor"
)

// ResetResult is what Reset did and what it found afterwards.
type ResetResult struct {
	Removed []string // one entry per thing removed ("netns t1a2b3-r1", "shim pid 123 (...)")
	Notes   []string // what could not be done one way but was done another (containerd gone: shims killed by pid)
	Left    []string // what the final check still found; empty means nothing of the lab is left
}

// RunningError refuses to reset or start a lab whose daemon is alive.
type RunningError struct {
	Lab      string
	Pid      int
	Evidence string
}

func (e *RunningError) Error() string {
	who := fmt.Sprintf("daemon pid %d", e.Pid)
	if e.Pid < 0 {
		who = "daemon pid unknown"
	}
	return fmt.Sprintf("lab %q is running (%s: %s); stop it with `pi down --lab %s` first", e.Lab, who, e.Evidence, e.Lab)
}

// Reset removes everything lab t created: its containers (and with them their snapshots), its images when
// it used a shared containerd, its containerd shims and their bundles even when containerd is gone, its
// network namespaces, links, routes and nft tables, its cgroups, mounts and directories. The lab's daemon
// must be stopped: Reset refuses while the lab's own records (state.db's lock, the pid file) show it alive,
// and holds state.db's lock while it works so none starts. It then checks that nothing is left: what is,
// is in ResetResult.Left, and Reset returns an error naming it.
func Reset(ctx context.Context, t *Target) (*ResetResult, error) {
	cfg := t.Config
	res := &ResetResult{}
	if pid, how := DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir); pid != 0 {
		return res, &RunningError{Lab: cfg.Lab, Pid: pid, Evidence: how}
	}
	unlock, holder, err := LockState(cfg.Root)
	if err != nil {
		return res, err
	}
	if holder != 0 {
		return res, &RunningError{Lab: cfg.Lab, Pid: holder, Evidence: "it holds the lock on " + StateDB(cfg.Root)}
	}
	defer unlock()

	var errs []string
	private := cfg.ContainerdAddress == ""
	if !private || dirExists(cfg.Root) || dirExists(cfg.RunDir) {
		r, err := resetContainers(ctx, cfg)
		res.Removed = append(res.Removed, r...)
		if err != nil {
			if private {
				// The private containerd's records go with the lab's dirs; what it ran is found by pid below.
				res.Notes = append(res.Notes, fmt.Sprintf("containerd: %v; its shims are looked for by process instead", err))
			} else {
				errs = append(errs, err.Error())
			}
		}
	}
	if private {
		if err := supervisor.Shutdown(cfg.RunDir); err != nil {
			errs = append(errs, fmt.Sprintf("stop private containerd: %v", err))
		}
	}
	r, err := removeShims(cfg)
	res.Removed = append(res.Removed, r...)
	if err != nil {
		errs = append(errs, err.Error())
	}

	nm, err := network.New(network.Options{Lab: cfg.Lab, HostNetns: cfg.HostNetns})
	if err != nil {
		errs = append(errs, fmt.Sprintf("network: %v", err))
	} else {
		defer nm.Close()
		r, err := nm.Reset()
		res.Removed = append(res.Removed, r...)
		if err != nil {
			errs = append(errs, fmt.Sprintf("network: %v", err))
		}
	}
	if names, err := netns.ListNamed(cfg.Lab + "-"); err == nil {
		for _, n := range names {
			if n == cfg.HostNetns {
				continue
			}
			if err := netns.DeleteNamed(n); err != nil {
				errs = append(errs, fmt.Sprintf("netns %s: %v", n, err))
				continue
			}
			res.Removed = append(res.Removed, "netns "+n)
		}
	}
	for _, dir := range []string{cfg.RunDir, cfg.Root} {
		if !dirExists(dir) {
			continue
		}
		for _, m := range supervisor.MountsUnder(dir) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err == nil {
				res.Removed = append(res.Removed, "mount "+m)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", dir, err))
			continue
		}
		res.Removed = append(res.Removed, "directory "+dir)
		// The machine-wide parents of the default dirs go once no lab uses them; Remove never takes a non-empty dir.
		if p := filepath.Dir(dir); p == "/run/pilab" || p == "/var/lib/pilab" {
			os.Remove(p)
		}
	}
	// A socket outside the run dir: Locate made sure it is this lab's (recorded, or the one given and
	// not another lab's).
	if cfg.Socket != "" && !strings.HasPrefix(cfg.Socket, cfg.RunDir+"/") {
		if os.Remove(cfg.Socket) == nil {
			res.Removed = append(res.Removed, "socket "+cfg.Socket)
		}
	}

	res.Left = Leftovers(cfg)
	if len(res.Left) > 0 {
		errs = append(errs, fmt.Sprintf("%d things of it are still there: %s", len(res.Left), strings.Join(res.Left, "; ")))
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("reset lab %q: %s", cfg.Lab, strings.Join(errs, "; "))
	}
	return res, nil
}

// removeShims kills the lab's shims and their containers and removes their bundles. Shims are found from
// /proc by the containerd address and namespace on their command line, so this works with containerd gone
// and for tasks containerd no longer knows (a start killed half way). Bundles with no shim left are removed
// too (the private containerd's, which live in the lab's run dir).
func removeShims(cfg Config) ([]string, error) {
	var done []string
	var errs []error
	shims, err := supervisor.FindShims(cfg.Lab, containerdAddress(cfg))
	if err != nil {
		return nil, err
	}
	for _, s := range shims {
		if err := supervisor.KillShim(s); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, "killed "+s.String())
		if s.Bundle != "" {
			d, err := supervisor.RemoveBundle(s.Bundle)
			done = append(done, d...)
			errs = append(errs, err)
		}
	}
	if cfg.ContainerdAddress == "" {
		bundles, _ := filepath.Glob(supervisor.BundleDir(supervisor.StateDir(cfg.RunDir), cfg.Lab, "*"))
		for _, b := range bundles {
			d, err := supervisor.RemoveBundle(b)
			done = append(done, d...)
			errs = append(errs, err)
		}
	}
	d, err := supervisor.RemoveCgroups(cfg.Lab)
	done = append(done, d...)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return done, fmt.Errorf("shims: %w", err)
	}
	return done, nil
}

func containerdAddress(cfg Config) string {
	if cfg.ContainerdAddress != "" {
		return strings.TrimPrefix(cfg.ContainerdAddress, "unix://")
	}
	return supervisor.SocketPath(abs(cfg.RunDir))
}

// Leftovers looks for anything of lab cfg on the machine, as reset's last step: its daemon, its private
// containerd, its shims and the processes in its cgroups, its netns, its transit links and nft tables in
// the host netns, mounts under its dirs, the dirs and the socket. One entry per thing found.
func Leftovers(cfg Config) []string {
	var left []string
	if pid, how := DaemonPid(cfg.Lab, cfg.Root, cfg.RunDir); pid != 0 {
		left = append(left, fmt.Sprintf("daemon pid %d (%s)", pid, how))
	}
	if cfg.ContainerdAddress == "" {
		if pid := supervisor.Running(cfg.RunDir); pid != 0 {
			left = append(left, fmt.Sprintf("containerd pid %d", pid))
		}
	}
	shims, err := supervisor.FindShims(cfg.Lab, containerdAddress(cfg))
	if err != nil {
		left = append(left, "shims: cannot tell: "+err.Error())
	}
	for _, s := range shims {
		left = append(left, s.String())
	}
	for _, p := range supervisor.CgroupProcs(cfg.Lab) {
		left = append(left, fmt.Sprintf("process %d in cgroup /%s", p, cfg.Lab))
	}
	names, err := netns.ListNamed(cfg.Lab + "-")
	if err != nil {
		left = append(left, "netns: cannot tell: "+err.Error())
	}
	for _, n := range names {
		if n != cfg.HostNetns {
			left = append(left, "netns "+n)
		}
	}
	left = append(left, hostLeftovers(cfg)...)
	for _, dir := range []string{cfg.RunDir, cfg.Root} {
		for _, m := range supervisor.MountsUnder(dir) {
			left = append(left, "mount "+m)
		}
		if dirExists(dir) {
			left = append(left, "directory "+dir)
		}
	}
	if _, err := os.Lstat(cfg.Socket); err == nil {
		left = append(left, "socket "+cfg.Socket)
	}
	return left
}

// hostLeftovers lists the lab's links and nft tables in its host netns: transit links are <lab>w<N>, the
// lab's tables <lab>-<what>.
func hostLeftovers(cfg Config) []string {
	where := "host"
	if cfg.HostNetns != "" {
		where = "netns " + cfg.HostNetns
	}
	var left []string
	if cfg.HostNetns != "" {
		if _, err := os.Stat(netns.Path(cfg.HostNetns)); os.IsNotExist(err) {
			return nil // the host netns is gone, and all that was in it
		}
	}
	h, err := netns.HostHandle(cfg.HostNetns)
	if err != nil {
		return []string{fmt.Sprintf("links in %s: cannot tell: %v", where, err)}
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		left = append(left, fmt.Sprintf("links in %s: cannot tell: %v", where, err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if rest, ok := strings.CutPrefix(name, cfg.Lab+"w"); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			left = append(left, fmt.Sprintf("link %s in %s", name, where))
		}
	}
	var opts []nftables.ConnOption
	if cfg.HostNetns != "" {
		f, err := netns.Open(netns.Path(cfg.HostNetns))
		if err != nil {
			return append(left, fmt.Sprintf("nft tables in %s: cannot tell: %v", where, err))
		}
		defer f.Close()
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	nc, err := nftables.New(opts...)
	if err == nil {
		var tables []*nftables.Table
		if tables, err = nc.ListTables(); err == nil {
			for _, t := range tables {
				if strings.HasPrefix(t.Name, cfg.Lab+"-") {
					left = append(left, fmt.Sprintf("nft table %s in %s", t.Name, where))
				}
			}
		}
	}
	if err != nil {
		left = append(left, fmt.Sprintf("nft tables in %s: cannot tell: %v", where, err))
	}
	return left
}

func resetContainers(ctx context.Context, cfg Config) ([]string, error) {
	var removed []string
	logf, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer logf.Close()
	if cfg.ContainerdAddress == "" {
		if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
			return nil, err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sup, err := supervisor.Start(sctx, supervisor.Options{Lab: cfg.Lab, Root: cfg.Root, RunDir: cfg.RunDir, Address: cfg.ContainerdAddress, Log: logf})
	if err != nil {
		return nil, fmt.Errorf("reach containerd to remove the lab's containers: %w", err)
	}
	defer sup.Close()
	cl := sup.Client()
	// Every call below has a deadline: a shim that hangs (a task half created when the daemon was killed)
	// must not hang reset, which goes on to kill shims by pid.
	ctx, cancel = context.WithTimeout(namespaces.WithNamespace(ctx, cfg.Lab), 2*time.Minute)
	defer cancel()
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	ctrs, err := cl.Containers(lctx)
	lcancel()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	// The pods runtime knows every piece a container leaves: task, snapshot, cgroups, runc state.
	if err := pods.New(cl, cfg.Lab, nil, cfg.RunDir).RemoveAll(ctx); err != nil {
		return nil, fmt.Errorf("remove the lab's containers: %w", err)
	}
	lctx, lcancel = context.WithTimeout(ctx, 10*time.Second)
	after, err := cl.Containers(lctx)
	lcancel()
	if err != nil {
		return nil, fmt.Errorf("list containers after removing them: %w", err)
	}
	still := map[string]bool{}
	for _, c := range after {
		still[c.ID()] = true
	}
	for _, c := range ctrs {
		if !still[c.ID()] {
			removed = append(removed, "container "+c.ID())
		}
	}
	if cfg.ContainerdAddress != "" {
		// On a shared containerd the lab's images live in its namespace; take them and the namespace.
		is := cl.ImageService()
		imgs, _ := is.List(ctx)
		for _, im := range imgs {
			if err := is.Delete(ctx, im.Name); err == nil {
				removed = append(removed, "image "+im.Name)
			}
		}
		if err := cl.NamespaceService().Delete(ctx, cfg.Lab); err == nil {
			removed = append(removed, "containerd namespace "+cfg.Lab)
		}
	}
	return removed, nil
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
