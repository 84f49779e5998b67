package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	clientexec "k8s.io/client-go/util/exec"
	utilexec "k8s.io/utils/exec"
)

// fakeStreams is a Backend whose containers are Go functions: exec echoes, port-forward answers, logs
// print the options they got.
type fakeStreams struct {
	Backend // nil: deletes and extras are not used here
	logOpts chan *corev1.PodLogOptions
}

func (f *fakeStreams) ExecInContainer(ctx context.Context, pod *corev1.Pod, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	switch cmd[0] {
	case "echo":
		fmt.Fprintf(out, "%s/%s: %s\n", pod.Name, container, strings.Join(cmd[1:], " "))
	case "cat":
		io.Copy(out, in)
	case "fail":
		fmt.Fprintln(errw, "failing")
		return utilexec.CodeExitError{Err: errors.New("exit 3"), Code: 3}
	case "size":
		select {
		case s := <-resize:
			fmt.Fprintf(out, "%d %d tty=%v\n", s.Height, s.Width, tty)
		case <-time.After(5 * time.Second):
			return errors.New("no terminal size came")
		}
	}
	return nil
}

func (f *fakeStreams) AttachContainer(ctx context.Context, pod *corev1.Pod, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	fmt.Fprintf(out, "attached to %s\n", container)
	return nil
}

func (f *fakeStreams) PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	line, _ := io.ReadAll(io.LimitReader(stream, 5))
	fmt.Fprintf(stream, "port %d of %s got %q", port, pod.Name, line)
	return nil
}

func (f *fakeStreams) PodLogs(ctx context.Context, pod *corev1.Pod, opts *corev1.PodLogOptions, w io.Writer) error {
	f.logOpts <- opts
	fmt.Fprintf(w, "log of %s\n", opts.Container)
	return nil
}

// streamLab is kubeLab with a stream backend and pods: "web" (container c running), "two" (a and b
// running), "new" (c waiting in ContainerCreating), and alice's "secret".
func streamLab(t *testing.T) (*fakeStreams, *httptest.Server) {
	t.Helper()
	st, err := store.Open(t.TempDir() + "/state.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, a := range []string{"default", "alice"} {
		if err := st.Create(&api.Account{ObjectMeta: metav1.ObjectMeta{Name: a}, Status: api.AccountStatus{Network: "10.244.0.0/24"}}); err != nil {
			t.Fatal(err)
		}
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	for _, p := range []struct {
		account, name string
		containers    []string
		state         corev1.ContainerState
		phase         corev1.PodPhase
	}{
		{"default", "web", []string{"c"}, running, corev1.PodRunning},
		{"default", "two", []string{"a", "b"}, running, corev1.PodRunning},
		{"default", "new", []string{"c"}, waiting, corev1.PodPending},
		{"alice", "secret", []string{"c"}, running, corev1.PodRunning},
	} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name}, Status: corev1.PodStatus{Phase: p.phase}}
		for _, c := range p.containers {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "nginx"})
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{Name: c, State: p.state})
		}
		api.SetAccount(pod, p.account)
		if err := st.Create(pod); err != nil {
			t.Fatal(err)
		}
	}
	fb := &fakeStreams{logOpts: make(chan *corev1.PodLogOptions, 10)}
	srv := httptest.NewServer((&Server{Store: st, Backend: fb}).KubeHandler())
	t.Cleanup(srv.Close)
	return fb, srv
}

func execURL(t *testing.T, base, pod string, opts *corev1.PodExecOptions) *url.URL {
	t.Helper()
	cs := clientset(t, base, "")
	return cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(pod).SubResource("exec").
		VersionedParams(opts, scheme.ParameterCodec).URL()
}

type sizeQueue struct{ sent bool }

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if q.sent {
		select {} // one size is all this test sends; the session ends the goroutine
	}
	q.sent = true
	return &remotecommand.TerminalSize{Width: 101, Height: 33}
}

