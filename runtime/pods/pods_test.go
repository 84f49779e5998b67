package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pilab/pi/runtime/supervisor/supervisortest"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Two containers of a pod share the network, UTS and IPC namespaces and
// /dev/shm of the sandbox, not those of the host; each has its own PID
// namespace.
func TestSandboxSharedNamespaces(t *testing.T) {
	e := newEnv(t)
	hostBefore, _ := os.Hostname()
	pod, sb := e.newPod(t, "web",
		ctr("server", "listen", "127.0.0.1:8080"),
		ctr("side", "sleep"),
		ctr("client", "dial", "127.0.0.1:8080"),
	)
	for _, c := range []string{"server", "side", "client"} {
		e.start(t, pod, sb, c, 0)
	}

	// A port one container listens on is reachable from another on loopback.
	st := e.waitExited(t, pod, "client")
	if got := e.logs(t, pod, "client", LogOptions{Tail: -1}); st.ExitCode != 0 || got != "hello from web\n" {
		t.Fatalf("client: exit %d, output %q; want 0 and %q", st.ExitCode, got, "hello from web\n")
	}

	if _, out := e.exec(t, pod, "server", "hostname"); out != "web\n" {
		t.Errorf("hostname in the pod = %q, want web", out)
	}
	if _, out := e.exec(t, pod, "side", "read", "/etc/hostname"); out != "web\n" {
		t.Errorf("/etc/hostname in the pod = %q, want web", out)
	}
	if h, _ := os.Hostname(); h != hostBefore {
		t.Errorf("the host's hostname changed from %q to %q", hostBefore, h)
	}

	_, a := e.exec(t, pod, "server", "nsid")
	_, b := e.exec(t, pod, "side", "nsid")
	al, bl := strings.Fields(a), strings.Fields(b)
	if len(al) != 4 || len(bl) != 4 {
		t.Fatalf("nsid output: %q, %q", a, b)
	}
	for i, p := range []string{sb.NetnsPath, sb.UTSPath, sb.IPCPath} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(":[%d]", st.Ino)
		if !strings.HasSuffix(al[i], want) || !strings.HasSuffix(bl[i], want) {
			t.Errorf("namespace %d: server in %s, side in %s; want both in the sandbox's %s (%s)", i, al[i], bl[i], p, want)
		}
		// PID 1 is in the host's namespaces; this process's main thread may not be
		// (a thread locked into a test netns can be the main one).
		host, _ := os.Readlink("/proc/1/ns/" + []string{"net", "uts", "ipc"}[i])
		if al[i] == host {
			t.Errorf("the container shares the host's %s", host)
		}
	}
	if al[3] == bl[3] {
		t.Errorf("both containers in PID namespace %s; each should have its own", al[3])
	}

	// /dev/shm is the sandbox's tmpfs, so shared by the pod's containers.
	if code, _ := e.exec(t, pod, "server", "write", "/dev/shm/token", "shared"); code != 0 {
		t.Fatalf("write /dev/shm: exit %d", code)
	}
	if _, out := e.exec(t, pod, "side", "read", "/dev/shm/token"); out != "shared" {
		t.Errorf("side reads %q from /dev/shm/token, want %q", out, "shared")
	}

	// EnsureSandbox again changes nothing and stacks no mounts.
	before := mountsContaining(t, sb.Dir)
	sb2, err := e.rt.EnsureSandbox(pod, sb.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	if sb2 != sb {
		t.Errorf("EnsureSandbox again = %+v, want %+v", sb2, sb)
	}
	if after := mountsContaining(t, sb.Dir); len(after) != len(before) || len(after) != 3 {
		t.Errorf("mounts under the sandbox: %v before, %v after a second EnsureSandbox; want the same 3", before, after)
	}
}

