package pods

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/oci"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// cgroupValue reads a container's cgroup file: the cgroup v1 controller's
// hierarchy (v1file) or, on cgroup v2, the unified one (v2file).
func cgroupValue(t *testing.T, e *testEnv, id, controller, v1file, v2file string) string {
	t.Helper()
	cg := filepath.Join(e.ns, id)
	for _, f := range []string{
		filepath.Join("/sys/fs/cgroup", controller, cg, v1file),
		filepath.Join("/sys/fs/cgroup", cg, v2file),
	} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("container %s has neither %s/%s (cgroup v1) nor %s (cgroup v2)", id, controller, v1file, v2file)
	return ""
}

// statusField is a field of /proc/self/status as seen inside a container.
func statusField(t *testing.T, e *testEnv, pod *corev1.Pod, container, field string) string {
	t.Helper()
	_, status := e.exec(t, pod, container, "read", "/proc/self/status")
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/self/status of %s:\n%s", field, container, status)
	return ""
}

// Issue 9, defect 12: a container gets containerd's default seccomp
// profile, no MKNOD, a pids limit, a memory limit when it sets none (and
// its own when it does), and unprivileged ping sockets work in the pod.
// NET_RAW is kept for busybox's ping (see droppedCapabilities).
func TestContainersAreHardened(t *testing.T) {
	e := newEnv(t)
	sized := ctr("sized", "sleep")
	sized.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("96Mi")}
	pod, sb := e.newPod(t, "hardened", ctr("plain", "sleep"), sized, ctr("bomb", "forkbomb", "5000"))
	for _, c := range []string{"plain", "sized", "bomb"} {
		e.start(t, pod, sb, c, 0)
	}

	for _, c := range []string{"plain", "sized"} {
		if got := statusField(t, e, pod, c, "Seccomp"); got != "2" {
			t.Errorf("%s: Seccomp: %s in /proc/self/status, want 2 (filter mode: a seccomp profile)", c, got)
		}
		for _, field := range []string{"CapEff", "CapBnd", "CapPrm"} {
			caps, err := strconv.ParseUint(statusField(t, e, pod, c, field), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			for name, bit := range map[string]uint{"MKNOD": unix.CAP_MKNOD, "SYS_ADMIN": unix.CAP_SYS_ADMIN, "NET_ADMIN": unix.CAP_NET_ADMIN} {
				if caps&(1<<bit) != 0 {
					t.Errorf("%s: %s %#x has CAP_%s", c, field, caps, name)
				}
			}
			// Kept: what the lab's servers need to bind port 80 and drop
			// to their worker user.
			for name, bit := range map[string]uint{"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "SETUID": unix.CAP_SETUID, "SETGID": unix.CAP_SETGID} {
				if caps&(1<<bit) == 0 {
					t.Errorf("%s: %s %#x lacks CAP_%s", c, field, caps, name)
				}
			}
		}
		if got := cgroupValue(t, e, ContainerID(pod, c), "pids", "pids.max", "pids.max"); got != strconv.Itoa(PidsLimit) {
			t.Errorf("%s: pids.max = %s, want %d", c, got, PidsLimit)
		}
	}
	for c, want := range map[string]int64{"plain": DefaultMemoryLimit, "sized": 96 << 20} {
		if got := cgroupValue(t, e, ContainerID(pod, c), "memory", "memory.limit_in_bytes", "memory.max"); got != strconv.FormatInt(want, 10) {
			t.Errorf("%s: memory limit %s, want %d", c, got, want)
		}
	}

	// ping works through an unprivileged ICMP socket (what a ping without
	// NET_RAW uses), to loopback and to an address of the pod's netns.
	addPodAddress(t, sb.NetnsPath, "192.0.2.10/32")
	for _, addr := range []string{"127.0.0.1", "192.0.2.10"} {
		if code, out := e.exec(t, pod, "plain", "ping", addr); code != 0 || out != "reply from "+addr+"\n" {
			t.Errorf("ping %s in the pod: exit %d, output %q", addr, code, out)
		}
	}

	// A fork bomb stops at the pids limit (the tool's own threads count
	// too) and the container is still there to stop.
	var out string
	waitFor(t, 30*time.Second, "the fork bomb to hit the limit", func() bool {
		out = e.logs(t, pod, "bomb", LogOptions{Tail: -1})
		return strings.HasPrefix(out, "forked ")
	})
	var n int
	var why string
	fmt.Sscanf(out, "forked %d: %s", &n, &why)
	if n >= PidsLimit || n < PidsLimit-64 || strings.Contains(out, "no error") {
		t.Errorf("fork bomb: %q; want it stopped just short of %d", strings.TrimSpace(out), PidsLimit)
	}
	if err := e.rt.StopContainer(context.Background(), string(pod.UID), "bomb", time.Second); err != nil {
		t.Errorf("stop the fork bomb: %v", err)
	}

	// Privileged is refused, never ignored.
	priv := ctr("priv", "sleep")
	yes := true
	priv.SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	if err := e.rt.StartContainer(context.Background(), ContainerOptions{Pod: pod, Container: &priv, Sandbox: sb}); err == nil || !strings.Contains(err.Error(), "privileged is not supported") {
		t.Errorf("privileged container: err = %v, want not supported", err)
	}
}

