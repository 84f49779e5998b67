package pods

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/pilab/pi/runtime/supervisor"
)

// A start cut short (the pi daemon or containerd killed while containerd
// was in tasks.Create, or a shim that hung and was given up on) can leave
// the task's shim bundle behind: containerd's state dir keeps
// io.containerd.runtime.v2.task/<namespace>/<container id>, sometimes with
// a shim still running, while containerd itself no longer knows the task.
// Every later create of that container then fails with "failed to start
// shim: mkdir <bundle>: file exists" (seen 276 times in 70 s, issue 9
// defect 5), because containerd's NewBundle insists on making the dir.
// containerd only cleans such bundles when it starts and finds them, and
// moby has the same open bug (moby/moby#50040); so the runtime cleans up
// the one container it is starting, and only when containerd says it has
// no task for it.

// runtimeV2Dir is the dir under containerd's state dir where the v2 task
// runtime keeps one bundle dir per namespace and container.
const runtimeV2Dir = "io.containerd.runtime.v2.task"

// shimKillWait bounds the wait for a leftover shim to die after SIGKILL.
const shimKillWait = 5 * time.Second

// runcDeleteTimeout bounds `runc delete --force` of a leftover runc
// container: a kill and a cgroup removal.
const runcDeleteTimeout = 10 * time.Second

// bundleExists finds the path in containerd's "mkdir PATH: file exists".
var bundleExists = regexp.MustCompile(`mkdir (/[^\s:]+): file exists`)

// isLeftoverTask reports whether a task create failed because of an
// earlier start's task or shim bundle.
func isLeftoverTask(err error) bool {
	return errdefs.IsAlreadyExists(err) || bundleExists.MatchString(err.Error())
}

// recoverTask cleans up what an earlier start of cont left so a task can be
// created again: the task if containerd still has one (killed and deleted,
// whatever its state), then, once containerd confirms there is no task,
// the stale bundle named in createErr with its shim and runc state.
func (r *Runtime) recoverTask(ctx context.Context, cont containerd.Container, createErr error) error {
	id := cont.ID()
	if err := r.deleteTask(ctx, cont); err != nil {
		return err
	}
	if p, err := r.taskProcess(ctx, id); err != nil {
		return err
	} else if p != nil {
		return fmt.Errorf("containerd still has a task for container %s (%s) after deleting it", id, p.Status)
	}
	m := bundleExists.FindStringSubmatch(createErr.Error())
	if m == nil {
		return nil // it was the task, now deleted
	}
	bundle := m[1]
	if err := r.checkBundlePath(bundle, id); err != nil {
		return err
	}
	return r.removeStaleBundle(ctx, bundle, id)
}

// checkBundlePath makes sure path is this namespace's bundle of container
// id and nothing else, before anything under it is killed or removed: the
// path comes from an error message.
func (r *Runtime) checkBundlePath(path, id string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path ||
		filepath.Base(path) != id ||
		filepath.Base(filepath.Dir(path)) != r.ns ||
		filepath.Base(filepath.Dir(filepath.Dir(path))) != runtimeV2Dir {
		return fmt.Errorf("containerd reported %s as existing, which is not the shim bundle of container %s in namespace %s (want .../%s/%s/%s); not touching it", path, id, r.ns, runtimeV2Dir, r.ns, id)
	}
	return nil
}

// removeStaleBundle removes a bundle dir containerd no longer knows: kills
// the container's shim if one still runs,
// force-deletes the runc container the shim may have created, unmounts the
// rootfs and removes the dir.
func (r *Runtime) removeStaleBundle(ctx context.Context, bundle, id string) error {
	if err := r.killLeftoverShim(id); err != nil {
		return err
	}
	if err := r.deleteRuncContainer(ctx, id); err != nil {
		return err
	}
	if err := unmountUnder(bundle); err != nil {
		return fmt.Errorf("stale shim bundle of container %s: %w", id, err)
	}
	if err := os.RemoveAll(bundle); err != nil {
		return fmt.Errorf("remove stale shim bundle %s of container %s: %w", bundle, id, err)
	}
	return nil
}

