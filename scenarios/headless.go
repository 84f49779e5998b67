package scenarios

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// RunHeadless plays scenarios one after another against the lab in opt, writing a transcript to w as a
// terminal session would show it, ending with the summary line. It stops at the first failure and returns
// it (a *StepError naming the scenario, step and check); a scenario's cleanup runs whatever happened.
// RunSuite does the same with more choices.
func RunHeadless(ctx context.Context, w io.Writer, list []*Scenario, opt Options) error {
	rep, err := RunSuite(ctx, w, list, opt, SuiteOptions{})
	if err != nil {
		return err
	}
	return rep.Err()
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
	case ScenarioStarted:
		t.newline()
		t.print(fmt.Sprintf("=== scenario %s: %s\n", t.sc.Name, t.sc.Title))
	case ScenarioFinished:
		t.newline()
		verdict := "PASS"
		if ev.Err != nil {
			verdict = "FAIL"
		}
		t.print(fmt.Sprintf("=== %s %s (%s)\n", verdict, t.sc.Name, ev.Text))
	case StepSkipped:
		t.newline()
		t.print(fmt.Sprintf("--- step %d/%d: %s: skipped, %v\n", ev.Step+1, len(t.sc.Steps), ev.Text, ev.Err))
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