// addPodAddress puts addr on the loopback of the netns at nsPath (a netns
// the test made), as the pod's own address stands in.
func addPodAddress(t *testing.T, nsPath, addr string) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", filepath.Base(nsPath), "addr", "add", addr, "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add %s in %s: %v\n%s", addr, nsPath, err, out)
	}
}

// fakeShimEnv, when set, makes the test binary sleep: a process that looks
// like a leftover shim ("-namespace NS -id ID" in its arguments).
const fakeShimEnv = "PODS_TEST_FAKE_SHIM"

// Issue 9, defect 5: a start cut short leaves the task's shim bundle in
// containerd's state dir (with a shim still running, and the rootfs
// mounted) while containerd no longer knows the task; every later start
// failed with "failed to start shim: mkdir ...: file exists". Starting the
// container again cleans that up and works.
func TestRecoversLeftoverShimBundle(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "halfmade", ctr("app", "ticker", "up"))
	id := ContainerID(pod, "app")
	state := filepath.Dir(e.sup.Address()) // containerd's state dir holds its socket
	bundle := filepath.Join(state, runtimeV2Dir, e.ns, id)

	// The leftover, as containerd's NewBundle and the shim make it.
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{}"), 0o644)
	if err := unix.Mount("leftover", filepath.Join(bundle, "rootfs"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(bundle, "rootfs"), unix.MNT_DETACH) })
	shim := startFakeShim(t, e.ns, id)
	// Shims of another container, or of this container's ID in another
	// lab's namespace, are not touched.
	other := startFakeShim(t, e.ns, id+"x")
	otherLab := startFakeShim(t, e.ns+"x", id)

	e.start(t, pod, sb, "app", 0)
	waitFor(t, 10*time.Second, "the container's output", func() bool {
		return strings.Contains(e.logs(t, pod, "app", LogOptions{Tail: -1}), "up 3\n")
	})
	if st := e.state(t, pod, "app"); !st.Running {
		t.Errorf("state after recovery = %+v, want running", st)
	}
	if alive(shim) {
		t.Error("the leftover shim is still running")
	}
	if !alive(other) || !alive(otherLab) {
		t.Error("the shim of another container was killed")
	}
	if m := mountsContaining(t, filepath.Join(bundle, "rootfs")); len(m) != 1 {
		// containerd's own rootfs mount, not the leftover stacked under it
		t.Errorf("mounts on the bundle's rootfs: %v, want containerd's one", m)
	}
	if _, err := os.Stat(filepath.Join(bundle, "address")); err != nil {
		t.Errorf("the new bundle has no shim address: %v", err)
	}

	// The bundle path containerd names must be this container's, or
	// nothing is touched.
	for _, bad := range []string{
		filepath.Join(state, runtimeV2Dir, e.ns, id+"x"),
		filepath.Join(state, runtimeV2Dir, "other-ns", id),
		filepath.Join(state, "elsewhere", e.ns, id),
		filepath.Join(state, runtimeV2Dir, e.ns, id) + "/../" + id,
		"relative/" + runtimeV2Dir + "/" + e.ns + "/" + id,
	} {
		if err := e.rt.checkBundlePath(bad, id); err == nil {
			t.Errorf("bundle path %s accepted for container %s", bad, id)
		}
	}
}

