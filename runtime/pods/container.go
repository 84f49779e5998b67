package pods

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// ContainerOptions describes one start of one container of a pod.
type ContainerOptions struct {
	Pod       *corev1.Pod
	Container *corev1.Container
	Sandbox   Sandbox
	Attempt   int               // restart count; each attempt logs to its own file
	Mounts    []specs.Mount     // extra bind mounts, e.g. /etc/hosts and /etc/resolv.conf
	Labels    map[string]string // extra container labels, e.g. pilab.dev/account
	// Account puts the container under its account's and pod's cgroups
	// (cgroups.go) with the account's ceilings.
	Account AccountCgroup
}

func (r *Runtime) validate(o ContainerOptions) error {
	switch {
	case o.Pod == nil || o.Container == nil:
		return errors.New("start container: ContainerOptions.Pod and .Container are required")
	case o.Pod.UID == "" || o.Pod.Name == "":
		return errors.New("start container: the pod has no name or UID")
	case !validName(o.Container.Name):
		return fmt.Errorf("start container: container name %q of pod %s is not a DNS label", o.Container.Name, o.Pod.Name)
	case o.Container.SecurityContext != nil && o.Container.SecurityContext.Privileged != nil && *o.Container.SecurityContext.Privileged:
		return fmt.Errorf("start container %s of pod %s: securityContext.privileged is not supported in Pi; remove it", o.Container.Name, o.Pod.Name)
	case o.Sandbox.Dir == "" || o.Sandbox.NetnsPath == "" || o.Sandbox.UTSPath == "" || o.Sandbox.IPCPath == "":
		return fmt.Errorf("start container %s of pod %s: ContainerOptions.Sandbox is incomplete; pass the one EnsureSandbox returned", o.Container.Name, o.Pod.Name)
	}
	// Logs finds a pod's files by UID alone, so they must be where the UID
	// says.
	if dir, err := r.sandboxDir(string(o.Pod.UID)); err != nil {
		return err
	} else if filepath.Clean(o.Sandbox.Dir) != dir {
		return fmt.Errorf("start container %s of pod %s: sandbox dir %s is not this pod's (%s); pass the Sandbox EnsureSandbox returned for the pod", o.Container.Name, o.Pod.Name, o.Sandbox.Dir, dir)
	}
	return nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validName checks a container name as Kubernetes does; it becomes part of
// file paths and the containerd ID.
func validName(s string) bool { return len(s) <= 63 && dnsLabel.MatchString(s) }

// logPath is where attempt n of a container logs: the shim appends the
// task's stdout and stderr there, so logs survive daemon and containerd
// restarts and each restart keeps its predecessor's log for --previous.
func logPath(dir, container string, attempt int) string {
	return filepath.Join(dir, "logs", container, strconv.Itoa(attempt)+".log")
}

// StartContainer creates a container and its task and starts it. A
// container left by an earlier attempt is removed first (task included),
// and so is what a start cut short by a crash left in containerd's state
// (see recoverTask).
func (r *Runtime) StartContainer(ctx context.Context, o ContainerOptions) error {
	if err := r.validate(o); err != nil {
		return err
	}
	r.startStamper() // log line times (logstamp.go)
	ctx = r.nsctx(ctx)
	pod, c := o.Pod, o.Container
	uid := string(pod.UID)
	id := ContainerID(pod, c.Name)
	fail := func(format string, args ...any) error {
		return fmt.Errorf("start container %s of pod %s/%s (containerd id %s): %s", c.Name, pod.Namespace, pod.Name, id, fmt.Sprintf(format, args...))
	}

	if err := r.removeContainer(ctx, id); err != nil {
		return fail("remove the previous attempt: %v", err)
	}
	rctx, cancel := r.call(ctx, resolveTimeout)
	defer cancel()
	img, err := r.images.Resolve(rctx, c.Image)
	if err != nil {
		return fail("image %q: %v", c.Image, err)
	}
	ispec, err := img.Spec(rctx)
	if err != nil {
		return fail("read config of image %s: %v", img.Name(), err)
	}
	sopts, err := specOpts(o, img, ispec.Config, r.ns)
	if err != nil {
		return fail("%v", err)
	}
	if o.Account.UID != "" {
		if err := r.ensurePodCgroups(o.Account, uid); err != nil {
			return fail("%v", err)
		}
	}

	labels := make(map[string]string, len(o.Labels)+5)
	for k, v := range o.Labels {
		labels[k] = v
	}
	labels[LabelPodUID] = uid
	labels[LabelPod] = pod.Name
	labels[LabelNamespace] = pod.Namespace
	labels[LabelContainer] = c.Name
	labels[LabelAttempt] = strconv.Itoa(o.Attempt)

	stdinFifo := ""
	if c.Stdin {
		stdinFifo = filepath.Join(o.Sandbox.Dir, "stdin", c.Name)
	}
	stdio, err := taskIO(logPath(o.Sandbox.Dir, c.Name, o.Attempt), stdinFifo)
	if err != nil {
		return fail("%v", err)
	}
	newContainer := func() (containerd.Container, error) {
		cctx, cancel := r.call(ctx, createTimeout)
		defer cancel()
		return r.client.NewContainer(cctx, id,
			containerd.WithSnapshotter(snapshotter),
			containerd.WithNewSnapshot(id, img, snapshots.WithLabels(map[string]string{LabelPodUID: uid})),
			containerd.WithRuntime(runtimeName, &runcoptions.Options{Root: r.runcRoot()}),
			containerd.WithNewSpec(sopts...),
			containerd.WithContainerLabels(labels),
		)
	}
	newTask := func(cont containerd.Container) (containerd.Task, error) {
		cctx, cancel := r.call(ctx, createTimeout)
		defer cancel()
		return cont.NewTask(cctx, stdio)
	}
	// Cleanup must run even when ctx was cancelled or ran out; it gets its
	// own deadlines.
	cleanupCtx := context.WithoutCancel(ctx)

	cont, err := newContainer()
	if err != nil {
		r.removeSnapshot(cleanupCtx, id)
		return fail("create container: %v", err)
	}
	t, err := newTask(cont)
	if err != nil && isLeftoverTask(err) {
		// A task or shim bundle of an earlier start is in the way: clean
		// it up and try once more.
		if rerr := r.recoverTask(ctx, cont, err); rerr != nil {
			r.removeContainer(cleanupCtx, id)
			return fail("create task: %v; cleaning up what an earlier start left failed: %v; stop the lab (pi down), remove that directory, and start it again", err, rerr)
		}
		t, err = newTask(cont)
		if err != nil {
			r.removeContainer(cleanupCtx, id)
			return fail("create task after cleaning up an earlier start's leftovers: %v; stop the lab (pi down) and start it again to let containerd clean up", err)
		}
	}
	if err != nil {
		r.removeContainer(cleanupCtx, id)
		return fail("create task: %v", err)
	}
	// Taken before Start: a process that exits at once must not look like
	// it finished before it started.
	startedAt := time.Now()
	sctx, cancel := r.call(ctx, createTimeout)
	defer cancel()
	if err := t.Start(sctx); err != nil {
		r.removeContainer(cleanupCtx, id)
		return fail("start task: %v", err)
	}
	lctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	if _, err := cont.SetLabels(lctx, map[string]string{labelStartedAt: formatTime(startedAt)}); err != nil {
		return fail("record start time: %v (the container is running)", err)
	}
	return nil
}

// taskIO sends the task's stdout and stderr to logFile (the shim appends to
// it). With a stdinFifo, the task also gets a stdin that stays open and
// empty: the shim holds the FIFO's write end until CloseIO, so a
// `stdin: true` container (a shell, say) waits for input instead of reading
// EOF and exiting.
func taskIO(logFile, stdinFifo string) (cio.Creator, error) {
	if stdinFifo != "" {
		if err := os.MkdirAll(filepath.Dir(stdinFifo), 0o700); err != nil {
			return nil, err
		}
		if err := unix.Mkfifo(stdinFifo, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create stdin fifo %s: %w", stdinFifo, err)
		}
	}
	uri, err := cio.LogURIGenerator("file", logFile, nil)
	if err != nil {
		return nil, err
	}
	cfg := cio.Config{Stdin: stdinFifo, Stdout: uri.String(), Stderr: uri.String()}
	return func(string) (cio.IO, error) { return shimIO{cfg}, nil }, nil
}

// shimIO is IO the shim does entirely by itself: nothing to copy, wait for
// or close on our side, which is what lets tasks outlive the caller.
type shimIO struct{ cfg cio.Config }

func (s shimIO) Config() cio.Config { return s.cfg }
func (shimIO) Cancel()              {}
func (shimIO) Wait()                {}
func (shimIO) Close() error         { return nil }

// StopContainer stops a container's task the Kubernetes way: SIGTERM, then
// SIGKILL after grace. The task is deleted; the container record stays, with
// the exit recorded on it for State. A container without a task is a no-op.
func (r *Runtime) StopContainer(ctx context.Context, podUID, container string, grace time.Duration) error {
	ctx = r.nsctx(ctx)
	info, ok, err := r.find(ctx, podUID, container)
	if err != nil || !ok {
		return err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("stop container %s of pod %s (containerd id %s): %s", container, podUID, info.ID, fmt.Sprintf(format, args...))
	}
	cont, err := r.loadContainer(ctx, info.ID)
	if err != nil {
		return fail("%v", err)
	}
	lctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	t, err := cont.Task(lctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fail("load task: %v", err)
	}
	st, err := t.Status(lctx)
	if err != nil {
		return fail("task status: %v", err)
	}
	if st.Status != containerd.Stopped {
		// Wait must be registered before the signal or the exit can be
		// missed. It is a stream that lasts until the exit, so it keeps
		// ctx; the waits below are bounded by grace and killWait.
		waitCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		exited, err := t.Wait(waitCtx)
		if err != nil {
			return fail("wait for task: %v", err)
		}
		kill := func(sig syscall.Signal, opts ...containerd.KillOpts) error {
			kctx, cancel := r.call(ctx, lookupTimeout)
			defer cancel()
			if err := t.Kill(kctx, sig, opts...); err != nil && !errdefs.IsNotFound(err) {
				return err
			}
			return nil
		}
		if err := kill(syscall.SIGTERM); err != nil {
			return fail("send SIGTERM: %v", err)
		}
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-exited:
		case <-ctx.Done():
			return fail("%v while waiting for the task to exit", ctx.Err())
		case <-timer.C:
			if err := kill(syscall.SIGKILL, containerd.WithKillAll); err != nil {
				return fail("send SIGKILL after %s grace: %v", grace, err)
			}
			select {
			case <-exited:
			case <-ctx.Done():
				return fail("%v while waiting for the task to exit after SIGKILL", ctx.Err())
			case <-time.After(killWait):
				return fail("the task did not exit within %s of SIGKILL; it may be stuck in the kernel (see its processes' state in ps)", killWait)
			}
		}
	}
	// The reason must be read before Delete removes the cgroup.
	pst, err := r.taskProcess(ctx, info.ID)
	if err != nil {
		return fail("%v", err)
	}
	reason := r.exitReason(info, int(pst.GetExitStatus()))
	dctx, cancel := r.call(ctx, deleteTimeout)
	defer cancel()
	if _, err := t.Delete(dctx); err != nil && !errdefs.IsNotFound(err) {
		return fail("delete task: %v", err)
	}
	lctx, cancel = r.call(ctx, lookupTimeout)
	defer cancel()
	if _, err := cont.SetLabels(lctx, map[string]string{
		labelExitCode:   strconv.Itoa(int(pst.GetExitStatus())),
		labelFinishedAt: formatTime(protobuf.FromTimestamp(pst.GetExitedAt())),
		labelReason:     reason,
	}); err != nil {
		return fail("record exit: %v", err)
	}
	return nil
}