// killLeftoverShim SIGKILLs the shims still running for container id of
// this namespace. The bundle does not record the shim's pid (the runc v2
// shim writes none), so they are found as containerd starts them:
// "containerd-shim-... -namespace NS -id ID".
func (r *Runtime) killLeftoverShim(id string) error {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("find the leftover shim of container %s: %w", id, err)
	}
	var killed []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || !r.isShimOf(pid, id) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill leftover shim %d of container %s: %w", pid, id, err)
		}
		killed = append(killed, pid)
	}
	deadline := time.Now().Add(shimKillWait)
	for _, pid := range killed {
		for r.isShimOf(pid, id) {
			if time.Now().After(deadline) {
				return fmt.Errorf("leftover shim %d of container %s still there %s after SIGKILL", pid, id, shimKillWait)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// isShimOf reports whether pid is a live (not zombie) containerd shim of
// this namespace's container id.
func (r *Runtime) isShimOf(pid int, id string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z")) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	flag := func(name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	return strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") &&
		flag("-namespace") == r.ns && flag("-id") == id
}

// deleteRuncContainer force-deletes (kills) the runc container id of this
// namespace if runc still has state for it: a shim killed after runc
// create leaves the container's init process and runc's state, and the
// next runc create of the same id would fail on it.
func (r *Runtime) deleteRuncContainer(ctx context.Context, id string) error {
	root := filepath.Join(r.runcRoot(), r.ns)
	if _, err := os.Stat(filepath.Join(root, id)); os.IsNotExist(err) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, runcDeleteTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "runc", "--root", root, "delete", "--force", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc delete --force %s (root %s) of a leftover start: %v: %s", id, root, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// RemoveOrphanShims stops every shim of the namespace whose container containerd no longer has, with
// the container's processes, runc state and bundle: a daemon or containerd killed while a pod was being
// deleted can leave a shim containerd lost, and nothing else would ever stop it (it runs in its own
// process group). A container record is made before its shim starts, so a shim without one is never a
// start in progress. It returns what it removed.
func (r *Runtime) RemoveOrphanShims(ctx context.Context) ([]string, error) {
	cs, err := r.listContainers(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list containerd containers in namespace %s: %w", r.ns, err)
	}
	known := make(map[string]bool, len(cs))
	for _, c := range cs {
		known[c.ID] = true
	}
	var removed []string
	err = r.removeShims(ctx, func(s supervisor.Shim) bool {
		if known[s.ID] {
			return false
		}
		removed = append(removed, s.String())
		return true
	})
	return removed, err
}

// removeOrphanShims removes the shims of containers matched by orphan (see removeShims).
func (r *Runtime) removeOrphanShims(ctx context.Context, orphan func(id string) bool) error {
	return r.removeShims(ctx, func(s supervisor.Shim) bool { return orphan(s.ID) })
}

// removeShims kills the namespace's shims that match, with their containers' processes, force-deletes
// the runc containers and removes their bundles (the shim's working directory, checked to be this
// namespace's bundle of that container before anything under it is touched).
func (r *Runtime) removeShims(ctx context.Context, match func(supervisor.Shim) bool) error {
	shims, err := supervisor.FindShims(r.ns, r.client.Conn().Target())
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range shims {
		if !match(s) {
			continue
		}
		if err := supervisor.KillShim(s); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := r.deleteRuncContainer(ctx, s.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		if s.Bundle == "" || r.checkBundlePath(s.Bundle, s.ID) != nil {
			continue // containerd removes a bundle it does not know when it next starts
		}
		if err := unmountUnder(s.Bundle); err != nil {
			errs = append(errs, fmt.Errorf("bundle of %s: %w", s, err))
		} else if err := os.RemoveAll(s.Bundle); err != nil {
			errs = append(errs, fmt.Errorf("remove bundle of %s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}
