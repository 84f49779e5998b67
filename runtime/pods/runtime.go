// Package pods runs the containers of a Kubernetes-style pod on containerd:
// a sandbox of shared namespaces, container lifecycle, exit events, exec and
// logs.
//
// A pod's containers join the network namespace the caller made for the pod
// and a UTS and an IPC namespace (plus a /dev/shm tmpfs) this package makes
// and keeps alive with bind mounts under the pod's sandbox dir, so there is
// no pause container. Everything the runtime needs to know later lives in
// containerd (container labels) or in the sandbox dir, never in memory: a
// restarted pi daemon picks up where the previous one stopped, and tasks
// write their output straight to files through the shim, so they outlive
// both the daemon and containerd restarts.
package pods

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pilab/pi/runtime/supervisor"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	corev1 "k8s.io/api/core/v1"

	"github.com/pilab/pi/runtime/images"
)

// Labels pilab puts on every container (and, for LabelPodUID, on every
// rootfs snapshot) it creates. Their presence is what makes a container
// "pilab's" for List and RemoveAll.
const (
	LabelPodUID    = "pilab.dev/pod-uid"
	LabelPod       = "pilab.dev/pod"
	LabelNamespace = "pilab.dev/pod-namespace"
	LabelContainer = "pilab.dev/container"
	LabelAttempt   = "pilab.dev/attempt"

	// Written after the fact: the start time (containerd does not keep one)
	// and the exit of a task that was deleted, so State can still report
	// it.
	labelStartedAt  = "pilab.dev/started-at"
	labelExitCode   = "pilab.dev/exit-code"
	labelFinishedAt = "pilab.dev/finished-at"
	labelReason     = "pilab.dev/reason"
)

const (
	runtimeName = "io.containerd.runc.v2"
	snapshotter = images.Snapshotter
)

// Reasons reported in ContainerState.Reason, as Kubernetes spells them.
const (
	ReasonCompleted = "Completed"
	ReasonError     = "Error"
	ReasonOOMKilled = "OOMKilled"
)

// ImageResolver turns a pod's image reference into a containerd image
// unpacked for the overlayfs snapshotter. *images.Store implements it.
type ImageResolver interface {
	Resolve(ctx context.Context, ref string) (containerd.Image, error)
}

// Runtime runs pod containers in one containerd namespace.
type Runtime struct {
	client *containerd.Client
	ns     string
	images ImageResolver
	runDir string

	// sandboxMu serialises sandbox setup and removal: two concurrent
	// EnsureSandbox calls for one pod would both find a namespace missing
	// and stack two mounts.
	sandboxMu sync.Mutex
}

// New returns a Runtime for containerd namespace ns. Sandboxes, logs and exec
// FIFOs live under runDir/pods/<pod UID>/.
func New(client *containerd.Client, namespace string, resolver ImageResolver, runDir string) *Runtime {
	// The shim needs absolute log paths.
	if abs, err := filepath.Abs(runDir); err == nil {
		runDir = abs
	}
	return &Runtime{client: client, ns: namespace, images: resolver, runDir: runDir}
}

// runcRoot is runc's state dir, under the lab's run dir rather than the
// shim's machine-wide default (/run/containerd/runc), so a lab leaves no
// per-namespace dir behind there; runc uses runcRoot/<namespace>.
func (r *Runtime) runcRoot() string { return filepath.Join(r.runDir, "runc") }

func (r *Runtime) nsctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.ns)
}

// Deadlines for calls into containerd. containerd has none of its own: a
// call waits as long as its context lets it, and a shim that hangs while
// starting once held a pod worker in tasks.Create for minutes (issue 9,
// defect 5). Every call in this package goes through call with one of
// these; only the streams that must run long (exit events, an exec's
// process wait and IO, logs follow) keep the caller's context, and their
// setup calls still get a deadline.
const (
	// lookupTimeout bounds a metadata call (list, get, load, labels):
	// containerd answers these from its bolt DB in milliseconds; 10 s is a
	// containerd that is stuck or restarting.
	lookupTimeout = 10 * time.Second
	// deleteTimeout bounds a kill-and-delete of a task, a container or a
	// snapshot: SIGKILL, reaping and an overlay unmount take well under a
	// second; 10 s leaves room for a loaded machine.
	deleteTimeout = 10 * time.Second
	// createTimeout bounds each step of starting a container: the container
	// record with its snapshot, the task (which starts a shim and runs runc
	// create) and the task start. On the lab's machine each takes less than
	// a second; 30 s is the 2-core machine under the 40-client load with
	// margin, and far short of the minutes the defect saw.
	createTimeout = 30 * time.Second
	// resolveTimeout bounds finding and unpacking a pod's image: unpacking
	// a lab image's layer into the snapshotter takes seconds, a big
	// imported image longer.
	resolveTimeout = 2 * time.Minute
	// killWait bounds the wait for a task to exit after SIGKILL: the
	// kernel delivers it at once, so a task still there after 10 s is in
	// uninterruptible sleep and waiting longer does not help.
	killWait = 10 * time.Second
)