// taskProcess is the init process of a container's task; nil, nil if the
// container has no task.
func (r *Runtime) taskProcess(ctx context.Context, id string) (*task.Process, error) {
	ctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	resp, err := r.client.TaskService().Get(ctx, &tasksapi.GetRequest{ContainerID: id})
	if errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get task of container %s: %w", id, errdefs.FromGRPC(err))
	}
	return resp.Process, nil
}

// ContainerState is what the pod controller needs for container statuses.
type ContainerState struct {
	ID                    string
	Running               bool
	ExitCode              int
	Reason                string // Completed, Error, OOMKilled once exited
	StartedAt, FinishedAt time.Time
	ImageRef              string
	Exists                bool
}

// State reports a pod container's state. A container that does not exist is
// not an error: Exists is false.
func (r *Runtime) State(ctx context.Context, podUID, container string) (ContainerState, error) {
	ctx = r.nsctx(ctx)
	info, ok, err := r.find(ctx, podUID, container)
	if err != nil || !ok {
		return ContainerState{}, err
	}
	st := ContainerState{
		ID:        info.ID,
		Exists:    true,
		ImageRef:  info.Image,
		StartedAt: parseTime(info.Labels[labelStartedAt]),
	}
	p, err := r.taskProcess(ctx, info.ID)
	if err != nil {
		return ContainerState{}, fmt.Errorf("state of container %s of pod %s: %w", container, podUID, err)
	}
	switch {
	case p == nil: // task deleted by StopContainer, which recorded the exit
		if code, ok := info.Labels[labelExitCode]; ok {
			st.ExitCode = atoi(code)
			st.FinishedAt = parseTime(info.Labels[labelFinishedAt])
			st.Reason = info.Labels[labelReason]
		}
	case isRunning(p.Status):
		st.Running = true
	case p.Status == task.Status_STOPPED:
		st.ExitCode = int(p.ExitStatus)
		st.FinishedAt = protobuf.FromTimestamp(p.ExitedAt)
		st.Reason = r.exitReason(info, st.ExitCode)
	}
	return st, nil
}

