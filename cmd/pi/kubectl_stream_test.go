package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	clientexec "k8s.io/client-go/util/exec"
)

// streamPods are the pods of TestKubectlStream: box counts a line a second; web is the lab's nginx.
const streamPods = `apiVersion: v1
kind: Pod
metadata:
  name: box
spec:
  containers:
  - name: box
    image: busybox
    command: [sh, -c, 'i=0; while :; do echo line-$i; i=$((i+1)); sleep 1; done']
---
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
`

// TestKubectlStream drives the pod streams of a real lab: client-go's SPDY and WebSocket executors (stdout,
// stderr, stdin to its end, exit code, a terminal's size), its port-forwarder to nginx, and logs (follow,
// tail, timestamps, since); then the real kubectl over loopback: exec over WebSocket and over SPDY with
// the exit code passed on, an interactive `exec -it` through a pty with a resize, port-forward (both
// protocols) and an HTTP GET through it, attach, `logs --tail 1`, and `cp` both ways.
func TestKubectlStream(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		requirePrivileged(t)
		t.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	lab := startLab(t)
	socket := filepath.Join("/run/pilab", lab, "pi.sock")
	mustPi(t, lab, "image", "build", "busybox", "nginx")
	c := piCmd(lab, "create", "-f", "-")
	c.Stdin = strings.NewReader(streamPods)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	mustPi(t, lab, "wait", "--for=condition=Ready", "pod/box", "pod/web", "--timeout=120s")
	server := forwardTCP(t, socket)
	cfg := &rest.Config{Host: server}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("client-go exec", func(t *testing.T) {
		for _, proto := range []string{"spdy", "websocket"} {
			newExec := func(o *corev1.PodExecOptions) remotecommand.Executor {
				// A new request each time: VersionedParams adds to the request it is called on.
				loc := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("box").SubResource("exec").
					VersionedParams(o, scheme.ParameterCodec).URL()
				var ex remotecommand.Executor
				var err error
				if proto == "spdy" {
					ex, err = remotecommand.NewSPDYExecutor(cfg, "POST", loc)
				} else {
					ex, err = remotecommand.NewWebSocketExecutor(cfg, "GET", loc.String())
				}
				if err != nil {
					t.Fatal(err)
				}
				return ex
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var out, errOut bytes.Buffer
			err := newExec(&corev1.PodExecOptions{Command: []string{"sh", "-c", "echo out; echo err >&2; cat; exit 3"}, Stdin: true, Stdout: true, Stderr: true}).
				StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("in\n"), Stdout: &out, Stderr: &errOut})
			var ce clientexec.CodeExitError
			if !errors.As(err, &ce) || ce.Code != 3 {
				t.Errorf("%s: exit: %v (%T), want code 3", proto, err, err)
			}
			if out.String() != "out\nin\n" || errOut.String() != "err\n" {
				t.Errorf("%s: stdout %q stderr %q, want \"out\\nin\\n\" and \"err\\n\" (stdin must reach cat and end)", proto, out.String(), errOut.String())
			}

			// The size is sent once the stream is up, as kubectl does; the command reads it a moment later.
			// Stdin stays open, as a terminal's does: its end would hang the terminal up (containerd's
			// shim closes the console when stdin closes, and the shell gets SIGHUP, exit 129).
			out.Reset()
			stdin, stdinW := io.Pipe()
			err = newExec(&corev1.PodExecOptions{Command: []string{"sh", "-c", "sleep 1; stty size"}, Stdin: true, Stdout: true, TTY: true}).
				StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Tty: true,
					TerminalSizeQueue: &fixedSize{size: remotecommand.TerminalSize{Width: 101, Height: 33}}})
			stdinW.Close()
			if err != nil || strings.TrimSpace(out.String()) != "33 101" {
				t.Errorf("%s: stty size in a TTY: %q, %v; want \"33 101\"", proto, out.String(), err)
			}
			cancel()
		}
	})

	t.Run("client-go port-forward", func(t *testing.T) {
		u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("web").SubResource("portforward").URL()
		transport, upgrader, err := spdy.RoundTripperFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		stop, ready := make(chan struct{}), make(chan struct{})
		defer close(stop)
		var errOut bytes.Buffer
		pf, err := portforward.NewOnAddresses(spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u),
			[]string{"127.0.0.1"}, []string{"0:80"}, stop, ready, io.Discard, &errOut)
		if err != nil {
			t.Fatal(err)
		}
		go pf.ForwardPorts()
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatalf("port-forward not ready: %s", errOut.String())
		}
		ports, _ := pf.GetPorts()
		httpGetNginx(t, fmt.Sprintf("http://127.0.0.1:%d/", ports[0].Local))
	})

	t.Run("client-go logs", func(t *testing.T) {
		// box has written a line a second since it started; give it a few.
		time.Sleep(4 * time.Second)
		logs := func(o *corev1.PodLogOptions) []string {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rc, err := cs.CoreV1().Pods("default").GetLogs("box", o).Stream(ctx)
			if err != nil {
				t.Fatalf("logs %+v: %v", o, err)
			}
			defer rc.Close()
			data, _ := io.ReadAll(rc)
			return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		}
		all := logs(&corev1.PodLogOptions{})
		if len(all) < 4 || all[0] != "line-0" {
			t.Fatalf("logs: %q, want line-0 and on", all)
		}
		if tail := logs(&corev1.PodLogOptions{TailLines: ptr(int64(1))}); len(tail) != 1 || !strings.HasPrefix(tail[0], "line-") {
			t.Errorf("tailLines 1: %q", tail)
		}
		stamped := logs(&corev1.PodLogOptions{Timestamps: true})
		re := regexp.MustCompile(`^(\S+) (line-\d+)$`)
		var times []time.Time
		for _, l := range stamped {
			m := re.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("timestamps: line %q is not \"TIME line-N\"", l)
			}
			ts, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatalf("timestamps: %q: %v", l, err)
			}
			times = append(times, ts)
		}
		// A line a second: consecutive lines' times are about a second apart, and the last is recent.
		for i := 1; i < len(times); i++ {
			if d := times[i].Sub(times[i-1]); d < 500*time.Millisecond || d > 1600*time.Millisecond {
				t.Errorf("timestamps: %q then %q: %v apart, want about 1s", stamped[i-1], stamped[i], d)
			}
		}
		if age := time.Since(times[len(times)-1]); age > 2*time.Second {
			t.Errorf("timestamps: the last line is %v old, want under 2s", age)
		}
		since := logs(&corev1.PodLogOptions{SinceSeconds: ptr(int64(2))})
		if len(since) < 1 || len(since) > 3 || len(since) >= len(logs(&corev1.PodLogOptions{})) {
			t.Errorf("sinceSeconds 2: %q, want the last two or three lines", since)
		}
		if lim := logs(&corev1.PodLogOptions{LimitBytes: ptr(int64(8))}); strings.Join(lim, "\n") != "line-0\nl" {
			t.Errorf("limitBytes 8: %q, want \"line-0\\nl\"", lim)
		}

		// follow: new lines arrive as they are written.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rc, err := cs.CoreV1().Pods("default").GetLogs("box", &corev1.PodLogOptions{Follow: true, TailLines: ptr(int64(0))}).Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		sc := bufio.NewScanner(rc)
		for i := 0; i < 2; i++ {
			if !sc.Scan() || !strings.HasPrefix(sc.Text(), "line-") {
				t.Fatalf("follow: line %d: %q, %v", i, sc.Text(), sc.Err())
			}
		}
	})

	env := append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
	kc := func(extraEnv []string, args ...string) *exec.Cmd {
		c := exec.Command(kubectl, append([]string{"--server", server}, args...)...)
		c.Env = append(append([]string{}, env...), extraEnv...)
		return c
	}
	// Both of kubectl's exec protocols: WebSocket (the default since 1.30) and SPDY.
	protocols := map[string][]string{
		"websocket": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true", "KUBECTL_PORT_FORWARD_WEBSOCKETS=true"},
		"spdy":      {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"},
	}

	t.Run("kubectl exec", func(t *testing.T) {
		for proto, penv := range protocols {
			var out, errOut bytes.Buffer
			c := kc(penv, "exec", "-i", "box", "--", "sh", "-c", "cat; echo err >&2; exit 3")
			c.Stdin, c.Stdout, c.Stderr = strings.NewReader("hello\n"), &out, &errOut
			err := c.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Errorf("%s: kubectl exec: %v, want exit status 3\n%s", proto, err, errOut.String())
			}
			if out.String() != "hello\n" || !strings.Contains(errOut.String(), "err\n") || !strings.Contains(errOut.String(), "command terminated with exit code 3") {
				t.Errorf("%s: kubectl exec: stdout %q stderr %q", proto, out.String(), errOut.String())
			}
		}
	})

	t.Run("kubectl exec -it", func(t *testing.T) {
		for proto, penv := range protocols {
			interactiveShell(t, "kubectl ("+proto+")", kc(penv, "exec", "-it", "box", "--", "sh"))
		}
	})

	t.Run("kubectl port-forward", func(t *testing.T) {
		for proto, penv := range protocols {
			ctx, cancel := context.WithCancel(context.Background())
			c := kc(penv, "port-forward", "pod/web", ":80")
			cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
			pr, pw := io.Pipe()
			cmd.Env, cmd.Stdout, cmd.Stderr = c.Env, pw, pw
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 10)
			go func() {
				sc := bufio.NewScanner(pr)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 80`)
			var port string
			for port == "" {
				select {
				case l := <-lines:
					if m := re.FindStringSubmatch(l); m != nil {
						port = m[1]
					}
				case <-time.After(20 * time.Second):
					cancel()
					t.Fatalf("%s: kubectl port-forward printed no \"Forwarding from\"", proto)
				}
			}
			httpGetNginx(t, "http://127.0.0.1:"+port+"/")
			httpGetNginx(t, "http://127.0.0.1:"+port+"/") // a second connection over the same forward
			cancel()
			cmd.Wait()
			pw.Close()
		}
	})

	t.Run("kubectl attach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectl, "--server", server, "attach", "box")
		cmd.Env = env
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer cancel()
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), "line-") {
			t.Errorf("kubectl attach: %q, %v; want the container's next line", sc.Text(), sc.Err())
		}
	})

	t.Run("kubectl logs", func(t *testing.T) {
		out, err := kc(nil, "logs", "box", "--tail", "1").CombinedOutput()
		if err != nil || !regexp.MustCompile(`^line-\d+\n$`).Match(out) {
			t.Errorf("kubectl logs --tail 1: %q, %v", out, err)
		}
		out, err = kc(nil, "logs", "box", "-c", "nope").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "container nope is not valid for pod box") {
			t.Errorf("kubectl logs -c nope: %q, %v", out, err)
		}
	})

	t.Run("kubectl cp", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in.txt")
		data := strings.Repeat("pilab kubectl cp\n", 5000)
		if err := os.WriteFile(src, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		for proto, penv := range protocols {
			if out, err := kc(penv, "cp", src, "box:/tmp/in-"+proto+".txt").CombinedOutput(); err != nil {
				t.Fatalf("%s: kubectl cp to the pod: %v\n%s", proto, err, out)
			}
			back := filepath.Join(dir, "back-"+proto+".txt")
			if out, err := kc(penv, "cp", "box:/tmp/in-"+proto+".txt", back).CombinedOutput(); err != nil {
				t.Fatalf("%s: kubectl cp from the pod: %v\n%s", proto, err, out)
			}
			got, err := os.ReadFile(back)
			if err != nil || string(got) != data {
				t.Errorf("%s: kubectl cp there and back: %d bytes (%v), want %d", proto, len(got), err, len(data))
			}
		}
	})
}

type fixedSize struct {
	size remotecommand.TerminalSize
	sent bool
}

func (f *fixedSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		return nil
	}
	f.sent = true
	return &f.size
}

func ptr[T any](v T) *T { return &v }

// httpGetNginx gets url and checks it is nginx's welcome page.
func httpGetNginx(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Welcome to nginx!") {
		t.Fatalf("GET %s: %d %q, want 200 and nginx's welcome page", url, resp.StatusCode, body)
	}
}
