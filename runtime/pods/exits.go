package pods

import (
	"context"
	"fmt"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/typeurl/v2"
)

// Exit is the end of a pod container's main process.
type Exit struct {
	PodUID, Container string
	ExitCode          int
	At                time.Time
}

// Exits streams the exits of pilab containers' main processes (not exec
// processes) until ctx ends, then closes the channel. It re-subscribes when
// containerd restarts, and after every (re)subscription it also reports the
// containers found already exited, so exits during a gap (or while no one
// listened) are not lost; an exit can therefore be reported more than once.
func (r *Runtime) Exits(ctx context.Context) <-chan Exit {
	out := make(chan Exit, 64)
	go func() {
		defer close(out)
		ctx := r.nsctx(ctx)
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			if r.watchExits(ctx, out) {
				backoff = 100 * time.Millisecond
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
	return out
}

// watchExits runs one subscription until it breaks or ctx ends. It reports
// whether the subscription delivered or confirmed anything, so the caller's
// back-off only grows while containerd is unreachable.
func (r *Runtime) watchExits(ctx context.Context, out chan<- Exit) (healthy bool) {
	// The subscription is a stream that lasts until ctx ends or containerd
	// goes away: no deadline; the calls it makes (sendStopped, send) have
	// theirs.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	evs, errs := r.client.Subscribe(sctx,
		fmt.Sprintf(`topic=="/tasks/exit",namespace==%q`, r.ns))
	if !r.sendStopped(ctx, out) {
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return true
		case <-errs:
			return true
		case env := <-evs:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				continue
			}
			e, ok := v.(*eventsapi.TaskExit)
			if !ok || e.ID != e.ContainerID { // exec processes have their own ID
				continue
			}
			r.send(ctx, out, e.ContainerID, int(e.ExitStatus), protobuf.FromTimestamp(e.ExitedAt))
		}
	}
}

// sendStopped reports every pilab container whose main process has exited
// and whose task still exists. False if containerd could not be asked.
func (r *Runtime) sendStopped(ctx context.Context, out chan<- Exit) bool {
	procs, err := r.taskStates(ctx)
	if err != nil {
		return false
	}
	for id, p := range procs {
		if p.Status == task.Status_STOPPED {
			r.send(ctx, out, id, int(p.ExitStatus), protobuf.FromTimestamp(p.ExitedAt))
		}
	}
	return true
}

func (r *Runtime) send(ctx context.Context, out chan<- Exit, id string, code int, at time.Time) {
	gctx, cancel := r.call(ctx, lookupTimeout)
	c, err := r.client.ContainerService().Get(gctx, id)
	cancel()
	if err != nil {
		return // removed already (RemovePod): nobody to report to
	}
	uid, ok := c.Labels[LabelPodUID]
	if !ok {
		return // not pilab's
	}
	select {
	case out <- Exit{PodUID: uid, Container: c.Labels[LabelContainer], ExitCode: code, At: at}:
	case <-ctx.Done():
	}
}