// exitReason names an exit as Kubernetes does. An OOM kill is read from the
// container's memory cgroup, which exists until the task is deleted.
func (r *Runtime) exitReason(info containers.Container, code int) string {
	if code == 0 {
		return ReasonCompleted
	}
	if oomKilled(info) {
		return ReasonOOMKilled
	}
	return ReasonError
}

// specOf decodes the OCI spec stored on a container record.
func specOf(info containers.Container) (*specs.Spec, error) {
	if info.Spec == nil {
		return nil, fmt.Errorf("container %s has no OCI spec", info.ID)
	}
	v, err := typeurl.UnmarshalAny(info.Spec)
	if err != nil {
		return nil, fmt.Errorf("decode OCI spec of container %s: %w", info.ID, err)
	}
	s, ok := v.(*specs.Spec)
	if !ok {
		return nil, fmt.Errorf("container %s: spec is a %T, not an OCI spec", info.ID, v)
	}
	return s, nil
}

func oomKilled(info containers.Container) bool {
	s, err := specOf(info)
	if err != nil || s.Linux == nil || s.Linux.CgroupsPath == "" {
		return false
	}
	for _, f := range []string{
		filepath.Join("/sys/fs/cgroup/memory", s.Linux.CgroupsPath, "memory.oom_control"), // cgroup v1
		filepath.Join("/sys/fs/cgroup", s.Linux.CgroupsPath, "memory.events"),             // cgroup v2
	} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if n, ok := strings.CutPrefix(line, "oom_kill "); ok {
				return atoi(strings.TrimSpace(n)) > 0
			}
		}
	}
	return false
}
