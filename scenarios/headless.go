package scenarios

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// RunHeadless plays scenarios one after another against the lab in opt, writing a transcript to w as a
// terminal session would show it. It stops at the first failure and returns it (a *StepError naming the
// scenario, step and check); a scenario's cleanup runs whatever happened.
func RunHeadless(ctx context.Context, w io.Writer, list []*Scenario, opt Options) error {
	for _, sc := range list {
		if err := runOneHeadless(ctx, w, sc, opt); err != nil {
			return err
		}
	}
	return nil
}

func runOneHeadless(ctx context.Context, w io.Writer, sc *Scenario, opt Options) (err error) {
	t := &transcript{w: w, sc: sc, bol: true}
	opt.Sink = t.event
	r, err := NewRunner(sc, opt)
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintf(w, "=== scenario %s: %s\n", sc.Name, sc.Title)
	start := time.Now()
	defer func() {
		// Cleanup runs even after Ctrl-C, so the next scenario (or the learner) finds the account as it was.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if cerr := r.Cleanup(cctx); cerr != nil && err == nil {
			err = cerr
		}
		t.newline()
		if err != nil {
			fmt.Fprintf(w, "=== FAIL %s (%s)\n", sc.Name, time.Since(start).Round(time.Second))
		} else {
			fmt.Fprintf(w, "=== PASS %s (%s)\n", sc.Name, time.Since(start).Round(time.Second))
		}
	}()
	if err := r.Prepare(ctx); err != nil {
		return err
	}
	for i := range sc.Steps {
		if err := r.RunStep(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// transcript turns events into a terminal session: "$ pi get pods" and what it printed.
type transcript struct {
	w   io.Writer
	sc  *Scenario
	bol bool // at the beginning of a line
}

func (t *transcript) print(s string) {
	if s == "" {
		return
	}
	io.WriteString(t.w, s)
	t.bol = strings.HasSuffix(s, "\n")
}

func (t *transcript) newline() {
	if !t.bol {
		t.print("\n")
	}
}

func (t *transcript) event(ev Event) {
	switch ev.Kind {
	case StepStarted:
		t.newline()
		switch ev.Step {
		case PrepareStep:
		case CleanupStep:
			t.print("--- cleanup\n")
		default:
			t.print(fmt.Sprintf("--- step %d/%d: %s\n", ev.Step+1, len(t.sc.Steps), ev.Text))
		}
	case CommandStarted:
		t.newline()
		t.print("$ " + ev.Text + "\n")
	case Output:
		t.print(ev.Text)
	case CommandFinished:
		if ev.Err != nil {
			t.newline()
			t.print(fmt.Sprintf("! %v\n", ev.Err))
		}
	case CheckFinished:
		t.newline()
		if ev.Err != nil {
			t.print(fmt.Sprintf("✗ %s: %v\n", ev.Text, ev.Err))
		} else {
			t.print("✓ " + ev.Text + "\n")
		}
	case Notice:
		t.newline()
		t.print("# " + ev.Text + "\n")
	}
}
