package pods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// LogOptions selects what Logs writes.
type LogOptions struct {
	Follow   bool // keep writing new output, across restarts, until ctx ends
	Tail     int  // last N lines only; -1 = all
	Previous bool // the attempt before the current one
	// Timestamps starts each line with the time it was written (RFC 3339, nanoseconds), as kubelet does.
	Timestamps bool
	// Since drops the lines written before it (zero: none dropped).
	Since time.Time
	// LimitBytes stops after this many bytes of output (0: no limit).
	LimitBytes int64
}

// followPoll is how often a followed log is checked for new output.
const followPoll = 100 * time.Millisecond

// Logs writes a pod container's output (stdout and stderr interleaved, as
// written) to w. Logs live in the sandbox dir, one file per attempt, so they
// are there for exited and restarted containers until RemoveSandbox.
func (r *Runtime) Logs(ctx context.Context, podUID, container string, o LogOptions, w io.Writer) error {
	sdir, err := r.sandboxDir(podUID)
	if err != nil {
		return err
	}
	if !validName(container) {
		return fmt.Errorf("logs of pod %s: container name %q is not a DNS label", podUID, container)
	}
	dir := filepath.Dir(logPath(sdir, container, 0))
	attempts, err := logAttempts(dir)
	if err != nil {
		return fmt.Errorf("logs of container %s of pod %s: %w", container, podUID, err)
	}
	if len(attempts) == 0 {
		return fmt.Errorf("logs of container %s of pod %s: none yet; the container has not been started: %w", container, podUID, os.ErrNotExist)
	}
	cur := attempts[len(attempts)-1]
	// The container's own label wins: an attempt counter that restarted
	// from 0 appends to an old file rather than making a newer one.
	if info, ok, err := r.find(r.nsctx(ctx), podUID, container); err == nil && ok {
		if a, err := strconv.Atoi(info.Labels[LabelAttempt]); err == nil && slices.Contains(attempts, a) {
			cur = a
		}
	}
	if o.Previous {
		i := sort.SearchInts(attempts, cur)
		if i == 0 {
			return fmt.Errorf("logs of container %s of pod %s: previous terminated container not found (attempt %d is the first): %w", container, podUID, cur, os.ErrNotExist)
		}
		cur = attempts[i-1]
	}

	f, err := os.Open(logPath(sdir, container, cur))
	if err != nil {
		return fmt.Errorf("logs of container %s of pod %s: %w", container, podUID, err)
	}
	start := tailOffset(f, o.Tail)
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("logs of container %s of pod %s: %w", container, podUID, err)
	}
	r.startStamper()
	var lw *limitWriter
	if o.LimitBytes > 0 {
		lw = &limitWriter{w: w, left: o.LimitBytes}
		w = lw
	}
	var sw *stampWriter
	if o.Timestamps || !o.Since.IsZero() {
		sw = newStampWriter(w, logPath(sdir, container, cur), start, o)
		w = sw
	}
	err = r.followLog(ctx, w, sw, f, sdir, container, cur, o)
	if lw != nil && errors.Is(err, errLimit) {
		return nil
	}
	return err
}

// followLog copies f to w, and with o.Follow what comes after, across restarts.
func (r *Runtime) followLog(ctx context.Context, w io.Writer, sw *stampWriter, f *os.File, sdir, container string, cur int, o LogOptions) error {
	dir := filepath.Dir(logPath(sdir, container, 0))
	defer func() { f.Close() }()
	if _, err := copyFlush(w, f); err != nil {
		return err
	}
	if !o.Follow || o.Previous {
		return nil
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
		if _, err := copyFlush(w, f); err != nil {
			return err
		}
		attempts, err := logAttempts(dir)
		if err != nil || len(attempts) == 0 {
			return nil // the sandbox was removed: nothing more will come
		}
		next := attempts[len(attempts)-1]
		if next <= cur {
			continue
		}
		// A restart: finish the old attempt's file, go on with the new one.
		if _, err := copyFlush(w, f); err != nil {
			return err
		}
		nf, err := os.Open(logPath(sdir, container, next))
		if err != nil {
			continue
		}
		f.Close()
		f, cur = nf, next
		if sw != nil {
			sw.reset(logPath(sdir, container, next), 0)
		}
		if _, err := copyFlush(w, f); err != nil {
			return err
		}
	}
}

// logAttempts lists the attempt numbers that have a log file, ascending.
func logAttempts(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".log")); err == nil && strings.HasSuffix(e.Name(), ".log") {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// tailOffset is where the last n lines of f start (n < 0: all of it). A
// final line without a newline counts as a line.
func tailOffset(f *os.File, n int) int64 {
	fi, err := f.Stat()
	if err != nil || n < 0 {
		return 0
	}
	end := fi.Size()
	if n == 0 {
		return end
	}
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	last := make([]byte, 1)
	if end > 0 {
		if _, err := f.ReadAt(last, end-1); err == nil && last[0] == '\n' {
			end-- // the final newline ends the last line; it does not start one
		}
	}
	for pos := end; pos > 0; {
		size := min(int64(chunk), pos)
		pos -= size
		b := buf[:size]
		if _, err := f.ReadAt(b, pos); err != nil && err != io.EOF {
			return 0
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				if n--; n == 0 {
					return pos + int64(i) + 1
				}
			}
		}
	}
	return 0
}

// copyFlush copies what src has now and flushes w if it buffers (an HTTP
// response), so a follower sees lines as they come.
func copyFlush(w io.Writer, src io.Reader) (int64, error) {
	n, err := io.Copy(w, src)
	if err != nil {
		return n, fmt.Errorf("write logs: %w", err)
	}
	if fl, ok := w.(interface{ Flush() }); ok && n > 0 {
		fl.Flush()
	}
	return n, nil
}