// A sandbox half made by a crash (mount point file without a mount) is
// completed; a wrong network namespace path is refused.
func TestEnsureSandboxRepairsAndChecks(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "fix", ctr("c", "sleep"))
	if err := unix.Unmount(sb.IPCPath, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if ok, _ := isNamespace(sb.IPCPath, unix.CLONE_NEWIPC); ok {
		t.Fatal("IPC mount still there")
	}
	var utsBefore unix.Stat_t
	unix.Stat(sb.UTSPath, &utsBefore)
	if _, err := e.rt.EnsureSandbox(pod, sb.NetnsPath); err != nil {
		t.Fatal(err)
	}
	if ok, err := isNamespace(sb.IPCPath, unix.CLONE_NEWIPC); !ok {
		t.Fatalf("IPC namespace not restored: %v", err)
	}
	var utsAfter unix.Stat_t
	unix.Stat(sb.UTSPath, &utsAfter)
	if utsAfter.Ino != utsBefore.Ino {
		t.Errorf("the UTS namespace was replaced although it was fine")
	}
	e.start(t, pod, sb, "c", 0)
	if _, out := e.exec(t, pod, "c", "hostname"); out != "fix\n" {
		t.Errorf("hostname = %q", out)
	}

	// The UTS namespace file is not a network namespace.
	if _, err := e.rt.EnsureSandbox(pod, sb.UTSPath); err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("EnsureSandbox with a UTS namespace as netns: err = %v, want a network namespace error", err)
	}
	if _, err := e.rt.EnsureSandbox(pod, filepath.Join(sb.Dir, "nope")); err == nil {
		t.Error("EnsureSandbox with a missing netns path succeeded")
	}
}

func TestExitStateAndEvents(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exits := e.rt.Exits(ctx)
	pod, sb := e.newPod(t, "exiter", ctr("fails", "exit", "3"), ctr("ok", "exit", "0"), ctr("runs", "sleep"))
	e.start(t, pod, sb, "runs", 0)
	e.start(t, pod, sb, "fails", 0)
	e.start(t, pod, sb, "ok", 0)
	startedBy := time.Now()

	got := map[string]Exit{}
	timeout := time.After(30 * time.Second)
	for len(got) < 2 {
		select {
		case x := <-exits:
			if x.PodUID == string(pod.UID) {
				got[x.Container] = x
			}
		case <-timeout:
			t.Fatalf("exit events after 30s: %+v; want fails and ok", got)
		}
	}
	if x := got["fails"]; x.ExitCode != 3 || x.At.IsZero() {
		t.Errorf("exit of fails = %+v, want code 3 with a time", x)
	}
	if x := got["ok"]; x.ExitCode != 0 {
		t.Errorf("exit of ok = %+v, want code 0", x)
	}
	if _, ok := got["runs"]; ok {
		t.Error("exit event for a running container")
	}

	st := e.state(t, pod, "fails")
	if !st.Exists || st.Running || st.ExitCode != 3 || st.Reason != ReasonError || st.ImageRef != testImage {
		t.Errorf("state of fails = %+v", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) || st.StartedAt.After(startedBy) {
		t.Errorf("state of fails: started %v finished %v", st.StartedAt, st.FinishedAt)
	}
	if st.ID != ContainerID(pod, "fails") {
		t.Errorf("ID %s, want %s", st.ID, ContainerID(pod, "fails"))
	}
	if st := e.state(t, pod, "ok"); st.Reason != ReasonCompleted || st.ExitCode != 0 || st.Running {
		t.Errorf("state of ok = %+v", st)
	}
	if st := e.state(t, pod, "runs"); !st.Running || !st.FinishedAt.IsZero() || st.Reason != "" {
		t.Errorf("state of runs = %+v", st)
	}
	if st := e.state(t, pod, "never"); st.Exists {
		t.Errorf("state of a container never started = %+v", st)
	}

	// An exec process ending is not the container exiting.
	e.exec(t, pod, "runs", "exit", "9")
	select {
	case x := <-exits:
		if x.PodUID == string(pod.UID) && x.Container == "runs" {
			t.Errorf("exit event for an exec process: %+v", x)
		}
	case <-time.After(500 * time.Millisecond):
	}

	// A new subscriber hears about exits that happened before it listened.
	ctx2, cancel2 := context.WithCancel(context.Background())
	late := e.rt.Exits(ctx2)
	seen := map[string]bool{}
	for !seen["fails"] || !seen["ok"] {
		select {
		case x := <-late:
			seen[x.Container] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("late subscriber saw %v, want fails and ok", seen)
		}
	}
	cancel2()
	for range late { // the channel closes once ctx ends
	}

	l, err := e.rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]bool{}
	for _, c := range l {
		if c.PodUID != string(pod.UID) || c.Pod != "exiter" || c.Labels[LabelNamespace] != "default" {
			t.Errorf("listed %+v", c)
		}
		running[c.Container] = c.Running
	}
	if want := map[string]bool{"fails": false, "ok": false, "runs": true}; fmt.Sprint(running) != fmt.Sprint(want) {
		t.Errorf("List running = %v, want %v", running, want)
	}
}

