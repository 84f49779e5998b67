package pods

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
)

// FreezePod pauses (freeze) or resumes every running task of a pod, through containerd's task Pause and
// Resume (runc's cgroup freezer): how a node of the lab plays a dead host (`pi node stop`) — its pods hold
// their memory and sockets but run nothing and answer nothing — and comes back (`pi node start`). A pod
// without tasks, and a task already in the asked state, are fine; a frozen task still counts as running.
func (r *Runtime) FreezePod(ctx context.Context, podUID string, freeze bool) error {
	cs, err := r.listContainers(ctx, podFilter(podUID))
	if err != nil {
		return fmt.Errorf("freeze pod %s: list its containers: %w", podUID, err)
	}
	var errs []error
	for _, info := range cs {
		if err := r.freezeContainer(ctx, info.ID, freeze); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", podUID, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Runtime) freezeContainer(ctx context.Context, id string, freeze bool) error {
	c, err := r.loadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	lctx, cancel := r.call(ctx, lookupTimeout)
	defer cancel()
	t, err := c.Task(lctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load task of container %s: %w", id, err)
	}
	st, err := t.Status(lctx)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("status of task %s: %w", id, err)
	}
	cctx, cancel := r.call(ctx, deleteTimeout)
	defer cancel()
	switch {
	case freeze && st.Status == containerd.Running:
		err = t.Pause(cctx)
	case !freeze && (st.Status == containerd.Paused || st.Status == containerd.Pausing):
		err = t.Resume(cctx)
	default:
		return nil
	}
	if err != nil && !errdefs.IsNotFound(err) {
		verb := "resume"
		if freeze {
			verb = "pause"
		}
		return fmt.Errorf("%s task %s: %w", verb, id, err)
	}
	return nil
}