// call derives the context for one containerd call: the runtime's
// namespace and a deadline of d (or the caller's, if sooner).
func (r *Runtime) call(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.nsctx(ctx), d)
}

// maxIDLen is containerd's limit on container (and snapshot key) IDs.
const maxIDLen = 76

var badIDChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ContainerID is the containerd ID of a pod's container:
// <pod name>-<first 8 of pod UID>-<container name>, with the pod name
// shortened to fit containerd's 76-character limit. Readable in `ctr c ls`,
// unique through the UID part; code never parses it (labels carry the
// identity).
func ContainerID(pod *corev1.Pod, container string) string {
	uid := badIDChars.ReplaceAllString(string(pod.UID), "")
	uid = strings.ReplaceAll(uid, "-", "")
	if len(uid) > 8 {
		uid = uid[:8]
	}
	tail := "-" + uid + "-" + container
	name := badIDChars.ReplaceAllString(pod.Name, "-")
	if room := maxIDLen - len(tail); len(name) > room {
		name = name[:max(room, 0)]
	}
	return strings.Trim(name, "-.") + tail
}

// podFilter selects the containers (or snapshots) of one pod; containerd
// filter values are quoted so any UID survives the filter grammar.
func podFilter(podUID string) string {
	return fmt.Sprintf("labels.%q==%q", LabelPodUID, podUID)
}

// find returns the container record of a pod's container.
func (r *Runtime) find(ctx context.Context, podUID, container string) (containers.Container, bool, error) {
	ctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	cs, err := r.client.ContainerService().List(ctx,
		podFilter(podUID)+fmt.Sprintf(",labels.%q==%q", LabelContainer, container))
	if err != nil {
		return containers.Container{}, false, fmt.Errorf("list containerd containers of pod %s: %w", podUID, err)
	}
	if len(cs) == 0 {
		return containers.Container{}, false, nil
	}
	// Two records for one pod container only happen if IDs were changed
	// between versions; the newest is the live one.
	sort.Slice(cs, func(i, j int) bool { return cs[i].CreatedAt.After(cs[j].CreatedAt) })
	return cs[0], true, nil
}

// Listed is one pilab container found in containerd.
type Listed struct {
	ID, PodUID, Pod, Container string
	Labels                     map[string]string
	Running                    bool
}