func TestRestartAndPreviousLogs(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "crashy", ctr("app", "exit", "1"))
	e.start(t, pod, sb, "app", 0)
	e.waitExited(t, pod, "app")

	pod.Spec.Containers[0].Args = []string{"lines", "2"}
	e.start(t, pod, sb, "app", 1)
	if st := e.state(t, pod, "app"); !st.Running || st.ExitCode != 0 || st.Reason != "" {
		t.Errorf("state after restart = %+v, want running", st)
	}
	waitFor(t, 10*time.Second, "new attempt's output", func() bool {
		return e.logs(t, pod, "app", LogOptions{Tail: -1}) == "line 1\nline 2\n"
	})
	if got := e.logs(t, pod, "app", LogOptions{Tail: -1, Previous: true}); got != "exiting with 1\n" {
		t.Errorf("previous logs = %q", got)
	}
	l, _ := e.rt.List(context.Background())
	if len(l) != 1 || l[0].Labels[LabelAttempt] != "1" || !l[0].Running {
		t.Errorf("List after restart = %+v, want one running container at attempt 1", l)
	}
	// The first attempt has no previous one.
	pod2, sb2 := e.newPod(t, "fresh", ctr("app", "sleep"))
	e.start(t, pod2, sb2, "app", 0)
	var b strings.Builder
	if err := e.rt.Logs(context.Background(), string(pod2.UID), "app", LogOptions{Previous: true}, &b); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("previous logs of a first attempt: err = %v, want not found", err)
	}
}

