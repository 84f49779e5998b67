package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/registry"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// images says every image is in the lab.
type images struct{}

func (images) Resolve(context.Context, string) (containerd.Image, error) { return nil, nil }

// backend is the daemon's side without containers: deletes leave the store at once, exec runs a few
// commands in the test, logs answer what was asked.
type backend struct{ st *store.Store }

func (b backend) Delete(_ context.Context, account string, k api.Kind, name string, _ metav1.Object, _ server.DeleteOptions) error {
	return b.st.Delete(k, account, name)
}
func (backend) Extra() http.Handler { return http.NotFoundHandler() }

func (backend) ExecInContainer(_ context.Context, pod *corev1.Pod, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	switch cmd[0] {
	case "whoami":
		fmt.Fprintf(out, "%s in %s/%s\n", api.AccountOf(pod), pod.Name, container)
	case "cat":
		io.Copy(out, in)
	case "fail":
		fmt.Fprintln(errw, "failing")
		return utilexec.CodeExitError{Err: errors.New("exit 3"), Code: 3}
	}
	return nil
}
func (backend) AttachContainer(context.Context, *corev1.Pod, string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommand.TerminalSize) error {
	return errors.New("no attach here")
}
func (backend) PortForward(context.Context, *corev1.Pod, int32, io.ReadWriteCloser) error {
	return errors.New("no port-forward here")
}
func (backend) PodLogs(_ context.Context, pod *corev1.Pod, opts *corev1.PodLogOptions, w io.Writer) error {
	tail := int64(-1)
	if opts.TailLines != nil {
		tail = *opts.TailLines
	}
	fmt.Fprintf(w, "log of %s/%s tail %d\n", pod.Name, opts.Container, tail)
	return nil
}

// lab serves the lab's API on a unix socket, as the daemon does, with accounts default and alice.
func lab(t *testing.T) (string, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(registry.Config{Store: st, Images: images{}, SequentialIPs: true})
	for _, a := range []string{"default", "alice"} {
		if err := reg.Create(context.Background(), "", &api.Account{ObjectMeta: metav1.ObjectMeta{Name: a}}, false); err != nil {
			t.Fatal(err)
		}
	}
	srv := &server.Server{Store: st, Registry: reg, Backend: backend{st}}
	sock := filepath.Join(dir, "pi.sock")
	l, err := srv.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return sock, st
}

var podKind, _ = api.LookupKind("Pod")

func pod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
}

func names(objs []metav1.Object) string {
	var n []string
	for _, o := range objs {
		n = append(n, api.AccountOf(o)+"/"+o.GetName())
	}
	return strings.Join(n, " ")
}