// List returns all pilab containers of the namespace, for reconciling and
// for collecting leftovers of pods the store no longer knows.
func (r *Runtime) List(ctx context.Context) ([]Listed, error) {
	cs, err := r.listContainers(ctx, fmt.Sprintf("labels.%q", LabelPodUID))
	if err != nil {
		return nil, fmt.Errorf("list containerd containers in namespace %s: %w", r.ns, err)
	}
	running, err := r.taskStates(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Listed, 0, len(cs))
	for _, c := range cs {
		out = append(out, Listed{
			ID:        c.ID,
			PodUID:    c.Labels[LabelPodUID],
			Pod:       c.Labels[LabelPod],
			Container: c.Labels[LabelContainer],
			Labels:    c.Labels,
			Running:   isRunning(running[c.ID].GetStatus()),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// taskStates lists every task of the namespace in one call, keyed by
// container ID.
func (r *Runtime) taskStates(ctx context.Context) (map[string]*task.Process, error) {
	ctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	resp, err := r.client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list containerd tasks in namespace %s: %w", r.ns, err)
	}
	m := make(map[string]*task.Process, len(resp.Tasks))
	for _, t := range resp.Tasks {
		m[t.ID] = t
	}
	return m, nil
}

// listContainers lists the namespace's container records matching filter.
func (r *Runtime) listContainers(ctx context.Context, filter string) ([]containers.Container, error) {
	ctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	return r.client.ContainerService().List(ctx, filter)
}

func isRunning(s task.Status) bool {
	return s == task.Status_RUNNING || s == task.Status_PAUSED || s == task.Status_PAUSING
}

// RemovePod kills and deletes every task, container and rootfs snapshot of
// the pod, then the pod's cgroup level (cgroups.go). It is idempotent; the
// sandbox (RemoveSandbox) is separate, and so is the account's cgroup
// (RemoveAccountCgroups).
func (r *Runtime) RemovePod(ctx context.Context, podUID string) error {
	cs, err := r.listContainers(ctx, podFilter(podUID))
	if err != nil {
		return fmt.Errorf("remove pod %s: list its containers: %w", podUID, err)
	}
	var errs []error
	for _, c := range cs {
		if err := r.removeContainer(ctx, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", podUID, err))
		}
	}
	if err := r.removeSnapshots(ctx, podFilter(podUID)); err != nil {
		errs = append(errs, fmt.Errorf("remove pod %s: %w", podUID, err))
	}
	if len(errs) == 0 {
		// The pod's cgroup level, now that no container is in it.
		if err := r.removePodCgroups(podUID); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", podUID, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveAll removes every pilab container, task and snapshot of the
// namespace, and what runc creates per namespace but never removes: the
// parent cgroups and the state dir. For `pi reset` and test cleanup.
func (r *Runtime) RemoveAll(ctx context.Context) error {
	cs, err := r.listContainers(ctx, fmt.Sprintf("labels.%q", LabelPodUID))
	if err != nil {
		return fmt.Errorf("list containerd containers in namespace %s: %w", r.ns, err)
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, r.removeContainer(ctx, c.ID))
	}
	errs = append(errs, r.removeSnapshots(ctx, fmt.Sprintf("labels.%q", LabelPodUID)))
	errs = append(errs, supervisor.RemoveCgroupParents(r.ns))
	if err := os.Remove(filepath.Join(r.runcRoot(), r.ns)); err != nil && !os.IsNotExist(err) {
		errs = append(errs, fmt.Errorf("remove runc state dir: %w", err))
	}
	return errors.Join(errs...)
}

// removeContainer deletes a container with its task (killed first) and
// snapshot. Missing pieces are fine: this also finishes a half-done removal.
func (r *Runtime) removeContainer(ctx context.Context, id string) error {
	c, err := r.loadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return r.removeSnapshot(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	hadTask, err := r.taskExists(ctx, c)
	if err != nil {
		return err
	}
	if err := r.deleteTask(ctx, c); err != nil {
		return err
	}
	dctx, cancel := r.call(ctx, deleteTimeout)
	defer cancel()
	if err := c.Delete(dctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if !hadTask {
		// No task in containerd: never started, or a start cut short whose shim containerd lost.
		return r.removeOrphanShims(ctx, func(shimID string) bool { return shimID == id })
	}
	return nil
}

// taskExists reports whether containerd has a task for c.
func (r *Runtime) taskExists(ctx context.Context, c containerd.Container) (bool, error) {
	lctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	_, err := c.Task(lctx, nil)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load task of container %s: %w", c.ID(), err)
	}
	return true, nil
}

// deleteTask kills (SIGKILL) and deletes a container's task, whatever its
// state: running, created but never started (a start cut short), or
// stopped. No task is fine.
func (r *Runtime) deleteTask(ctx context.Context, c containerd.Container) error {
	lctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	t, err := c.Task(lctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load task of container %s: %w", c.ID(), err)
	}
	// A task frozen by `pi node stop` (FreezePod) is thawed first: under cgroup v1 a frozen process does not
	// die of SIGKILL until thawed, and the delete would wait out its deadline.
	if st, err := t.Status(lctx); err == nil && (st.Status == containerd.Paused || st.Status == containerd.Pausing) {
		rctx, cancel := r.call(ctx, deleteTimeout)
		err := t.Resume(rctx)
		cancel()
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("resume frozen task of container %s before deleting it: %w", c.ID(), err)
		}
	}
	dctx, cancel := r.call(ctx, deleteTimeout)
	defer cancel()
	if _, err := t.Delete(dctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("kill and delete task of container %s: %w", c.ID(), err)
	}
	return nil
}

// loadContainer loads a container by ID; errdefs.ErrNotFound if there is
// none.
func (r *Runtime) loadContainer(ctx context.Context, id string) (containerd.Container, error) {
	ctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	return r.client.LoadContainer(ctx, id)
}

func (r *Runtime) removeSnapshot(ctx context.Context, key string) error {
	ctx, cancel := r.call(ctx, deleteTimeout)
	defer cancel()
	if err := r.client.SnapshotService(snapshotter).Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	return nil
}

// removeSnapshots removes snapshots matching filter. Container deletion
// already removes a container's snapshot; this catches the ones left by a
// create that failed half way.
func (r *Runtime) removeSnapshots(ctx context.Context, filter string) error {
	var keys []string
	sn := r.client.SnapshotService(snapshotter)
	wctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	if err := sn.Walk(wctx, func(_ context.Context, i snapshots.Info) error {
		keys = append(keys, i.Name)
		return nil
	}, filter); err != nil {
		return fmt.Errorf("list snapshots (%s): %w", filter, err)
	}
	var errs []error
	for _, k := range keys {
		errs = append(errs, r.removeSnapshot(ctx, k))
	}
	return errors.Join(errs...)
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