func TestStopContainer(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "stopper", ctr("graceful", "graceful"), ctr("stubborn", "sleep"))
	e.start(t, pod, sb, "graceful", 0)
	e.start(t, pod, sb, "stubborn", 0)
	uid := string(pod.UID)
	ctx := context.Background()
	waitFor(t, 10*time.Second, "the graceful container to set up its handler", func() bool {
		return strings.Contains(e.logs(t, pod, "graceful", LogOptions{Tail: -1}), "waiting")
	})

	t0 := time.Now()
	if err := e.rt.StopContainer(ctx, uid, "graceful", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("stopping a container that exits on SIGTERM took %s", d)
	}
	if st := e.state(t, pod, "graceful"); !st.Exists || st.Running || st.ExitCode != 0 || st.Reason != ReasonCompleted || st.FinishedAt.IsZero() {
		t.Errorf("state after graceful stop = %+v", st)
	}
	if !strings.Contains(e.logs(t, pod, "graceful", LogOptions{Tail: -1}), "got SIGTERM") {
		t.Error("the container did not get SIGTERM")
	}

	t0 = time.Now()
	if err := e.rt.StopContainer(ctx, uid, "stubborn", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Errorf("SIGKILL came after %s, before the grace period", d)
	}
	st := e.state(t, pod, "stubborn")
	if st.Running || st.ExitCode != 128+int(syscall.SIGKILL) || st.Reason != ReasonError {
		t.Errorf("state after kill = %+v, want exit 137 Error", st)
	}
	// The task is gone, the record stays; stopping again is a no-op.
	resp, err := e.client.TaskService().List(e.ctx(ctx), &tasksapi.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range resp.Tasks {
		if p.ID == st.ID {
			t.Errorf("task %s still exists after StopContainer", p.ID)
		}
	}
	if err := e.rt.StopContainer(ctx, uid, "stubborn", time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := e.rt.StopContainer(ctx, uid, "never", time.Second); err != nil {
		t.Errorf("stop of a container that does not exist: %v", err)
	}
}

func TestMemoryLimitAndOOM(t *testing.T) {
	e := newEnv(t)
	limited := ctr("limited", "sleep")
	limited.Resources.Limits = corev1.ResourceList{
		corev1.ResourceMemory: resource.MustParse("64Mi"),
		corev1.ResourceCPU:    resource.MustParse("250m"),
	}
	hog := ctr("hog", "alloc", "256")
	hog.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}
	pod, sb := e.newPod(t, "mem", limited, hog)
	e.start(t, pod, sb, "limited", 0)

	cg := filepath.Join(e.ns, ContainerID(pod, "limited"))
	for file, want := range map[string]string{
		"/sys/fs/cgroup/memory/" + cg + "/memory.limit_in_bytes": "67108864",
		"/sys/fs/cgroup/cpu/" + cg + "/cpu.cfs_quota_us":         "25000",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("read the container's cgroup: %v", err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}

	e.start(t, pod, sb, "hog", 0)
	st := e.waitExited(t, pod, "hog")
	if st.ExitCode != 137 || st.Reason != ReasonOOMKilled {
		t.Errorf("state of a container over its memory limit = %+v, want 137 OOMKilled", st)
	}
	// The reason survives the task's deletion.
	if err := e.rt.StopContainer(context.Background(), string(pod.UID), "hog", time.Second); err != nil {
		t.Fatal(err)
	}
	if st := e.state(t, pod, "hog"); st.Reason != ReasonOOMKilled || st.ExitCode != 137 {
		t.Errorf("state after task delete = %+v, want 137 OOMKilled", st)
	}
}

func TestSpecFromPodAndImage(t *testing.T) {
	e := newEnv(t)
	c := corev1.Container{
		Name:  "spec",
		Image: testImage,
		// command replaces the entrypoint, args are expanded from env.
		Command:    []string{"/bin/pitool"},
		Args:       []string{"lines", "$(N)"},
		WorkingDir: "/work",
		Env: []corev1.EnvVar{
			{Name: "N", Value: "3"},
			{Name: "OVERRIDE", Value: "pod"},
			{Name: "DERIVED", Value: "n=$(N) $$(N) $(MISSING)"},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		},
	}
	pod, sb := e.newPod(t, "specs", c)
	hostsFile := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hostsFile, []byte("10.244.0.9 specs\n"), 0o644)
	if err := e.rt.StartContainer(context.Background(), ContainerOptions{
		Pod: pod, Container: &pod.Spec.Containers[0], Sandbox: sb,
		Mounts: []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: hostsFile, Options: []string{"rbind", "ro"}}},
		Labels: map[string]string{"pilab.dev/account": "acme", LabelPod: "spoofed"},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "output", func() bool {
		return e.logs(t, pod, "spec", LogOptions{Tail: -1}) == "line 1\nline 2\nline 3\n"
	})
	_, env := e.exec(t, pod, "spec", "env")
	for _, want := range []string{"FROM_IMAGE=yes", "OVERRIDE=pod", "DERIVED=n=3 $(N) $(MISSING)", "POD_NAME=specs", "HOSTNAME=specs", "PATH=/bin"} {
		if !slices.Contains(strings.Split(env, "\n"), want) {
			t.Errorf("env lacks %s:\n%s", want, env)
		}
	}
	if _, out := e.exec(t, pod, "spec", "pwd"); out != "/work\n" {
		t.Errorf("working dir %q", out)
	}
	if _, out := e.exec(t, pod, "spec", "read", "/etc/hosts"); out != "10.244.0.9 specs\n" {
		t.Errorf("/etc/hosts = %q", out)
	}
	l, _ := e.rt.List(context.Background())
	if len(l) != 1 || l[0].Labels["pilab.dev/account"] != "acme" || l[0].Pod != "specs" {
		t.Errorf("labels %+v", l)
	}
	// Entrypoint kept, Cmd replaced by args.
	pod2, sb2 := e.newPod(t, "argsonly", ctr("a", "args", "x y"))
	e.start(t, pod2, sb2, "a", 0)
	e.waitExited(t, pod2, "a")
	if got := e.logs(t, pod2, "a", LogOptions{Tail: -1}); got != `["args" "x y"]`+"\n" {
		t.Errorf("args output %q", got)
	}
	// stdin: true keeps stdin open (and empty): cat waits instead of
	// reading EOF at once like a container without stdin.
	open := ctr("open", "cat")
	open.Stdin = true
	pod4, sb4 := e.newPod(t, "stdin", open, ctr("closed", "cat"))
	e.start(t, pod4, sb4, "open", 0)
	e.start(t, pod4, sb4, "closed", 0)
	if st := e.waitExited(t, pod4, "closed"); st.ExitCode != 0 {
		t.Errorf("cat without stdin: %+v", st)
	}
	if st := e.state(t, pod4, "open"); !st.Running {
		t.Errorf("cat with stdin: true is not running: %+v", st)
	}

	// A bad image or command fails the start and leaves nothing behind.
	bad := ctr("bad", "sleep")
	bad.Image = "pilab.test/nope:1"
	pod3, sb3 := e.newPod(t, "bad", bad, corev1.Container{Name: "nocmd", Image: testImage, Command: []string{"/bin/nope"}})
	for _, name := range []string{"bad", "nocmd"} {
		err := e.rt.StartContainer(context.Background(), ContainerOptions{Pod: pod3, Container: &pod3.Spec.Containers[slices.IndexFunc(pod3.Spec.Containers, func(c corev1.Container) bool { return c.Name == name })], Sandbox: sb3})
		if err == nil {
			t.Errorf("start of %s succeeded", name)
		}
		if st := e.state(t, pod3, name); st.Exists {
			t.Errorf("failed start of %s left a container: %+v (err %v)", name, st, err)
		}
	}
	sn := 0
	e.client.SnapshotService(snapshotter).Walk(e.ctx(context.Background()), func(_ context.Context, i snapshots.Info) error {
		sn++
		return nil
	}, podFilter(string(pod3.UID)))
	if sn != 0 {
		t.Errorf("failed starts left %d snapshots", sn)
	}
	evil := ctr("../../escape", "sleep")
	if err := e.rt.StartContainer(context.Background(), ContainerOptions{Pod: pod3, Container: &evil, Sandbox: sb3}); err == nil {
		t.Error("a container name with a path in it was accepted")
	}
}

