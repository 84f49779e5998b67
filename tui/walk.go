package tui

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/glamour"
	"github.com/charmbracelet/x/ansi"
	"github.com/pilab/pi/scenarios"
)

// Runner is what the walkthrough needs of scenarios.Runner.
type Runner interface {
	Prepare(ctx context.Context) error
	RunStep(ctx context.Context, i int) error
	Cleanup(ctx context.Context) error
	Display(c scenarios.Command) string
	Close() error
}

// eventMsg carries one runner event into Update.
type eventMsg struct{ ev scenarios.Event }

// pipe carries a runner's events to the program: its Sink is the runner's, waitEvent reads the other end.
// Once the program is gone, events are printed instead, so a runner never blocks on a reader that left.
type pipe struct {
	ch     chan scenarios.Event
	closed chan struct{}
	ops    sync.WaitGroup
	mu     sync.Mutex
	after  func(scenarios.Event)
}

func newPipe() *pipe {
	return &pipe{ch: make(chan scenarios.Event, 256), closed: make(chan struct{})}
}

func (p *pipe) Sink(ev scenarios.Event) {
	// Once closed, never into the channel, even when it has room: nobody reads it any more.
	select {
	case <-p.closed:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.after != nil {
			p.after(ev)
		}
		return
	default:
	}
	select {
	case p.ch <- ev:
	case <-p.closed:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.after != nil {
			p.after(ev)
		}
	}
}

// close stops delivering to the program; later events go to after.
func (p *pipe) close(after func(scenarios.Event)) {
	p.mu.Lock()
	p.after = after
	p.mu.Unlock()
	close(p.closed)
}

func (p *pipe) waitEvent() tea.Cmd {
	return func() tea.Msg {
		select {
		case ev := <-p.ch:
			return eventMsg{ev}
		case <-p.closed:
			return nil
		}
	}
}

// op runs a runner method off the UI goroutine; its outcome arrives as events.
func (p *pipe) op(fn func()) tea.Cmd {
	p.ops.Add(1)
	return func() tea.Msg {
		defer p.ops.Done()
		fn()
		return nil
	}
}

type status int

const (
	pending status = iota
	running
	passed
	failed
)

// walk is the walkthrough of one scenario: the step's text, commands and checks, and their output.
type walk struct {
	common
	sc     *scenarios.Scenario
	runner Runner
	pipe   *pipe

	cur      int // -1: the intro
	steps    []status
	checks   [][]status
	errs     []error
	out      map[int]*strings.Builder // by step; scenarios.PrepareStep and CleanupStep too
	prepared bool
	prepErr  error
	busy     bool
	cleaning bool
	// done says the learner left the scenario and its cleanup is over (doneErr: how it went).
	done    bool
	doneErr error
	notice  string

	text     viewport.Model
	output   viewport.Model
	rendered map[int]string // glamour output by step, for the width renderW
	renderW  int
}

func newWalk(c common, sc *scenarios.Scenario, r Runner, p *pipe) *walk {
	w := &walk{common: c, sc: sc, runner: r, pipe: p, cur: -1, out: map[int]*strings.Builder{}, rendered: map[int]string{}}
	w.steps = make([]status, len(sc.Steps))
	w.checks = make([][]status, len(sc.Steps))
	w.errs = make([]error, len(sc.Steps))
	for i, st := range sc.Steps {
		w.checks[i] = make([]status, len(st.Checks))
	}
	w.text = viewport.New(0, 0)
	w.output = viewport.New(0, 0)
	return w
}

// Init starts the preparation (images) while the learner reads the intro.
func (w *walk) Init() tea.Cmd {
	w.busy = true
	r, ctx := w.runner, w.ctx
	return tea.Batch(w.pipe.waitEvent(), w.pipe.op(func() { r.Prepare(ctx) }))
}

func (w *walk) SetSize(width, height int) {
	w.common.SetSize(width, height)
	tw, th, ow, oh := w.layout()
	w.text.Width, w.text.Height = tw, th
	w.output.Width, w.output.Height = ow, oh
	w.refresh()
}

// layout: the step pane over the output pane, each in a border with a title line.
func (w *walk) layout() (tw, th, ow, oh int) {
	top := w.height * 3 / 5
	return max(w.width-2, 0), max(top-3, 0), max(w.width-2, 0), max(w.height-top-3, 0)
}

func (w *walk) Update(msg tea.Msg) (*walk, tea.Cmd) {
	switch msg := msg.(type) {
	case eventMsg:
		w.event(msg.ev)
		return w, w.pipe.waitEvent()
	case tea.KeyMsg:
		return w, w.key(msg)
	}
	return w, nil
}