// startFakeShim runs a process with a shim's identifying arguments; cleanup
// kills it.
func startFakeShim(t *testing.T, ns, id string) *exec.Cmd {
	t.Helper()
	return startFakeShimAt(t, ns, id, "/nonexistent", "")
}

// startFakeShimAt runs a fake shim that reports to the containerd at address, in dir (its bundle, as
// containerd starts shims) if dir is not empty.
func startFakeShimAt(t *testing.T, ns, id, address, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-namespace", ns, "-id", id, "-address", address)
	cmd.Dir = dir
	cmd.Args[0] = "containerd-shim-runc-v2" // as containerd names it
	cmd.Env = append(os.Environ(), fakeShimEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	// Wait until it runs as itself (exec done), so its cmdline is the
	// shim's.
	waitFor(t, 5*time.Second, "the fake shim to start", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		return strings.Contains(string(b), "-namespace")
	})
	return cmd
}

// alive reports whether the process runs (a killed child not yet reaped by
// its Wait goroutine is a zombie: not alive).
func alive(cmd *exec.Cmd) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && !strings.HasPrefix(s[i+1:], " Z") && syscall.Kill(cmd.Process.Pid, 0) == nil
}

// TestRemovesOrphanShims: a shim whose container containerd no longer has (a daemon killed while the pod
// was being deleted) is stopped, with its bundle, by the start-up sweep; one whose container has no task
// is stopped when that container is removed. Shims of known containers and of other namespaces stay.
func TestRemovesOrphanShims(t *testing.T) {
	e := newEnv(t)
	state := filepath.Dir(e.sup.Address())
	bundleOf := func(id string) string {
		b := filepath.Join(state, runtimeV2Dir, e.ns, id)
		if err := os.MkdirAll(filepath.Join(b, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		return b
	}
	pod, sb := e.newPod(t, "live", ctr("app", "ticker", "up"))
	e.start(t, pod, sb, "app", 0)
	liveID := ContainerID(pod, "app")

	orphan := startFakeShimAt(t, e.ns, "gone-c", e.sup.Address(), bundleOf("gone-c"))
	known := startFakeShimAt(t, e.ns, liveID, e.sup.Address(), "") // as if a second shim of the live container
	otherNS := startFakeShimAt(t, e.ns+"x", "gone-c", e.sup.Address(), "")
	otherContainerd := startFakeShimAt(t, e.ns, "gone-c", "/run/elsewhere.sock", "")
	// A container with no task (a start cut short) and a shim containerd lost for it.
	ctx := e.ctx(context.Background())
	if _, err := e.rt.client.NewContainer(ctx, "notask-c", containerd.WithSpec(&oci.Spec{}), containerd.WithContainerLabels(map[string]string{LabelPodUID: "notask-uid"})); err != nil {
		t.Fatal(err)
	}
	noTask := startFakeShimAt(t, e.ns, "notask-c", e.sup.Address(), bundleOf("notask-c"))

	removed, err := e.rt.RemoveOrphanShims(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || !strings.Contains(removed[0], "container gone-c") {
		t.Errorf("removed %q, want the shim of gone-c", removed)
	}
	if alive(orphan) {
		t.Error("the orphan shim still runs")
	}
	if _, err := os.Stat(filepath.Join(state, runtimeV2Dir, e.ns, "gone-c")); !os.IsNotExist(err) {
		t.Errorf("the orphan's bundle is still there: %v", err)
	}
	for _, c := range []*exec.Cmd{known, otherNS, otherContainerd, noTask} {
		if !alive(c) {
			t.Errorf("shim %v was killed", c.Args)
		}
	}
	if st := e.state(t, pod, "app"); !st.Running {
		t.Errorf("the live container is %+v after the sweep", st)
	}

	if err := e.rt.RemovePod(ctx, "notask-uid"); err != nil {
		t.Fatal(err)
	}
	if alive(noTask) {
		t.Error("removing a container without a task left the shim containerd lost")
	}
	if !alive(known) {
		t.Error("removing another container killed this shim")
	}
}