// TestClientOnTheKubernetesAPI: the client's verbs go through the lab's Kubernetes API, each for its
// account, and what it reads is marked with the account it belongs to.
func TestClientOnTheKubernetesAPI(t *testing.T) {
	sock, st := lab(t)
	ctx := t.Context()
	alice, def := New(sock, "alice"), New(sock, "")
	if _, err := alice.Create(ctx, pod("web")); err != nil {
		t.Fatal(err)
	}
	if _, err := def.Create(ctx, pod("db")); err != nil {
		t.Fatal(err)
	}
	if l, _ := alice.List(ctx, podKind, ListOptions{}); names(l) != "alice/web" {
		t.Errorf("alice lists %q", names(l))
	}
	if l, _ := def.List(ctx, podKind, ListOptions{AllAccounts: true}); names(l) != "alice/web default/db" {
		t.Errorf("all accounts: %q", names(l))
	}
	if _, err := def.Get(ctx, podKind, "web"); !IsNotFound(err) {
		t.Errorf("default gets alice's pod: %v, want NotFound", err)
	}
	if _, err := alice.Create(ctx, pod("web")); !IsAlreadyExists(err) {
		t.Errorf("web again: %v, want AlreadyExists", err)
	}

	// A replace without a resourceVersion is the new spec; the stored object keeps its account.
	o, err := alice.Get(ctx, podKind, "web")
	if err != nil {
		t.Fatal(err)
	}
	o.SetLabels(map[string]string{"tier": "web"})
	o.SetResourceVersion("")
	if _, err := alice.Replace(ctx, o); err != nil {
		t.Fatal(err)
	}
	if l, _ := alice.List(ctx, podKind, ListOptions{LabelSelector: "tier=web"}); names(l) != "alice/web" {
		t.Errorf("tier=web: %q", names(l))
	}

	// A set is all or none, and says which object was refused.
	err = alice.CreateSet(ctx, []metav1.Object{pod("a"), pod("a")}, false)
	var ae *APIError
	if !errors.As(err, &ae) || len(ae.Items) != 1 || ae.Items[0].Index != 1 {
		t.Errorf("a set with a pod twice: %#v", err)
	}
	if _, err := alice.Get(ctx, podKind, "a"); !IsNotFound(err) {
		t.Errorf("a refused set left pod a: %v", err)
	}

	// A watch starts with what there is, then follows changes, of its account only.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	events, err := alice.Watch(wctx, podKind, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() string {
		select {
		case ev := <-events:
			o, _ := api.Decode(podKind, ev.Object)
			return ev.Type + " " + api.AccountOf(o) + "/" + o.GetName()
		case <-wctx.Done():
			return "nothing"
		}
	}
	if got := next(); got != "ADDED alice/web" {
		t.Errorf("first event %q", got)
	}
	def.Create(ctx, pod("other"))
	alice.Create(ctx, pod("new"))
	if got := next(); got != "ADDED alice/new" {
		t.Errorf("after two creates: %q", got)
	}
	if err := alice.Delete(ctx, podKind, "new", false); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "DELETED alice/new" {
		t.Errorf("after the delete: %q", got)
	}

	// Streams: exec with stdin and an exit code, logs with their options, in a running container.
	if _, err := st.Mutate(podKind, "alice", "web", func(o metav1.Object) error {
		p := o.(*corev1.Pod)
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, err := alice.Exec(ctx, "web", ExecOptions{Command: []string{"whoami"}, Stdout: &out, Stderr: &errOut})
	if err != nil || code != 0 || out.String() != "alice in web/c\n" {
		t.Errorf("exec whoami: %d %v %q", code, err, out.String())
	}
	out.Reset()
	code, err = alice.Exec(ctx, "web", ExecOptions{Command: []string{"cat"}, Stdin: strings.NewReader("to the end\n"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "to the end\n" {
		t.Errorf("exec cat: %d %v %q", code, err, out.String())
	}
	code, err = alice.Exec(ctx, "web", ExecOptions{Command: []string{"fail"}, Stdout: &out, Stderr: &errOut})
	if err != nil || code != 3 || !strings.Contains(errOut.String(), "failing") {
		t.Errorf("exec fail: %d %v %q", code, err, errOut.String())
	}
	if _, err := def.Exec(ctx, "web", ExecOptions{Command: []string{"whoami"}, Stdout: &out}); !IsNotFound(err) {
		t.Errorf("default execs in alice's pod: %v, want NotFound", err)
	}
	out.Reset()
	if err := alice.Logs(ctx, "web", LogOptions{Tail: 5}, &out); err != nil || out.String() != "log of web/c tail 5\n" {
		t.Errorf("logs: %v %q", err, out.String())
	}

	// The lab's own paths: a refused one is an APIError with the lab's message.
	if err := alice.Do(ctx, "GET", "/x/nothing", nil, nil, nil); err == nil {
		t.Error("GET /x/nothing answered")
	}
}

// TestDaemonDown: no daemon is an error that says how to start one.
func TestDaemonDown(t *testing.T) {
	_, err := New(filepath.Join(t.TempDir(), "pi.sock"), "").List(t.Context(), podKind, ListOptions{})
	var dd *DaemonDownError
	if !errors.As(err, &dd) || !strings.Contains(err.Error(), "pi up") {
		t.Errorf("no daemon: %v", err)
	}
}
