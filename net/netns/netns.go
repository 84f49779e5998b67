// Package netns runs code inside network namespaces and manages named ones
// (the /var/run/netns/<name> files that `ip netns` shows).
//
// Every switch of a thread into another network namespace in pilab happens in
// Do: it runs the function on a fresh goroutine locked to its OS thread and, if
// the thread cannot be switched back, leaves it locked so the Go runtime
// terminates it instead of reusing a thread that sits in the wrong namespace.
package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RunDir is where named network namespaces live; the same directory iproute2
// uses, so `ip netns` and `ip netns exec` work on pilab's namespaces.
const RunDir = "/var/run/netns"

// nsfsMagic is the statfs type of a namespace file (include/uapi/linux/magic.h).
const nsfsMagic = 0x6e736673

// named serialises EnsureNamed/DeleteNamed in this process: creating the mount
// point and bind-mounting onto it are two steps, and a concurrent caller must
// not mistake the half-made file for a stale leftover and remove it.
var named sync.Mutex

// PanicError carries a panic raised by the function given to Do; Do re-panics
// with it on the caller's goroutine after the thread has been switched back.
type PanicError struct {
	Value any
	Stack []byte
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("panic inside netns.Do: %v\n%s", p.Value, p.Stack)
}

// Do runs fn on an OS thread that has joined the network namespace at path and
// returns fn's error. Only the network namespace changes (mounts, /sys and the
// rest stay the caller's). Goroutines started by fn do not inherit the
// namespace; sockets created by fn stay in it after Do returns, which is how
// listeners and netlink handles for a namespace are made.
//
// If the thread cannot be switched back, it is never unlocked: the runtime then
// destroys it when the goroutine ends, so no other goroutine can run in the
// wrong namespace. That failure is returned (joined with fn's error).
func Do(path string, fn func() error) error {
	target, err := Open(path)
	if err != nil {
		return err
	}
	defer target.Close()

	type result struct {
		err   error
		panic *PanicError
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread's own namespace, not /proc/self (that is the main thread's).
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns.Do %s: open current thread's netns: %w", path, err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns.Do: setns into %s: %w", path, err)}
			return
		}
		var res result
		func() {
			defer func() {
				if v := recover(); v != nil {
					buf := make([]byte, 64<<10)
					res.panic = &PanicError{Value: v, Stack: buf[:runtime.Stack(buf, false)]}
				}
			}()
			res.err = fn()
		}()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Deliberately no UnlockOSThread: see the function comment.
			res.err = errors.Join(res.err, fmt.Errorf("netns.Do: cannot switch thread back from %s (thread discarded): %w", path, err))
			done <- res
			return
		}
		runtime.UnlockOSThread()
		done <- res
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

// Open opens a network namespace file (a /var/run/netns entry, /proc/<pid>/ns/net,
// ...) after checking that it really is a namespace, so that a plain file left
// behind by a crash is reported as such instead of failing later in setns.
func Open(path string) (*os.File, error) {
	if err := check(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return f, nil
}

// ErrNotNetns reports a path that exists but is not a namespace file.
var ErrNotNetns = errors.New("not a network namespace")

func check(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("netns %s does not exist: %w", path, os.ErrNotExist)
		}
		return fmt.Errorf("statfs netns %s: %w", path, err)
	}
	// procfs: /proc/<pid>/ns/net resolves to an nsfs inode but some kernels
	// report procfs for the magic link itself.
	if st.Type != nsfsMagic && st.Type != unix.PROC_SUPER_MAGIC {
		return fmt.Errorf("%s (filesystem type %#x): %w; remove it or pick another name", path, st.Type, ErrNotNetns)
	}
	return nil
}

// NewHandle returns a netlink handle whose socket lives in the namespace at
// path: every call on it acts on that namespace, from any goroutine. Close it.
func NewHandle(path string) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := Do(path, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink handle in netns %s: %w", path, err)
	}
	return h, nil
}

// OpenWithHandle opens the namespace at path (Open) together with a netlink handle in it (NewHandle): what
// code that both programs links there and passes the namespace on (a veth peer's PeerNamespace, an nft
// connection) needs. Close both.
func OpenWithHandle(path string) (*os.File, *netlink.Handle, error) {
	f, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	h, err := NewHandle(path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, h, nil
}

// Path returns the file of the named namespace name.
func Path(name string) string { return filepath.Join(RunDir, name) }

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("invalid netns name %q: want a non-empty file name without '/'", name)
	}
	return nil
}

// EnsureNamed makes the named namespace /var/run/netns/<name> exist, the way
// `ip netns add` does, and returns its path. An existing namespace is kept
// (its links and settings untouched); a leftover plain file of that name (a
// crash between creating the mount point and mounting) is replaced. The
// loopback link is brought up in either case.
func EnsureNamed(name string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	named.Lock()
	defer named.Unlock()
	if err := ensureRunDir(); err != nil {
		return "", err
	}
	path := Path(name)
	switch err := check(path); {
	case err == nil:
		// Kept as is.
	case errors.Is(err, os.ErrNotExist):
		if err := create(path); err != nil {
			return "", err
		}
	case errors.Is(err, ErrNotNetns):
		if mounted(path) {
			return "", fmt.Errorf("ensure netns %s: something else is mounted there: %w; unmount it by hand", name, err)
		}
		if err := os.Remove(path); err != nil {
			return "", fmt.Errorf("ensure netns %s: remove stale file: %w", name, err)
		}
		if err := create(path); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("ensure netns %s: %w", name, err)
	}
	if err := loopbackUp(path); err != nil {
		return "", fmt.Errorf("ensure netns %s: %w", name, err)
	}
	return path, nil
}

// ensureRunDir makes RunDir a shared mount point, like iproute2 does, so that
// namespace mounts made later propagate into mount namespaces (containers,
// other tools) that bind RunDir.
func ensureRunDir() error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", RunDir, err)
	}
	err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s a shared mount: %w", RunDir, err)
	}
	// EINVAL: not a mount point yet. Bind it onto itself, then share it.
	if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s onto itself: %w", RunDir, err)
	}
	if err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", RunDir, err)
	}
	return nil
}

func create(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point %s: %w", path, err)
	}
	f.Close()

	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open current thread's netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("unshare a new netns: %w", err)
			return
		}
		mountErr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Thread stays locked and is discarded (see Do).
			done <- errors.Join(mountErr, fmt.Errorf("switch thread back after creating netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		done <- mountErr
	}()
	if err := <-done; err != nil {
		os.Remove(path)
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	return nil
}

func loopbackUp(path string) error {
	h, err := NewHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
	}
	return nil
}

// mounted reports whether path is a mount point (of anything).
func mounted(path string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Stat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// DeleteNamed removes the named namespace: unmounts /var/run/netns/<name> and
// removes the file. Missing is fine. The namespace itself disappears once no
// process or open file holds it any more.
func DeleteNamed(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	named.Lock()
	defer named.Unlock()
	path := Path(name)
	// A name mounted twice (two racing `ip netns add`) needs two unmounts.
	for i := 0; i < 8; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		return fmt.Errorf("delete netns %s: unmount %s: %w", name, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// ListNamed returns the sorted names in /var/run/netns that start with prefix.
func ListNamed(prefix string) ([]string, error) {
	ents, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", RunDir, err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}