func TestExec(t *testing.T) {
	e := newEnv(t)
	main := ctr("main", "sleep")
	main.Env = []corev1.EnvVar{{Name: "FROM_POD", Value: "1"}}
	pod, sb := e.newPod(t, "execs", main, ctr("done", "exit", "0"))
	e.start(t, pod, sb, "main", 0)
	uid := string(pod.UID)
	ctx := context.Background()

	run := func(o ExecOptions) (int, string, string, error) {
		var out, errb supervisortest.Buffer
		o.Stdout, o.Stderr = &out, &errb
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		code, err := e.rt.Exec(c, uid, "main", o)
		return code, out.String(), errb.String(), err
	}

	if code, out, _, err := run(ExecOptions{Cmd: []string{"/bin/pitool", "echo", "hi", "there"}}); err != nil || code != 0 || out != "hi there\n" {
		t.Errorf("echo: code %d out %q err %v", code, out, err)
	}
	if code, out, errOut, err := run(ExecOptions{Cmd: []string{"pitool", "stderr", "oops"}}); err != nil || code != 0 || out != "" || errOut != "oops\n" {
		t.Errorf("stderr: code %d out %q stderr %q err %v", code, out, errOut, err)
	}
	if code, _, _, err := run(ExecOptions{Cmd: []string{"pitool", "exit", "5"}}); err != nil || code != 5 {
		t.Errorf("exit 5: code %d err %v", code, err)
	}
	if code, out, _, err := run(ExecOptions{Cmd: []string{"pitool", "cat"}, Stdin: strings.NewReader("hello\nworld\n")}); err != nil || code != 0 || out != "hello\nworld\n" {
		t.Errorf("cat with stdin: code %d out %q err %v", code, out, err)
	}
	if _, out, _, _ := run(ExecOptions{Cmd: []string{"pitool", "env"}, Env: []string{"EXTRA=x", "FROM_POD=2"}}); !strings.Contains(out, "EXTRA=x\n") || !strings.Contains(out, "FROM_POD=2\n") || strings.Contains(out, "FROM_POD=1") {
		t.Errorf("exec env:\n%s", out)
	}
	if code, out, _, _ := run(ExecOptions{Cmd: []string{"pitool", "tty"}}); code != 4 || out != "tty=false\n" {
		t.Errorf("tty without TTY: code %d out %q", code, out)
	}

	// A real terminal: resize it, then send a line.
	inR, inW := io.Pipe()
	resize := make(chan Size, 1)
	resize <- Size{Width: 123, Height: 45}
	var out supervisortest.Buffer
	done := make(chan struct{})
	var code int
	var err error
	go func() {
		defer close(done)
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		code, err = e.rt.Exec(c, uid, "main", ExecOptions{Cmd: []string{"pitool", "tty"}, TTY: true, Stdin: inR, Stdout: &out, Resize: resize})
	}()
	waitFor(t, 10*time.Second, "the tty program to start", func() bool { return strings.Contains(out.String(), "tty=true") })
	time.Sleep(200 * time.Millisecond) // let the resize land before the line
	inW.Write([]byte("\n"))
	<-done
	inW.Close()
	if err != nil || code != 3 || !strings.Contains(out.String(), "size=123x45") {
		t.Errorf("tty exec: code %d err %v output %q; want 3 and size=123x45", code, err, out.String())
	}

	// Cancelling ctx kills the exec process and leaves only the main one.
	c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	code, err = e.rt.Exec(c, uid, "main", ExecOptions{Cmd: []string{"pitool", "sleep"}})
	if !errors.Is(err, context.DeadlineExceeded) || code != 137 || time.Since(t0) > 10*time.Second {
		t.Errorf("cancelled exec: code %d err %v after %s", code, err, time.Since(t0))
	}
	pids, perr := e.client.TaskService().ListPids(e.ctx(ctx), &tasksapi.ListPidsRequest{ContainerID: ContainerID(pod, "main")})
	if perr != nil || len(pids.Processes) != 1 {
		t.Errorf("processes in the container after the cancelled exec: %v %v", pids, perr)
	}
	if st := e.state(t, pod, "main"); !st.Running {
		t.Errorf("the container died with its exec: %+v", st)
	}

	if _, _, _, err := run(ExecOptions{Cmd: []string{"/bin/nope"}}); err == nil {
		t.Error("exec of a missing binary succeeded")
	}
	e.start(t, pod, sb, "done", 0)
	e.waitExited(t, pod, "done")
	if _, err := e.rt.Exec(ctx, uid, "done", ExecOptions{Cmd: []string{"pitool", "echo"}}); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("exec in an exited container: %v", err)
	}
	if _, err := e.rt.Exec(ctx, uid, "ghost", ExecOptions{Cmd: []string{"pitool", "echo"}}); err == nil {
		t.Error("exec in a missing container succeeded")
	}
}