func (w *walk) key(msg tea.KeyMsg) tea.Cmd {
	k := w.keys
	switch {
	case key.Matches(msg, k.Run):
		return w.runCurrent()
	case key.Matches(msg, k.Next):
		if w.cur < len(w.sc.Steps)-1 {
			w.cur++
			w.notice = ""
			w.refresh()
		}
	case key.Matches(msg, k.Prev):
		if w.cur > -1 {
			w.cur--
			w.notice = ""
			w.refresh()
		}
	case key.Matches(msg, k.Up):
		w.text.ScrollUp(1)
	case key.Matches(msg, k.Down):
		w.text.ScrollDown(1)
	case key.Matches(msg, k.PageUp):
		w.output.HalfPageUp()
	case key.Matches(msg, k.PageDown):
		w.output.HalfPageDown()
	case key.Matches(msg, k.Back):
		return w.cleanup()
	}
	return nil
}

func (w *walk) runCurrent() tea.Cmd {
	switch {
	case w.cur == -1:
		w.cur = 0
		w.refresh()
		return nil
	case w.busy && !w.prepared && w.prepErr == nil:
		w.notice = "the lab is being prepared (images); the step runs when that is done — try again in a moment"
		return nil
	case w.busy:
		w.notice = "a step is running; wait for it to finish"
		return nil
	case w.prepErr != nil:
		w.notice = "the preparation failed (see the output); fix the lab and open the scenario again"
		return nil
	}
	for i := 0; i < w.cur; i++ {
		if w.steps[i] != passed {
			w.notice = fmt.Sprintf("run the steps in order: step %d has not passed yet (p goes back)", i+1)
			return nil
		}
	}
	w.busy, w.notice = true, ""
	r, ctx, i := w.runner, w.ctx, w.cur
	return w.pipe.op(func() { r.RunStep(ctx, i) })
}

func (w *walk) cleanup() tea.Cmd {
	if w.busy {
		w.notice = "a step is running; wait for it to finish"
		return nil
	}
	if !w.prepared {
		w.done = true
		return nil
	}
	w.busy, w.cleaning = true, true
	r, ctx := w.runner, w.ctx
	return w.pipe.op(func() { r.Cleanup(ctx) })
}

func (w *walk) buf(step int) *strings.Builder {
	b := w.out[step]
	if b == nil {
		b = &strings.Builder{}
		w.out[step] = b
	}
	return b
}

func (w *walk) event(ev scenarios.Event) {
	b := w.buf(ev.Step)
	line := func(s string) {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteString("\n")
		}
		b.WriteString(s + "\n")
	}
	switch ev.Kind {
	case scenarios.StepStarted:
		if ev.Step >= 0 {
			b.Reset()
			w.steps[ev.Step] = running
			w.errs[ev.Step] = nil
			for i := range w.checks[ev.Step] {
				w.checks[ev.Step][i] = pending
			}
		}
	case scenarios.CommandStarted:
		line("$ " + ev.Text)
	case scenarios.Output:
		b.WriteString(ev.Text)
	case scenarios.CommandFinished:
		if ev.Err != nil {
			line("! " + ev.Err.Error())
		}
	case scenarios.CheckFinished:
		if ev.Err != nil {
			w.checks[ev.Step][ev.Index] = failed
			line("✗ " + ev.Text + ": " + ev.Err.Error())
		} else {
			w.checks[ev.Step][ev.Index] = passed
			line("✓ " + ev.Text)
		}
	case scenarios.Notice:
		line("# " + ev.Text)
	case scenarios.StepFinished:
		w.busy = false
		switch ev.Step {
		case scenarios.PrepareStep:
			w.prepared, w.prepErr = ev.Err == nil, ev.Err
			if ev.Err != nil {
				line("✗ " + ev.Err.Error())
			}
		case scenarios.CleanupStep:
			w.cleaning, w.done, w.doneErr = false, true, ev.Err
		default:
			if ev.Err != nil {
				w.steps[ev.Step], w.errs[ev.Step] = failed, ev.Err
			} else {
				w.steps[ev.Step] = passed
			}
			w.refresh()
			// The checks and the verdict are at the end of the step's text.
			w.text.GotoBottom()
			return
		}
	}
	w.refresh()
}

// shownOutput is the output of the step on screen, or of the preparation or cleanup while they run.
func (w *walk) shownOutput() string {
	if w.cleaning {
		return w.buf(scenarios.CleanupStep).String()
	}
	if w.cur >= 0 {
		if b := w.out[w.cur]; b != nil && b.Len() > 0 {
			return b.String()
		}
	}
	if w.cur == -1 || !w.prepared {
		return w.buf(scenarios.PrepareStep).String()
	}
	return ""
}