// TestKubeStreamExec runs commands through both of client-go's executors: SPDY (the kubelet's handler
// directly) and WebSocket v5 (the apiserver's translator in front of it). Each carries stdout, stderr,
// stdin to its end, a non-zero exit code, and a terminal size.
func TestKubeStreamExec(t *testing.T) {
	_, srv := streamLab(t)
	cfg := &rest.Config{Host: srv.URL}
	executors := map[string]func(u *url.URL) (remotecommand.Executor, error){
		"spdy": func(u *url.URL) (remotecommand.Executor, error) { return remotecommand.NewSPDYExecutor(cfg, "POST", u) },
		"websocket": func(u *url.URL) (remotecommand.Executor, error) {
			return remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
		},
	}
	for name, newExec := range executors {
		t.Run(name, func(t *testing.T) {
			run := func(opts *corev1.PodExecOptions, so remotecommand.StreamOptions) error {
				ex, err := newExec(execURL(t, srv.URL, "web", opts))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return ex.StreamWithContext(ctx, so)
			}
			var out, errOut bytes.Buffer
			if err := run(&corev1.PodExecOptions{Command: []string{"echo", "hi", "there"}, Stdout: true, Stderr: true},
				remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
				t.Fatalf("echo: %v", err)
			}
			if out.String() != "web/c: hi there\n" {
				t.Errorf("echo: stdout %q, want %q", out.String(), "web/c: hi there\n")
			}

			out.Reset()
			if err := run(&corev1.PodExecOptions{Command: []string{"cat"}, Stdin: true, Stdout: true},
				remotecommand.StreamOptions{Stdin: strings.NewReader("to the end\n"), Stdout: &out}); err != nil {
				t.Fatalf("cat: %v", err)
			}
			if out.String() != "to the end\n" {
				t.Errorf("cat: stdout %q (stdin's end must reach the command)", out.String())
			}

			errOut.Reset()
			err := run(&corev1.PodExecOptions{Command: []string{"fail"}, Stdout: true, Stderr: true},
				remotecommand.StreamOptions{Stdout: io.Discard, Stderr: &errOut})
			var ce clientexec.CodeExitError
			if !errors.As(err, &ce) || ce.Code != 3 {
				t.Errorf("fail: error %v (%T), want a CodeExitError with code 3", err, err)
			}
			if errOut.String() != "failing\n" {
				t.Errorf("fail: stderr %q", errOut.String())
			}

			out.Reset()
			if err := run(&corev1.PodExecOptions{Command: []string{"size"}, Stdin: true, Stdout: true, TTY: true},
				remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: &out, Tty: true, TerminalSizeQueue: &sizeQueue{}}); err != nil {
				t.Fatalf("size: %v", err)
			}
			if out.String() != "33 101 tty=true\n" {
				t.Errorf("size: %q, want the terminal's 33 rows and 101 columns", out.String())
			}
		})
	}
}

