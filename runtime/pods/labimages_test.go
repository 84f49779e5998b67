package pods

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/images"
)

// imagesWorkDir is the image build cache shared with runtime/images' tests
// (same variable, same default), so the Debian packages are fetched once.
func imagesWorkDir(t *testing.T) string {
	d := os.Getenv("PI_TEST_IMAGES_WORKDIR")
	if d == "" {
		d = "/var/tmp/pilab-test-images"
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// execIn runs cmd in a pod's container and returns its exit code and its
// stdout followed by its stderr (two buffers: Exec writes them from two
// goroutines).
func (e *testEnv) execIn(t *testing.T, pod *corev1.Pod, container string, cmd ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code, err := e.rt.Exec(ctx, string(pod.UID), container, ExecOptions{Cmd: cmd, Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("exec %v in %s: %v (output %q %q)", cmd, container, err, out.String(), errOut.String())
	}
	return code, out.String() + errOut.String()
}

// The lab's own images run, serve and ping under the hardened spec
// (default seccomp profile, no NET_RAW or MKNOD, pids and memory limits):
// the defaults of defect 12 must not break what learners run.
func TestLabImagesRunHardened(t *testing.T) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		netnstest.Missing(t, "mmdebstrap not installed (apt-get install mmdebstrap)")
	}
	e := newEnv(t)
	store := images.New(e.client, e.ns, imagesWorkDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	if err := store.Build(ctx, []string{"busybox", "nginx", "httpd", "podinfo"}, false, &progress); err != nil {
		t.Fatalf("build the lab images: %v\n%s", err, progress.String())
	}
	t.Logf("image build:\n%s", progress.String())

	type check struct {
		name string
		ctr  corev1.Container
		cmd  []string // run in the container until it exits 0
		want string   // in its output
	}
	checks := []check{
		{"nginx", corev1.Container{Name: "nginx", Image: "nginx"},
			[]string{"curl", "-sS", "http://127.0.0.1/"}, "Welcome to nginx"},
		{"httpd", corev1.Container{Name: "httpd", Image: "httpd"},
			[]string{"curl", "-sS", "http://127.0.0.1/"}, "It works!"},
		{"podinfo", corev1.Container{Name: "podinfo", Image: "podinfo"},
			[]string{"wget", "-qO-", "http://127.0.0.1:9898/"}, "greetings from podinfo"},
		{"busybox", corev1.Container{Name: "busybox", Image: "busybox", Command: []string{"sleep", "3600"}},
			[]string{"ping", "-c", "1", "-W", "2", "127.0.0.1"}, "1 packets received"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			pod, sb := e.newPod(t, c.name, c.ctr)
			e.start(t, pod, sb, c.name, 0)
			var code int
			var out string
			deadline := time.Now().Add(30 * time.Second)
			for {
				if st := e.state(t, pod, c.name); !st.Running {
					t.Fatalf("%s exited: %+v; its log:\n%s", c.name, st, e.logs(t, pod, c.name, LogOptions{Tail: 20}))
				}
				code, out = e.execIn(t, pod, c.name, c.cmd...)
				if code == 0 && strings.Contains(out, c.want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s in %s: exit %d, output %q; want exit 0 and %q", strings.Join(c.cmd, " "), c.name, code, out, c.want)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if code, status := e.execIn(t, pod, c.name, "grep", "^Seccomp:", "/proc/1/status"); !strings.Contains(status, "Seccomp:\t2") {
				t.Errorf("%s's main process is not under a seccomp filter: grep /proc/1/status: exit %d %q", c.name, code, status)
			}
			// Stops (busybox sleep as PID 1 ignores SIGTERM: SIGKILL after 2 s).
			if err := e.rt.StopContainer(context.Background(), string(pod.UID), c.name, 2*time.Second); err != nil {
				t.Errorf("stop %s: %v", c.name, err)
			}
		})
	}
}
