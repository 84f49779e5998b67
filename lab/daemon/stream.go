package daemon

// The daemon's side of the pod streams (server.StreamBackend): what a kubelet's CRI runtime does for its
// streaming server, over runtime/pods and the pod's network namespace.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/runtime/pods"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/utils/exec"
)

var _ server.StreamBackend = (*Daemon)(nil)

// ExecInContainer runs a command in a running container; a non-zero exit is a CodeExitError, which the
// streaming handler sends to the client as the command's exit code.
func (d *Daemon) ExecInContainer(ctx context.Context, pod *corev1.Pod, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	o := pods.ExecOptions{Cmd: cmd, TTY: tty, Stdin: in, Stdout: writerOr(out), Stderr: writerOr(errw)}
	if tty {
		o.Resize = sizes(ctx, resize)
	}
	code, err := d.runtime.Exec(ctx, string(pod.UID), container, o)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

// writerOr is w, or a sink for a stream the client did not ask for.
func writerOr(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// sizes turns the client's terminal sizes into the runtime's, until ctx ends.
func sizes(ctx context.Context, resize <-chan remotecommand.TerminalSize) <-chan pods.Size {
	if resize == nil {
		return nil
	}
	out := make(chan pods.Size, 4)
	go func() {
		defer close(out)
		for {
			select {
			case s, ok := <-resize:
				if !ok {
					return
				}
				select {
				case out <- pods.Size{Width: s.Width, Height: s.Height}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// attachPoll is how often an attached stream checks that its container still runs.
const attachPoll = 250 * time.Millisecond

// AttachContainer streams the container's output from now on until the container stops or the client
// goes. The lab's containers have no stdin or terminal of their own (lab/validate refuses stdin and tty
// in a pod spec), so what a client types is read and dropped, as a container without stdin would.
func (d *Daemon) AttachContainer(ctx context.Context, pod *corev1.Pod, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	w := out
	if w == nil {
		w = errw
	}
	if in != nil {
		go io.Copy(io.Discard, in)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	uid := string(pod.UID)
	go func() {
		// The attach ends with the container, as the kubelet's does.
		t := time.NewTicker(attachPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			st, err := d.runtime.State(ctx, uid, container)
			if err == nil && !st.Running {
				// Let the follower copy what the container wrote last.
				time.Sleep(2 * attachPoll)
				cancel()
				return
			}
		}
	}()
	err := d.runtime.Logs(ctx, uid, container, pods.LogOptions{Follow: true, Tail: 0}, writerOr(w))
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// portDialTimeout bounds the dial of a forwarded port inside the pod.
const portDialTimeout = 10 * time.Second

// PortForward connects stream to localhost:port inside the pod's network namespace, as the kubelet's
// runtimes do; the socket is made in the namespace (netns.DialContext) and used from here.
func (d *Daemon) PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	path := netns.Path(controller.PodNetnsName(d.cfg.Lab, pod.UID))
	dctx, cancel := context.WithTimeout(ctx, portDialTimeout)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	conn, err := netns.DialContext(path)(dctx, "tcp4", addr)
	if err != nil {
		// A server bound to the IPv6 loopback only answers there.
		addr6 := net.JoinHostPort("::1", strconv.Itoa(int(port)))
		var err6 error
		if conn, err6 = netns.DialContext(path)(dctx, "tcp6", addr6); err6 != nil {
			return fmt.Errorf("failed to connect to localhost:%d inside the network namespace of pod %s: %w", port, pod.Name, err)
		}
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// The client's side done: half-close, so the server sees EOF and answers.
		defer wg.Done()
		io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	stream.Close()
	conn.Close()
	wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("copy from port %d of pod %s: %w", port, pod.Name, err)
	}
	return nil
}

// PodLogs writes a container's log as the options select.
func (d *Daemon) PodLogs(ctx context.Context, pod *corev1.Pod, opts *corev1.PodLogOptions, w io.Writer) error {
	o := pods.LogOptions{Follow: opts.Follow, Previous: opts.Previous, Tail: -1, Timestamps: opts.Timestamps}
	if opts.TailLines != nil {
		o.Tail = int(*opts.TailLines)
	}
	if opts.LimitBytes != nil {
		o.LimitBytes = *opts.LimitBytes
	}
	switch {
	case opts.SinceSeconds != nil:
		o.Since = time.Now().Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	case opts.SinceTime != nil:
		o.Since = opts.SinceTime.Time
	}
	err := d.runtime.Logs(ctx, string(pod.UID), opts.Container, o, w)
	if errors.Is(err, os.ErrNotExist) {
		return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q: %v", opts.Container, pod.Name, err))
	}
	return err
}