func TestLogsTailAndFollow(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "logger", ctr("lines", "lines", "10"), ctr("ticker", "ticker", "a"))
	e.start(t, pod, sb, "lines", 0)
	var all string
	waitFor(t, 10*time.Second, "10 lines", func() bool {
		all = e.logs(t, pod, "lines", LogOptions{Tail: -1})
		return strings.Count(all, "\n") == 10
	})
	if !strings.HasPrefix(all, "line 1\nline 2\n") || !strings.HasSuffix(all, "line 10\n") {
		t.Errorf("all logs %q", all)
	}
	for n, want := range map[int]string{0: "", 1: "line 10\n", 3: "line 8\nline 9\nline 10\n", 10: all, 50: all} {
		if got := e.logs(t, pod, "lines", LogOptions{Tail: n}); got != want {
			t.Errorf("tail %d = %q, want %q", n, got, want)
		}
	}

	e.start(t, pod, sb, "ticker", 0)
	ctx, cancel := context.WithCancel(context.Background())
	var out supervisortest.Buffer
	done := make(chan error, 1)
	go func() { done <- e.rt.Logs(ctx, string(pod.UID), "ticker", LogOptions{Follow: true, Tail: 1}, &out) }()
	waitFor(t, 10*time.Second, "followed output", func() bool { return strings.Contains(out.String(), "a 5\n") })
	pod.Spec.Containers[1].Args = []string{"ticker", "b"}
	e.start(t, pod, sb, "ticker", 1)
	waitFor(t, 10*time.Second, "output of the restarted container", func() bool { return strings.Contains(out.String(), "b 5\n") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end with its context")
	}
	got := out.String()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if strings.HasPrefix(lines[0], "a 0") && len(lines) > 1 && !strings.HasPrefix(lines[1], "a 1") {
		t.Errorf("tail 1 followed: %q", got)
	}
	ia, ib := strings.LastIndex(got, "\na "), strings.Index(got, "b 0\n")
	if ib < 0 || ia > ib {
		t.Errorf("followed output is not the first attempt then the second from its start:\n%s", got)
	}
	// No line is cut or repeated within an attempt.
	for prefix, seen := range map[string]int{"a": -1, "b": -1} {
		for _, l := range lines {
			if p, n, _ := strings.Cut(l, " "); p == prefix {
				i, err := strconv.Atoi(n)
				if err != nil || (seen >= 0 && i != seen+1) {
					t.Errorf("line %q after %s %d", l, prefix, seen)
				}
				seen = i
			}
		}
	}
	var b strings.Builder
	if err := e.rt.Logs(context.Background(), string(pod.UID), "nothing", LogOptions{}, &b); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("logs of a container never started: %v", err)
	}
}

