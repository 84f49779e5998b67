package pods

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/images"
	"github.com/pilab/pi/runtime/images/podinfo"
	"github.com/pilab/pi/runtime/supervisor"
	"github.com/pilab/pi/runtime/supervisor/supervisortest"
)

// testImage is the image every test container runs: one static binary,
// testdata/pitool, built by the test and imported without a registry.
const testImage = "pilab.test/pitool:1"

var tool struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	// The podinfo lab image holds a copy of this test binary (the image
	// build takes the running executable), so it must serve as podinfo
	// when started under that name, as pi does.
	if filepath.Base(os.Args[0]) == "podinfo" {
		os.Exit(podinfo.Main(os.Args[1:]))
	}
	if spec := os.Getenv(helperEnv); spec != "" {
		runHelper(spec) // never returns
	}
	if os.Getenv(fakeShimEnv) != "" {
		// A stand-in for a leftover shim; see TestRecoversLeftoverShimBundle.
		for {
			time.Sleep(time.Hour)
		}
	}
	code := m.Run()
	if tool.dir != "" {
		os.RemoveAll(tool.dir)
	}
	os.Exit(code)
}

// buildTool compiles testdata/pitool once per test binary.
func buildTool(t testing.TB) string {
	tool.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(goruntime.GOROOT(), "bin", "go")
		}
		tool.dir, tool.err = os.MkdirTemp("", "pitool-")
		if tool.err != nil {
			return
		}
		tool.path = filepath.Join(tool.dir, "pitool")
		cmd := exec.Command(goBin, "build", "-o", tool.path, "./testdata/pitool/main.go")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			tool.err = fmt.Errorf("build testdata/pitool: %v\n%s", err, out)
		}
	})
	if tool.err != nil {
		t.Fatal(tool.err)
	}
	return tool.path
}

type testEnv struct {
	sup    *supervisor.Supervisor
	client *containerd.Client
	ns     string
	runDir string
	images *images.Store
	rt     *Runtime
}

// newEnv starts a private containerd with the test image and a Runtime on
// a fresh namespace. Cleanup removes every container the test left.
func newEnv(t testing.TB) *testEnv {
	t.Helper()
	toolPath := buildTool(t)
	sup := supervisortest.Start(t)
	e := &testEnv{sup: sup, client: sup.Client(), ns: netnstest.Lab()}
	e.runDir = t.TempDir()
	e.images = images.New(e.client, e.ns, filepath.Join(e.runDir, "images"))
	e.rt = New(e.client, e.ns, e.images, e.runDir)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.rt.RemoveAll(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := importImage(ctx, e.images, testImage, toolPath); err != nil {
		t.Fatalf("import test image: %v", err)
	}
	return e
}

func (e *testEnv) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, e.ns)
}

// importImage makes a one-layer image holding the tool as /bin/pitool.
func importImage(ctx context.Context, store *images.Store, ref, toolPath string) error {
	bin, err := os.ReadFile(toolPath)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range []string{"bin/", "etc/", "tmp/", "work/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"bin/pitool", 0o755, bin},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{"etc/group", 0o644, []byte("root:x:0:\n")},
	}
	for _, f := range files {
		tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.data))})
		tw.Write(f.data)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return store.ImportRootfs(ctx, ref, &layer, ocispec.ImageConfig{
		Entrypoint: []string{"/bin/pitool"},
		Cmd:        []string{"sleep"},
		Env:        []string{"PATH=/bin", "FROM_IMAGE=yes", "OVERRIDE=image"},
		WorkingDir: "/",
	}, nil)
}

// newNetns makes a named network namespace with loopback up, standing in for
// the one the pod controller would make, and deletes it in cleanup.
func newNetns(t testing.TB, name string) string {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: NewNamed moves this thread into the new netns.
		goruntime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bring up lo in netns %s: %v", name, err)
	}
	return filepath.Join("/var/run/netns", name)
}

var podSeq struct {
	sync.Mutex
	n int
}

// newPod makes a pod object with a fresh UID, its netns and sandbox; cleanup
// removes its containers, sandbox and netns, and checks nothing is left.
func (e *testEnv) newPod(t testing.TB, name string, cs ...corev1.Container) (*corev1.Pod, Sandbox) {
	t.Helper()
	podSeq.Lock()
	podSeq.n++
	n := podSeq.n
	podSeq.Unlock()
	uid := fmt.Sprintf("%08x-%s-4000-8000-000000000000", n, e.ns[1:5])
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)},
		Spec:       corev1.PodSpec{Containers: cs},
	}
	nsPath := newNetns(t, fmt.Sprintf("%s-pod%d", e.ns, n))
	sb, err := e.rt.EnsureSandbox(pod, nsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.rt.RemovePod(ctx, uid); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := e.rt.RemoveSandbox(uid); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return pod, sb
}

func (e *testEnv) start(t testing.TB, pod *corev1.Pod, sb Sandbox, name string, attempt int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range pod.Spec.Containers {
		if c := &pod.Spec.Containers[i]; c.Name == name {
			if err := e.rt.StartContainer(ctx, ContainerOptions{Pod: pod, Container: c, Sandbox: sb, Attempt: attempt}); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("pod %s has no container %s", pod.Name, name)
}

// ctr is a container of the test image running pitool with args.
func ctr(name string, args ...string) corev1.Container {
	return corev1.Container{Name: name, Image: testImage, Args: args}
}

func (e *testEnv) state(t testing.TB, pod *corev1.Pod, name string) ContainerState {
	t.Helper()
	st, err := e.rt.State(context.Background(), string(pod.UID), name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitExited waits until the container's main process has exited.
func (e *testEnv) waitExited(t testing.TB, pod *corev1.Pod, name string) ContainerState {
	t.Helper()
	var st ContainerState
	waitFor(t, 30*time.Second, "container "+name+" to exit", func() bool {
		st = e.state(t, pod, name)
		return st.Exists && !st.Running && !st.FinishedAt.IsZero()
	})
	return st
}

func (e *testEnv) logs(t testing.TB, pod *corev1.Pod, name string, o LogOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := e.rt.Logs(context.Background(), string(pod.UID), name, o, &b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// exec runs pitool with args without stdin and returns its exit code and
// stdout.
func (e *testEnv) exec(t testing.TB, pod *corev1.Pod, name string, args ...string) (int, string) {
	t.Helper()
	cmd := append([]string{"pitool"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := e.rt.Exec(ctx, string(pod.UID), name, ExecOptions{Cmd: cmd, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("exec %v: %v (stderr %q)", cmd, err, errb.String())
	}
	return code, out.String()
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsContaining lists mount points (in this mount namespace) whose path
// contains s.
func mountsContaining(t testing.TB, s string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.Contains(f[4], s) {
			out = append(out, f[4])
		}
	}
	return out
}

// helperEnv, when set, makes the test binary a stand-in pi daemon: it starts
// one container as described by the JSON value and then kills itself.
const helperEnv = "PODS_TEST_HELPER"

type helperSpec struct {
	Address, Namespace, RunDir string
	Pod                        *corev1.Pod
	Sandbox                    Sandbox
}

func runHelper(spec string) {
	var h helperSpec
	if err := json.Unmarshal([]byte(spec), &h); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	client, err := containerd.New(h.Address)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	rt := New(client, h.Namespace, images.New(client, h.Namespace, filepath.Join(h.RunDir, "images")), h.RunDir)
	if err := rt.StartContainer(context.Background(), ContainerOptions{Pod: h.Pod, Container: &h.Pod.Spec.Containers[0], Sandbox: h.Sandbox}); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	// Die the hard way: no deferred cleanup, connections cut.
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
