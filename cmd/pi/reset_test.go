package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

// resetLab is a throwaway lab for the reset tests: a random name, its own "Internet" namespace, and a
// last reset (by the lab's own name) when the test ends.
type resetLab struct {
	name, hostNS, root, runDir, socket string
}

func newResetLab(t *testing.T, socket string) *resetLab {
	t.Helper()
	l := &resetLab{name: netnstest.Lab()}
	l.hostNS = "inet-" + l.name
	l.root, l.runDir = "/var/lib/pilab/"+l.name, "/run/pilab/"+l.name
	l.socket = socket
	if l.socket == "" {
		l.socket = l.runDir + "/pi.sock"
	}
	if _, err := netns.EnsureNamed(l.hostNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := pi(nil, "reset", "--lab", l.name); err != nil {
			t.Errorf("last pi reset --lab %s: %v\n%s", l.name, err, out)
		}
		netns.DeleteNamed(l.hostNS)
	})
	return l
}

func (l *resetLab) up(t *testing.T) {
	t.Helper()
	args := []string{"up", "--lab", l.name, "--host-netns", l.hostNS}
	if l.socket != l.runDir+"/pi.sock" {
		args = append(args, "--socket", l.socket)
	}
	if out, err := pi(nil, args...); err != nil {
		t.Fatalf("pi %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pi runs the pi command (this test binary, see TestMain) with env added to an environment that names no
// lab, socket or account; it returns stdout and stderr together.
func pi(env []string, args ...string) (string, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Args[0] = "pi"
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PI_LAB=") && !strings.HasPrefix(kv, "PI_SOCKET=") && !strings.HasPrefix(kv, "PI_ACCOUNT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func daemonPid(t *testing.T, l *resetLab) int {
	t.Helper()
	b, err := os.ReadFile(l.runDir + "/pi.pid")
	if err != nil {
		t.Fatalf("lab %s has no daemon pid file: %v", l.name, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// gone reports whether pid has exited (a zombie has: nothing reaps the shims' orphans in some sandboxes).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// serving checks that lab l is whole: its daemon answers (account "keep" is still there), it is the same
// daemon as before (pid), its state.db is the same file, its router netns and Internet netns exist.
func serving(t *testing.T, l *resetLab, pid int, dbIno uint64, after string) {
	t.Helper()
	if out, err := pi(nil, "--lab", l.name, "--socket", l.socket, "get", "account", "keep"); err != nil || !strings.Contains(out, "keep") {
		t.Fatalf("after %s: lab %s does not answer: %v\n%s", after, l.name, err, out)
	}
	if p := daemonPid(t, l); p != pid {
		t.Fatalf("after %s: lab %s's daemon is pid %d, was %d", after, l.name, p, pid)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(l.root+"/state.db", &st); err != nil || st.Ino != dbIno {
		t.Fatalf("after %s: lab %s's state.db: %v (inode %d, was %d)", after, l.name, err, st.Ino, dbIno)
	}
	for _, n := range []string{l.name + "-r1", l.hostNS} {
		if _, err := os.Stat(netns.Path(n)); err != nil {
			t.Fatalf("after %s: lab %s's netns %s is gone: %v", after, l.name, n, err)
		}
	}
}

func stateIno(t *testing.T, l *resetLab) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(l.root+"/state.db", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestResetTwoLabs runs two labs side by side and resets one of them by every way of naming it, while
// the other keeps serving; every way of pointing up, down or reset of one lab at the other's socket, root,
// run dir or host netns is refused with a message that says whose they are.
func TestResetTwoLabs(t *testing.T) {
	requirePrivileged(t)
	a := newResetLab(t, "")
	// b's socket is outside its run dir: whose it is can then only be learnt by asking the daemon there.
	b := newResetLab(t, filepath.Join(t.TempDir(), "b.sock"))
	a.up(t)
	b.up(t)
	for _, l := range []*resetLab{a, b} {
		if out, err := pi(nil, "--lab", l.name, "--socket", l.socket, "account", "create", "keep"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	aPid, bPid := daemonPid(t, a), daemonPid(t, b)
	aIno, bIno := stateIno(t, a), stateIno(t, b)

	refused := []struct {
		env  []string
		args []string
		want string // regexp of the message
	}{
		// The reproductions of defect 6: reset named one lab and pointed at another's socket.
		{nil, []string{"reset", "--lab", a.name, "--socket", b.socket},
			`--socket ` + b.socket + ` is the socket of lab "` + b.name + `" \(daemon pid \d+, root ` + b.root + `\), not of lab "` + a.name + `"; to act on lab ` + b.name + ` say --lab ` + b.name},
		{nil, []string{"--socket", b.socket, "reset"},
			`--socket ` + b.socket + ` is the socket of lab "` + b.name + `" .*, not of lab "pi" \(the default: --lab and PI_LAB are unset\)`},
		{[]string{"PI_SOCKET=" + b.socket}, []string{"reset", "--lab", a.name}, `is the socket of lab "` + b.name + `"`},
		{[]string{"PI_SOCKET=" + b.socket, "PI_LAB=" + a.name}, []string{"reset"}, `is the socket of lab "` + b.name + `"`},
		{[]string{"PI_SOCKET=" + a.socket}, []string{"reset", "--lab", b.name},
			`--socket ` + a.socket + ` is the socket of lab "` + a.name + `" \(daemon pid \d+, root ` + a.root + `\), not of lab "` + b.name + `"`},
		{nil, []string{"reset", "--lab", a.name, "--root", b.root},
			b.root + ` is the root of lab "` + b.name + `" \(recorded in ` + b.root + `/lab.json\), not of lab "` + a.name + `"; name that lab \(--lab ` + b.name + `\) or give lab ` + a.name + `'s own --root`},
		{nil, []string{"reset", "--lab", a.name, "--run-dir", b.runDir}, b.runDir + ` is the run dir of lab "` + b.name + `"`},
		{nil, []string{"reset", "--lab", a.name, "--socket", "./other.sock"},
			`--socket \S+/other.sock is not lab "` + a.name + `"'s: its socket is ` + a.socket + ` \(recorded in ` + a.root + `/lab.json\); leave the flag out, or name the lab it belongs to with --lab`},
		{nil, []string{"reset", "--lab", a.name, "--host-netns", b.hostNS}, `--host-netns ` + b.hostNS + ` is not lab "` + a.name + `"'s: its host-netns is ` + a.hostNS},
		{nil, []string{"down", "--lab", a.name, "--root", b.root}, b.root + ` is the root of lab "` + b.name + `"`},
		{nil, []string{"down", "--socket", b.socket}, `is the socket of lab "` + b.name + `" .*not of lab "pi"`},
		{[]string{"PI_LAB=" + a.name}, []string{"down", "--socket", b.socket}, `is the socket of lab "` + b.name + `"`},
		{nil, []string{"up", "--lab", a.name, "--socket", b.socket}, `is the socket of lab "` + b.name + `"`},
		// A second daemon of a running lab, on another socket or started directly.
		{nil, []string{"up", "--lab", a.name, "--socket", filepath.Join(t.TempDir(), "second.sock")},
			`lab "` + a.name + `" is already up with its socket at ` + a.socket + ` \(daemon pid \d+\), not at \S+; stop it with ` + "`pi down --lab " + a.name + "`"},
		{nil, []string{"daemon", "--lab", a.name, "--host-netns", a.hostNS},
			`lab "` + a.name + `" already has a daemon \(daemon pid \d+: it holds the lock on ` + a.root + `/state.db\); a second one would share its state; stop it with ` + "`pi down --lab " + a.name + "`"},
	}
	for _, r := range refused {
		what := strings.Join(append(r.env, append([]string{"pi"}, r.args...)...), " ")
		out, err := pi(r.env, r.args...)
		if err == nil {
			t.Errorf("%s: succeeded, want it refused\n%s", what, out)
		} else if !regexp.MustCompile(r.want).MatchString(out) {
			t.Errorf("%s: %v\n%s\nwant a message matching %s", what, err, out, r.want)
		}
		t.Logf("%s\n  %s", what, strings.TrimSpace(out))
		serving(t, a, aPid, aIno, what)
		serving(t, b, bPid, bIno, what)
	}
	if out, err := pi(nil, "up", "--lab", a.name); err != nil || !strings.Contains(out, `lab "`+a.name+`" is already up (daemon pid `+strconv.Itoa(aPid)) {
		t.Errorf("pi up --lab %s of a lab that is up: %v\n%s", a.name, err, out)
	}

	// A daemon that does not answer is not stopped, and its lab not touched.
	syscall.Kill(aPid, syscall.SIGSTOP)
	out, err := pi(nil, "reset", "--lab", a.name)
	syscall.Kill(aPid, syscall.SIGCONT)
	want := `lab "` + a.name + `" is running \(daemon pid ` + strconv.Itoa(aPid) + `: it holds the lock on ` + a.root + `/state.db\) and was left as it is: it does not answer on its socket ` + a.socket + ` .*; stop it with ` + "`pi down --lab " + a.name + "`" + ` \(or kill ` + strconv.Itoa(aPid) + ` if it does not answer\), then reset`
	if err == nil || !regexp.MustCompile(want).MatchString(out) {
		t.Errorf("reset of a lab whose daemon does not answer: %v\n%s\nwant a message matching %s", err, out, want)
	}
	t.Logf("pi reset --lab %s (daemon stopped by SIGSTOP)\n  %s", a.name, strings.TrimSpace(out))
	serving(t, a, aPid, aIno, "reset of a stopped daemon")
	serving(t, b, bPid, bIno, "reset of a stopped daemon")

	// Lab a reset by each way of naming it, and up again between; b keeps serving throughout.
	resets := []struct {
		env  []string
		args []string
	}{
		{nil, []string{"reset", "--lab", a.name}},
		{[]string{"PI_LAB=" + a.name}, []string{"reset"}},
		{nil, []string{"reset", "--lab", a.name, "--root", a.root, "--run-dir", a.runDir, "--socket", a.socket, "--host-netns", a.hostNS}},
		{[]string{"PI_LAB=" + a.name, "PI_SOCKET=" + a.socket}, []string{"reset", "--root", a.root}},
		{[]string{"PI_LAB=" + a.name}, []string{"--socket", a.socket, "reset", "--run-dir", a.runDir}},
	}
	for i, r := range resets {
		if i > 0 {
			a.up(t)
		}
		what := strings.Join(append(r.env, append([]string{"pi"}, r.args...)...), " ")
		out, err := pi(r.env, r.args...)
		if err != nil || !strings.Contains(out, `lab "`+a.name+`" reset: nothing of it is left`) || !strings.Contains(out, "stopped lab") {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		for _, p := range []string{a.root, a.runDir, netns.Path(a.name + "-r1")} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s: %s is still there", what, p)
			}
		}
		serving(t, b, bPid, bIno, what)
	}

	// down with the lab flags up takes (down --root was an unknown flag), then reset of the stopped lab.
	a.up(t)
	if out, err := pi(nil, "down", "--lab", a.name, "--root", a.root, "--run-dir", a.runDir, "--host-netns", a.hostNS); err != nil || !strings.Contains(out, "is down") {
		t.Fatalf("pi down with the lab's flags: %v\n%s", err, out)
	}
	if out, err := pi(nil, "reset", "--lab", a.name); err != nil || strings.Contains(out, "stopped lab") || !strings.Contains(out, "nothing of it is left") {
		t.Fatalf("pi reset of a stopped lab: %v\n%s", err, out)
	}
	serving(t, b, bPid, bIno, "reset of the other lab, stopped")
}

// TestResetKillsLeftoverShim leaves behind what a start killed half way leaves: a shim and its container
// running a task that containerd's pod cleanup does not know, with its bundle and rootfs mount, and
// containerd and the daemon killed with SIGKILL. pi reset must kill the shim and the container, remove the
// bundle, say so, and only then say that nothing is left.
func TestResetKillsLeftoverShim(t *testing.T) {
	requirePrivileged(t)
	l := newResetLab(t, "")
	l.up(t)

	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), l.name), time.Minute)
	defer cancel()
	cl, err := containerd.New(l.runDir+"/containerd/containerd.sock", containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The rootfs is the machine's own /, bound read-only: a container needs no image to run sleep.
	c, err := cl.NewContainer(ctx, "leftover",
		containerd.WithRuntime("io.containerd.runc.v2", &runcoptions.Options{Root: l.runDir + "/runc"}),
		containerd.WithNewSpec(oci.WithProcessArgs("/bin/sleep", "3600")))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO, containerd.WithRootFS([]mount.Mount{{Type: "bind", Source: "/", Options: []string{"bind", "ro"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	initPid := int(task.Pid())
	shimPid := parentPid(initPid)
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", shimPid))
	if !strings.Contains(string(cmdline), "containerd-shim") || !strings.Contains(string(cmdline), l.name) {
		t.Fatalf("the container's parent %d is not its shim: %q", shimPid, cmdline)
	}
	bundle := l.runDir + "/containerd/io.containerd.runtime.v2.task/" + l.name + "/leftover"
	if _, err := os.Stat(bundle + "/rootfs/bin/sleep"); err != nil {
		t.Fatalf("the task's rootfs is not mounted in its bundle: %v", err)
	}
	t.Cleanup(func() {
		// Whatever reset does, the test leaves no process behind.
		syscall.Kill(initPid, syscall.SIGKILL)
		syscall.Kill(shimPid, syscall.SIGKILL)
	})

	// The daemon and containerd die as in a crash; the shim and its container live on.
	ctrdPid, _ := strconv.Atoi(strings.TrimSpace(readFile(l.runDir + "/containerd.pid")))
	for _, p := range []int{daemonPid(t, l), ctrdPid} {
		if p <= 0 {
			t.Fatalf("no pid to kill (daemon or containerd of lab %s)", l.name)
		}
		syscall.Kill(p, syscall.SIGKILL)
		for deadline := time.Now().Add(10 * time.Second); !gone(p) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if gone(shimPid) || gone(initPid) {
		t.Fatalf("the shim (%d) or its container (%d) died with containerd; the test needs them alive", shimPid, initPid)
	}

	out, err := pi(nil, "reset", "--lab", l.name)
	t.Logf("pi reset --lab %s\n%s", l.name, out)
	if err != nil {
		t.Fatalf("pi reset: %v", err)
	}
	if gone := gone(shimPid); !gone {
		t.Errorf("the shim (pid %d) survived pi reset", shimPid)
	}
	if gone := gone(initPid); !gone {
		t.Errorf("the container's process (pid %d) survived pi reset", initPid)
	}
	for _, want := range []string{
		fmt.Sprintf("removed killed shim pid %d (container leftover, namespace %s, bundle %s)", shimPid, l.name, bundle),
		"removed mount " + bundle + "/rootfs",
		"removed bundle " + bundle,
		`lab "` + l.name + `" reset: nothing of it is left`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("pi reset did not print %q", want)
		}
	}
	mounts := readFile("/proc/self/mountinfo")
	if strings.Contains(mounts, l.runDir) {
		t.Errorf("mounts under %s are left", l.runDir)
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/" + l.name); len(m) > 0 {
		t.Errorf("cgroups of the lab are left: %v", m)
	}
}

func parentPid(pid int) int {
	s := readFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