// refresh puts the current step's text and output into their viewports, wrapped to fit: a long command
// line or output line is worth reading whole.
func (w *walk) refresh() {
	w.text.SetContent(ansi.Wrap(w.stepText(), max(w.text.Width, 1), ""))
	w.output.SetContent(ansi.Wrap(strings.TrimRight(w.shownOutput(), "\n"), max(w.output.Width, 1), ""))
	w.output.GotoBottom()
}

func (w *walk) markdown(i int, md string) string {
	if w.renderW != w.text.Width {
		w.rendered, w.renderW = map[int]string{}, w.text.Width
	}
	if s, ok := w.rendered[i]; ok {
		return s
	}
	s := md
	if r, err := glamour.NewTermRenderer(glamour.WithStandardStyle(w.glamourStyle), glamour.WithWordWrap(max(w.text.Width-2, 20))); err == nil {
		if out, err := r.Render(md); err == nil {
			s = strings.Trim(out, "\n")
		}
	}
	w.rendered[i] = s
	return s
}

func (w *walk) stepText() string {
	st := w.styles
	if w.cur == -1 {
		return w.markdown(-1, w.sc.Intro) + "\n\n" + st.Dim.Render("Press enter or n to begin.")
	}
	step := w.sc.Steps[w.cur]
	var b strings.Builder
	b.WriteString(w.markdown(w.cur, step.Text) + "\n")
	if len(step.Commands) > 0 {
		b.WriteString("\n" + st.Title.Render("Run") + "\n")
		for _, c := range step.Commands {
			for i, l := range strings.Split(w.runner.Display(c), "\n") {
				prefix := "  "
				if i == 0 {
					prefix = "$ "
				}
				b.WriteString(st.Command.Render(prefix+l) + "\n")
			}
		}
	}
	if len(step.Checks) > 0 {
		b.WriteString("\n" + st.Title.Render("Checks") + "\n")
		for j, c := range step.Checks {
			b.WriteString(w.mark(w.checks[w.cur][j]) + " " + c.Describe() + "\n")
		}
	}
	b.WriteString("\n")
	switch w.steps[w.cur] {
	case running:
		b.WriteString(st.Running.Render("● running…"))
	case passed:
		if w.cur == len(w.sc.Steps)-1 {
			b.WriteString(st.Passed.Render("✓ passed — the last step: esc cleans up and goes back to the list"))
		} else {
			b.WriteString(st.Passed.Render("✓ passed — n for the next step"))
		}
	case failed:
		b.WriteString(st.Failed.Render("✗ failed: " + w.errs[w.cur].Error() + " — enter runs the step again"))
	default:
		b.WriteString(st.Dim.Render("enter runs this step"))
	}
	return b.String()
}

func (w *walk) mark(s status) string {
	switch s {
	case running:
		return w.styles.Running.Render("●")
	case passed:
		return w.styles.Passed.Render("✓")
	case failed:
		return w.styles.Failed.Render("✗")
	}
	return w.styles.Dim.Render("○")
}

// progress is "step 2/5 ✓●○○○".
func (w *walk) progress() string {
	var marks strings.Builder
	for i, s := range w.steps {
		if i == w.cur && s == pending {
			marks.WriteString(w.styles.Selected.Render("•"))
			continue
		}
		marks.WriteString(w.mark(s))
	}
	n := "intro"
	if w.cur >= 0 {
		n = fmt.Sprintf("step %d/%d", w.cur+1, len(w.sc.Steps))
	}
	return n + " " + marks.String()
}

func (w *walk) View() string {
	tw, th, ow, oh := w.layout()
	title := "Introduction"
	if w.cur >= 0 {
		title = fmt.Sprintf("Step %d: %s", w.cur+1, w.sc.Steps[w.cur].Title)
	}
	top := pane(w.styles, tw, th+1, w.styles.PaneTitle.Render(truncate(title, tw))+"\n"+w.text.View())
	outTitle := "Output"
	switch {
	case w.cleaning:
		outTitle = "Output: cleanup"
	case !w.prepared && w.prepErr == nil:
		outTitle = "Output: preparing the lab (images)…"
	case w.prepErr != nil:
		outTitle = "Output: preparation failed"
	}
	if w.notice != "" {
		outTitle = w.styles.Error.Render(w.notice)
	} else {
		outTitle = w.styles.PaneTitle.Render(outTitle)
	}
	bottom := pane(w.styles, ow, oh+1, truncate(outTitle, ow)+"\n"+w.output.View())
	return top + "\n" + bottom
}
