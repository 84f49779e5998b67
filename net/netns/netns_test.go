package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testLab returns a fresh lab prefix and removes whatever netns carries it at the end.
func testLab(t testing.TB) string {
	t.Helper()
	lab := netnstest.Lab()
	t.Cleanup(func() {
		names, _ := ListNamed(lab + "-")
		for _, n := range names {
			if err := DeleteNamed(n); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return lab
}

func nsID(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func TestEnsureNamedIdempotentKeepsExisting(t *testing.T) {
	netnstest.RequireRoot(t, "creates network namespaces")
	lab := testLab(t)
	name := lab + "-a"
	p1, err := EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if p1 != filepath.Join(RunDir, name) {
		t.Fatalf("path = %s", p1)
	}
	id1 := nsID(t, p1)

	h, err := NewHandle(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("lo is not up in a new named netns")
	}
	d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "marker0"}}
	if err := h.LinkAdd(d); err != nil {
		t.Fatal(err)
	}

	p2, err := EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if p2 != p1 || nsID(t, p2) != id1 {
		t.Fatalf("second EnsureNamed gave another namespace: %s %s vs %s %s", p2, nsID(t, p2), p1, id1)
	}
	if _, err := h.LinkByName("marker0"); err != nil {
		t.Fatalf("existing netns content lost: %v", err)
	}

	names, err := ListNamed(lab + "-")
	if err != nil || len(names) != 1 || names[0] != name {
		t.Fatalf("ListNamed = %v, %v", names, err)
	}
	// iproute2 sees it too (inspection only).
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err == nil && !strings.Contains(string(out), name) {
		t.Fatalf("`ip netns list` does not show %s:\n%s", name, out)
	}
}

func TestEnsureNamedConcurrent(t *testing.T) {
	netnstest.RequireRoot(t, "creates network namespaces")
	lab := testLab(t)
	name := lab + "-c"
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p string
			p, errs[i] = EnsureNamed(name)
			if errs[i] == nil {
				ids[i] = nsID(t, p)
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("concurrent EnsureNamed made different namespaces: %v", ids)
		}
	}
}

func TestEnsureNamedReplacesStaleFile(t *testing.T) {
	netnstest.RequireRoot(t, "creates network namespaces")
	lab := testLab(t)
	name := lab + "-stale"
	if err := ensureRunDir(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(Path(name), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := Do(Path(name), func() error { return nil }); !errors.Is(err, ErrNotNetns) {
		t.Fatalf("Do on a plain file: err = %v, want ErrNotNetns", err)
	}
	p, err := EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(p); err != nil {
		t.Fatalf("after EnsureNamed: %v", err)
	}
}

func TestDeleteNamedIdempotent(t *testing.T) {
	netnstest.RequireRoot(t, "creates network namespaces")
	lab := testLab(t)
	name := lab + "-d"
	p, err := EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := DeleteNamed(name); err != nil {
			t.Fatalf("DeleteNamed #%d: %v", i+1, err)
		}
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists: %v", p, err)
	}
	if names, _ := ListNamed(lab + "-"); len(names) != 0 {
		t.Fatalf("ListNamed after delete = %v", names)
	}
	if err := DeleteNamed("../etc"); err == nil {
		t.Fatal("DeleteNamed accepted a name with '/'")
	}
}

func threadNetns(t testing.TB) string {
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// allThreadsIn checks that every thread of the process is in the netns want.
func allThreadsIn(t *testing.T, want string) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		l, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // thread exited meanwhile
		}
		if l != want {
			t.Fatalf("thread %s is left in %s, want %s", task.Name(), l, want)
		}
	}
}

func TestDoRunsInsideAndRestores(t *testing.T) {
	netnstest.RequireRoot(t, "creates network namespaces")
	lab := testLab(t)
	p, err := EnsureNamed(lab + "-do")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("net:[%d]", st.Ino)
	host := threadNetns(t)
	if host == target {
		t.Fatal("test netns equals the host netns")
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Do(p, func() error {
				if got := threadNetns(t); got != target {
					return errors.New("inside Do the thread is in " + got + ", want " + target)
				}
				// Sockets made here belong to the namespace: only its lo exists.
				ifs, err := net.Interfaces()
				if err != nil {
					return err
				}
				if len(ifs) != 1 || ifs[0].Name != "lo" {
					return errors.New("inside Do, interfaces are not just lo")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	allThreadsIn(t, host)

	sentinel := errors.New("boom")
	if err := Do(p, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Fatalf("Do did not return fn's error: %v", err)
	}

	func() {
		defer func() {
			v := recover()
			pe, ok := v.(*PanicError)
			if !ok || pe.Value != "inner" {
				t.Fatalf("recovered %#v, want *PanicError{inner}", v)
			}
		}()
		Do(p, func() error { panic("inner") })
	}()
	allThreadsIn(t, host)

	if err := Do(filepath.Join(RunDir, lab+"-missing"), func() error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Do on a missing netns: %v", err)
	}
}

func BenchmarkDo(b *testing.B) {
	netnstest.RequireRoot(b, "creates network namespaces")
	lab := testLab(b)
	p, err := EnsureNamed(lab + "-bench")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Do(p, func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnsureDeleteNamed(b *testing.B) {
	netnstest.RequireRoot(b, "creates network namespaces")
	lab := testLab(b)
	for b.Loop() {
		if _, err := EnsureNamed(lab + "-bench"); err != nil {
			b.Fatal(err)
		}
		if err := DeleteNamed(lab + "-bench"); err != nil {
			b.Fatal(err)
		}
	}
}