func TestRemovePodLeavesNothing(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "doomed", ctr("a", "sleep"), ctr("b", "ticker", "x"), ctr("c", "exit", "2"))
	other, osb := e.newPod(t, "survivor", ctr("a", "sleep"))
	// Leftovers of a crash: a snapshot under a container's key with no
	// container (start must replace it) and an orphan snapshot of the pod
	// (RemovePod must find it).
	// A lease holds them, as the lease of a NewContainer cut short by a
	// crash would, so garbage collection cannot clean up for us.
	ctx := context.Background()
	lease, err := e.client.LeasesService().Create(e.ctx(ctx), leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.client.LeasesService().Delete(e.ctx(ctx), lease) })
	sn := e.client.SnapshotService(snapshotter)
	for _, key := range []string{ContainerID(pod, "a"), "orphan-of-" + string(pod.UID)} {
		if _, err := sn.Prepare(leases.WithLease(e.ctx(ctx), lease.ID), key, "", snapshots.WithLabels(map[string]string{LabelPodUID: string(pod.UID)})); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"a", "b", "c"} {
		e.start(t, pod, sb, c, 0)
	}
	e.start(t, other, osb, "a", 0)
	e.waitExited(t, pod, "c")
	// An exec still running when the pod goes.
	go e.rt.Exec(context.Background(), string(pod.UID), "a", ExecOptions{Cmd: []string{"pitool", "sleep"}})
	ids := []string{ContainerID(pod, "a"), ContainerID(pod, "b"), ContainerID(pod, "c")}
	waitFor(t, 10*time.Second, "rootfs mounts", func() bool { return len(mountsContaining(t, ids[0])) > 0 })

	if err := e.rt.RemovePod(ctx, string(pod.UID)); err != nil {
		t.Fatal(err)
	}
	l, err := e.rt.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].PodUID != string(other.UID) || !l[0].Running {
		t.Errorf("containers after RemovePod: %+v; want only the other pod's", l)
	}
	cs, _ := e.client.ContainerService().List(e.ctx(ctx))
	tasks, _ := e.client.TaskService().List(e.ctx(ctx), &tasksapi.ListTasksRequest{})
	if len(cs) != 1 || len(tasks.Tasks) != 1 {
		t.Errorf("%d containers and %d tasks in the namespace, want 1 each", len(cs), len(tasks.Tasks))
	}
	var snaps []string
	sn.Walk(e.ctx(ctx), func(_ context.Context, i snapshots.Info) error {
		if i.Kind == snapshots.KindActive {
			snaps = append(snaps, i.Name)
		}
		return nil
	})
	if len(snaps) != 1 || snaps[0] != ContainerID(other, "a") {
		t.Errorf("active snapshots after RemovePod: %v, want only the other pod's", snaps)
	}
	for _, id := range ids {
		if m := mountsContaining(t, id); len(m) > 0 {
			t.Errorf("mounts of %s left: %v", id, m)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", e.ns, id)); !os.IsNotExist(err) {
			t.Errorf("cgroup of %s left (%v)", id, err)
		}
	}
	if err := e.rt.RemovePod(ctx, string(pod.UID)); err != nil {
		t.Errorf("second RemovePod: %v", err)
	}

	if err := e.rt.RemoveSandbox(string(pod.UID)); err != nil {
		t.Fatal(err)
	}
	if m := mountsContaining(t, sb.Dir); len(m) > 0 {
		t.Errorf("mounts left under the sandbox: %v", m)
	}
	if _, err := os.Stat(sb.Dir); !os.IsNotExist(err) {
		t.Errorf("sandbox dir left: %v", err)
	}
	if err := e.rt.RemoveSandbox(string(pod.UID)); err != nil {
		t.Errorf("second RemoveSandbox: %v", err)
	}
	if err := e.rt.RemoveSandbox("../.."); err == nil {
		t.Error("RemoveSandbox accepted a UID that leaves the pods dir")
	}
}

