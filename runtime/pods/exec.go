package pods

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
)

// ExecOptions describes a process to run in a running container.
type ExecOptions struct {
	Cmd    []string
	TTY    bool      // a real PTY; stderr is merged into stdout
	Stdin  io.Reader // nil = no stdin; EOF closes the process's stdin
	Stdout io.Writer
	Stderr io.Writer
	Resize <-chan Size // terminal size changes (TTY only)
	Env    []string    // KEY=VALUE, over the container's env
}

// Size is a terminal size in character cells.
type Size struct{ Width, Height uint16 }

// ioDrainTimeout bounds the wait for an exec's output after it exited: a
// background child that inherited the stdout pipe would otherwise hold it
// open forever.
const ioDrainTimeout = 2 * time.Second

// Exec runs a process in a pod container's namespaces, like kubectl exec,
// and returns its exit code once it exited and its output was copied.
// Cancelling ctx kills the process; Exec then returns ctx's error.
func (r *Runtime) Exec(ctx context.Context, podUID, container string, o ExecOptions) (int, error) {
	if len(o.Cmd) == 0 {
		return -1, errors.New("exec: no command given")
	}
	ctx = r.nsctx(ctx)
	// Waiting, killing and cleaning up must work after ctx is cancelled.
	bg := context.WithoutCancel(ctx)
	dir, err := r.sandboxDir(podUID)
	if err != nil {
		return -1, err
	}
	info, ok, err := r.find(ctx, podUID, container)
	if err != nil {
		return -1, err
	}
	if !ok {
		return -1, fmt.Errorf("exec in container %s of pod %s: no such container", container, podUID)
	}
	fail := func(format string, args ...any) (int, error) {
		return -1, fmt.Errorf("exec %q in container %s of pod %s: %s", strings.Join(o.Cmd, " "), container, podUID, fmt.Sprintf(format, args...))
	}
	cont, err := r.loadContainer(ctx, info.ID)
	if err != nil {
		return fail("%v", err)
	}
	lctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	t, err := cont.Task(lctx, nil)
	if err != nil {
		return fail("the container is not running (%v)", err)
	}
	if st, err := t.Status(lctx); err != nil {
		return fail("task status: %v", err)
	} else if st.Status != containerd.Running {
		return fail("the container is not running (task %s)", st.Status)
	}
	spec, err := specOf(info)
	if err != nil {
		return fail("%v", err)
	}
	pspec := *spec.Process
	pspec.Args = o.Cmd
	pspec.Terminal = o.TTY
	pspec.Env = mergeEnv(pspec.Env, o.Env)
	if o.TTY {
		if _, ok := envLookup(pspec.Env)("TERM"); !ok {
			pspec.Env = append(pspec.Env, "TERM=xterm")
		}
	}

	// started is closed once the process runs; done once Exec returns. The
	// stdin closer waits on them (CloseIO before Start would fail).
	started, done := make(chan struct{}), make(chan struct{})
	defer close(done)
	var proc containerd.Process
	stdin := o.Stdin
	if stdin != nil {
		stdin = &closeOnEOF{r: stdin, close: func() {
			select {
			case <-started:
				cctx, cancel := r.call(bg, lookupTimeout)
				defer cancel()
				proc.CloseIO(cctx, containerd.WithStdinCloser)
			case <-done:
			}
		}}
	}
	streams := []cio.Opt{
		cio.WithStreams(stdin, o.Stdout, o.Stderr),
		cio.WithFIFODir(filepath.Join(dir, "fifo")),
	}
	if o.TTY {
		streams = append(streams, cio.WithTerminal)
	}
	execID := "exec-" + randomHex(6)
	cctx, cancel := r.call(ctx, createTimeout)
	defer cancel()
	proc, err = t.Exec(cctx, execID, &pspec, cio.NewCreator(streams...))
	if err != nil {
		return fail("create exec process: %v", err)
	}
	defer func() {
		drainIO(proc.IO())
		dctx, cancel := r.call(bg, deleteTimeout)
		defer cancel()
		proc.Delete(dctx)
	}()
	// The wait is a stream that lasts as long as the process: no deadline
	// of its own; the select below ends it with ctx.
	exited, err := proc.Wait(bg)
	if err != nil {
		return fail("wait for exec process: %v", err)
	}
	if err := proc.Start(cctx); err != nil {
		return fail("start: %v", err)
	}
	close(started)
	if o.TTY && o.Resize != nil {
		go func() {
			for {
				select {
				case s, ok := <-o.Resize:
					if !ok {
						return
					}
					rctx, cancel := r.call(bg, lookupTimeout)
					proc.Resize(rctx, uint32(s.Width), uint32(s.Height))
					cancel()
				case <-done:
					return
				}
			}
		}()
	}

	select {
	case st := <-exited:
		if err := st.Error(); err != nil {
			return fail("wait for exit: %v", err)
		}
		return int(st.ExitCode()), nil
	case <-ctx.Done():
		kctx, cancel := r.call(bg, lookupTimeout)
		defer cancel()
		proc.Kill(kctx, syscall.SIGKILL)
		select {
		case st := <-exited:
			return int(st.ExitCode()), ctx.Err()
		case <-time.After(killWait):
			return fail("%v, and the process did not die after SIGKILL", ctx.Err())
		}
	}
}

// drainIO waits, for a bounded time, for the copy of the output to finish;
// the process's Delete would otherwise cut it off.
func drainIO(i cio.IO) {
	waited := make(chan struct{})
	go func() { i.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(ioDrainTimeout):
	}
}

// closeOnEOF calls close once when the reader is exhausted: closing our end
// of the stdin FIFO is not enough, the shim holds its own until CloseIO.
type closeOnEOF struct {
	r     io.Reader
	close func()
	once  sync.Once
}

func (c *closeOnEOF) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil {
		c.once.Do(c.close)
	}
	return n, err
}

// mergeEnv sets each KEY=VALUE of over in base, replacing earlier values.
func mergeEnv(base, over []string) []string {
	out := append([]string{}, base...)
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