// TestKubeStreamErrors: what the apiserver refuses before any upgrade, as a metav1.Status.
func TestKubeStreamErrors(t *testing.T) {
	fb, srv := streamLab(t)
	cs := clientset(t, srv.URL, "")
	logs := func(pod string, o *corev1.PodLogOptions) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rc, err := cs.CoreV1().Pods("default").GetLogs(pod, o).Stream(ctx)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	for _, c := range []struct {
		pod  string
		opts *corev1.PodLogOptions
		code int32
		msg  string
	}{
		{"web", &corev1.PodLogOptions{Container: "x"}, 400, "container x is not valid for pod web"},
		{"two", &corev1.PodLogOptions{}, 400, "a container name must be specified for pod two, choose one of: [a b]"},
		{"new", &corev1.PodLogOptions{}, 400, `container "c" in pod "new" is waiting to start: ContainerCreating`},
		{"web", &corev1.PodLogOptions{Previous: true}, 400, `previous terminated container "c" in pod "web" not found`},
		{"secret", &corev1.PodLogOptions{}, 404, `pods "secret" not found`},
		{"web", &corev1.PodLogOptions{TailLines: ptr(int64(-1))}, 400, "tailLines: must be greater than or equal to 0"},
	} {
		_, err := logs(c.pod, c.opts)
		var se *apierrors.StatusError
		if !errors.As(err, &se) || se.ErrStatus.Code != c.code || !strings.Contains(se.ErrStatus.Message, c.msg) {
			t.Errorf("logs %s %+v: %v, want %d %q", c.pod, c.opts, err, c.code, c.msg)
		}
	}
	// A good request's options reach the backend.
	since := int64(10)
	out, err := logs("two", &corev1.PodLogOptions{Container: "b", Follow: true, TailLines: ptr(int64(1)), Timestamps: true,
		SinceSeconds: &since, LimitBytes: ptr(int64(100))})
	if err != nil || out != "log of b\n" {
		t.Fatalf("logs two -c b: %q, %v", out, err)
	}
	o := <-fb.logOpts
	if !o.Follow || *o.TailLines != 1 || !o.Timestamps || *o.SinceSeconds != 10 || *o.LimitBytes != 100 || o.Container != "b" {
		t.Errorf("log options at the backend: %+v", o)
	}

	// Exec into a pod that is not running yet, or of another account, or without a command.
	cfg := &rest.Config{Host: srv.URL}
	for _, c := range []struct {
		pod  string
		opts *corev1.PodExecOptions
		msg  string
	}{
		{"new", &corev1.PodExecOptions{Command: []string{"echo"}, Stdout: true}, `container "c" in pod "new" is waiting to start: ContainerCreating`},
		{"secret", &corev1.PodExecOptions{Command: []string{"echo"}, Stdout: true}, `pods "secret" not found`},
		{"web", &corev1.PodExecOptions{Stdout: true}, "you must specify at least one command for the container"},
		{"web", &corev1.PodExecOptions{Command: []string{"echo"}, Container: "x", Stdout: true}, "container x is not valid for pod web"},
	} {
		ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", execURL(t, srv.URL, c.pod, c.opts))
		if err != nil {
			t.Fatal(err)
		}
		err = ex.StreamWithContext(context.Background(), remotecommand.StreamOptions{Stdout: io.Discard})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("exec %s %+v: %v, want %q", c.pod, c.opts, err, c.msg)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestKubeStreamPortForward forwards a local port through client-go's port-forwarder, over SPDY and over
// SPDY-in-WebSocket (kubectl 1.31+), and sees the backend's answer for the pod's port.
func TestKubeStreamPortForward(t *testing.T) {
	_, srv := streamLab(t)
	cfg := &rest.Config{Host: srv.URL}
	u := clientset(t, srv.URL, "").CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("web").SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, dialer := range map[string]httpstream.Dialer{"spdy": spdyDialer, "websocket": wsDialer} {
		t.Run(name, func(t *testing.T) {
			stop, ready := make(chan struct{}), make(chan struct{})
			// The forwarder writes from a goroutine per connection.
			var out, errOut lockedBuffer
			pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, &out, &errOut)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- pf.ForwardPorts() }()
			defer close(stop)
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("port-forward ended before it was ready: %v (%s)", err, errOut.String())
			case <-time.After(10 * time.Second):
				t.Fatal("port-forward not ready after 10s")
			}
			ports, err := pf.GetPorts()
			if err != nil {
				t.Fatal(err)
			}
			// Two connections through one forward: each is a stream pair of its own.
			for i := 0; i < 2; i++ {
				c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprint(c, "hello")
				got, err := io.ReadAll(c)
				c.Close()
				if want := `port 8080 of web got "hello"`; string(got) != want {
					t.Errorf("connection %d: %q (%v), want %q", i, got, err, want)
				}
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writers a port-forwarder has.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