// Tasks keep running, and the runtime keeps working, across a containerd
// crash and restart; the exit stream re-subscribes by itself.
func TestSurvivesContainerdRestart(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "durable", ctr("ticker", "ticker", "t"), ctr("later", "exit", "7"))
	e.start(t, pod, sb, "ticker", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exits := e.rt.Exits(ctx)
	time.Sleep(200 * time.Millisecond)

	old := e.sup.Pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "containerd to be restarted", func() bool {
		p := e.sup.Pid()
		if p == 0 || p == old {
			return false
		}
		_, err := e.rt.State(ctx, string(pod.UID), "ticker")
		return err == nil
	})
	if st := e.state(t, pod, "ticker"); !st.Running {
		t.Fatalf("the task did not survive containerd's restart: %+v", st)
	}
	n := strings.Count(e.logs(t, pod, "ticker", LogOptions{Tail: -1}), "\n")
	waitFor(t, 5*time.Second, "more output", func() bool {
		return strings.Count(e.logs(t, pod, "ticker", LogOptions{Tail: -1}), "\n") > n
	})
	if code, out := e.exec(t, pod, "ticker", "hostname"); code != 0 || out != "durable\n" {
		t.Errorf("exec after restart: %d %q", code, out)
	}

	e.start(t, pod, sb, "later", 0)
	timeout := time.After(30 * time.Second)
	for {
		select {
		case x := <-exits:
			if x.Container == "later" {
				if x.ExitCode != 7 {
					t.Errorf("exit %+v, want code 7", x)
				}
				return
			}
		case <-timeout:
			t.Fatal("no exit event after containerd restarted")
		}
	}
}

// A task keeps running and logging when the process that started it (the
// pi daemon) dies: nothing of its I/O goes through the caller.
func TestTasksOutliveCaller(t *testing.T) {
	e := newEnv(t)
	pod, sb := e.newPod(t, "orphan", ctr("ticker", "ticker", "o"))
	spec, _ := json.Marshal(helperSpec{Address: e.sup.Address(), Namespace: e.ns, RunDir: e.runDir, Pod: pod, Sandbox: sb})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper: %v, want killed by SIGKILL\n%s", err, out)
	}
	if st := e.state(t, pod, "ticker"); !st.Running {
		t.Fatalf("the container died with its caller: %+v", st)
	}
	n := strings.Count(e.logs(t, pod, "ticker", LogOptions{Tail: -1}), "\n")
	waitFor(t, 5*time.Second, "output after the caller died", func() bool {
		return strings.Count(e.logs(t, pod, "ticker", LogOptions{Tail: -1}), "\n") > n+5
	})
	if code, out := e.exec(t, pod, "ticker", "hostname"); code != 0 || out != "orphan\n" {
		t.Errorf("exec from a new caller: %d %q", code, out)
	}
}

func TestContainerIDAndExpand(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Name, pod.UID = "web", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	if got := ContainerID(pod, "nginx"); got != "web-1b4e28ba-nginx" {
		t.Errorf("ContainerID = %s", got)
	}
	pod.Name = strings.Repeat("very-long.name", 20)
	long := strings.Repeat("c", 63)
	if got := ContainerID(pod, long); len(got) > maxIDLen || !strings.HasSuffix(got, "-1b4e28ba-"+long) || strings.Contains(got, "--") {
		t.Errorf("ContainerID for long names = %s (%d)", got, len(got))
	}
	env := envLookup([]string{"A=1", "B=two", "A=3"})
	for in, want := range map[string]string{
		"plain":      "plain",
		"$(A)":       "3",
		"x$(B)y":     "xtwoy",
		"$$(A)":      "$(A)",
		"$(NOPE)":    "$(NOPE)",
		"$(A":        "$(A",
		"a$b$":       "a$b$",
		"$$$$(B)":    "$$(B)",
		"$$$(B)":     "$two",
		"$(A)-$(B)$": "3-two$",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTailOffset(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	big := strings.Repeat("x", 40<<10) // longer than one read chunk
	body := "one\ntwo\n" + big + "\nlast"
	f.WriteString(body)
	for n, want := range map[int]string{-1: body, 0: "", 1: "last", 2: big + "\nlast", 3: "two\n" + big + "\nlast", 9: body} {
		off := tailOffset(f, n)
		if got := body[off:]; got != want {
			t.Errorf("tail %d starts at %d: %.20q..., want %.20q...", n, off, got, want)
		}
	}
	empty, _ := os.CreateTemp(t.TempDir(), "empty")
	if off := tailOffset(empty, 5); off != 0 {
		t.Errorf("tail of an empty file at %d", off)
	}
}
