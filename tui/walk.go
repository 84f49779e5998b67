package tui

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/pilab/pi/scenarios"
)

// Runner is what the walkthrough needs of scenarios.Runner.
type Runner interface {
	Prepare(ctx context.Context) error
	RunStep(ctx context.Context, i int) error
	Cleanup(ctx context.Context) error
	Display(c scenarios.Command) string
	// Vars are the variables captured so far, for the text the learner reads.
	Vars() map[string]string
	Close() error
}

// shellMsg says the learner is back from the shell a step opened.
type shellMsg struct {
	pod string
	err error
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

	// shell makes the command of an interactive shell in a pod (pi exec -it POD -- sh); nil: no shells.
	shell func(pod string) (*exec.Cmd, error)
	// execProcess hands the terminal to a command until it ends: tea.ExecProcess (tests watch it).
	execProcess func(*exec.Cmd, tea.ExecCallback) tea.Cmd

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
	w.execProcess = tea.ExecProcess
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
	case shellMsg:
		if msg.err != nil {
			// A shell's status is its last command's; pi's own is 1 when the pod is not there to exec into.
			w.notice = fmt.Sprintf("the shell in %s ended: %v (if it did not open: is the pod there and Running? the live pane lists it)", msg.pod, msg.err)
		} else {
			w.notice = ""
		}
	}
	return w, nil
}

// shellPod is the pod the current step works in, which s opens a shell in: the pod of its first sh: command
// or pi exec line, with the variables known so far. Empty when it names none, or names it by a variable not
// captured yet.
func (w *walk) shellPod() string {
	if w.cur < 0 {
		return ""
	}
	vars := w.runner.Vars()
	for _, c := range w.sc.Steps[w.cur].Commands {
		pod := ""
		switch c.Kind() {
		case "sh":
			pod = c.Pod
		case "run":
			args, err := scenarios.SplitWords(c.Run)
			if err != nil || len(args) < 3 || args[1] != "exec" {
				continue
			}
			rest := args[2:]
			for i := 0; i < len(rest) && rest[i] != "--"; i++ {
				switch a := rest[i]; {
				case a == "-c" || a == "--container":
					i++ // its value is a container's name, not the pod's
				case !strings.HasPrefix(a, "-"):
					pod = a
				}
				if pod != "" {
					break
				}
			}
		}
		if pod == "" {
			continue
		}
		if p, err := scenarios.Expand(pod, vars); err == nil && p != "" {
			return p
		}
	}
	return ""
}

// openShell hands the terminal to `pi exec -it POD -- sh` until the learner leaves it; the tutorial comes
// back where it was. A step that is running goes on meanwhile: its events wait in the pipe.
func (w *walk) openShell() tea.Cmd {
	pod := w.shellPod()
	cmd, err := w.shell(pod)
	if err != nil {
		w.notice = err.Error()
		return nil
	}
	return w.execProcess(cmd, func(err error) tea.Msg { return shellMsg{pod: pod, err: err} })
}

// walkKeys are the walkthrough's bindings as they stand: a key that would do nothing now is disabled, so it
// is neither shown in the footer nor answered.
type walkKeys struct {
	Run, Next, Prev, Up, Down, PageUp, PageDown, Shell, Back key.Binding
}

func (w *walk) walkKeys() walkKeys {
	k := w.keys
	run := k.Run
	switch {
	case w.cur == -1:
		run = withHelp(k.Run, "begin")
	case w.steps[w.cur] == passed || w.steps[w.cur] == failed:
		run = withHelp(k.Run, "run step again")
	}
	pod := w.shellPod()
	shell := enabled(k.Shell, pod != "" && w.shell != nil)
	if pod != "" {
		shell = enabled(withHelp(k.Shell, "shell in "+pod), shell.Enabled())
	}
	return walkKeys{
		Run:      run,
		Next:     enabled(k.Next, w.cur < len(w.sc.Steps)-1),
		Prev:     enabled(k.Prev, w.cur > -1),
		Up:       enabled(k.Up, !w.text.AtTop()),
		Down:     enabled(k.Down, !w.text.AtBottom()),
		PageUp:   enabled(k.PageUp, !w.output.AtTop()),
		PageDown: enabled(k.PageDown, !w.output.AtBottom()),
		Shell:    shell,
		Back:     k.Back,
	}
}

// bindings are the keys the walkthrough answers now (key), and the app's own.
func (w *walk) bindings() bindings {
	k, app := w.walkKeys(), w.keys
	return bindings{
		short: []key.Binding{short(k.Run, runShort(k.Run.Help().Desc)), short(k.Next, "next"), short(k.Prev, "prev"),
			short(k.Shell, k.Shell.Help().Desc), short(k.Back, "leave"), short(app.Help, "keys"), app.Quit},
		full: [][]key.Binding{
			{k.Run, k.Next, k.Prev, k.Shell},
			{k.Up, k.Down, k.PageUp, k.PageDown},
			{k.Back, withHelp(app.Quit, "quit (cleans up)"), withHelp(app.Help, "hide these keys")},
		},
	}
}

// runShort is enter's word on the one-line footer: "run", "begin" or "rerun".
func runShort(desc string) string {
	if desc == "run step again" {
		return "rerun"
	}
	return strings.TrimSuffix(desc, " step")
}

func (w *walk) key(msg tea.KeyMsg) tea.Cmd {
	k := w.walkKeys()
	switch {
	case key.Matches(msg, k.Run):
		return w.runCurrent()
	case key.Matches(msg, k.Next):
		w.goStep(w.cur + 1)
	case key.Matches(msg, k.Prev):
		w.goStep(w.cur - 1)
	case key.Matches(msg, k.Up):
		w.text.ScrollUp(1)
	case key.Matches(msg, k.Down):
		w.text.ScrollDown(1)
	case key.Matches(msg, k.PageUp):
		w.output.HalfPageUp()
	case key.Matches(msg, k.PageDown):
		w.output.HalfPageDown()
	case key.Matches(msg, k.Shell):
		return w.openShell()
	case key.Matches(msg, k.Back):
		return w.cleanup()
	}
	return nil
}

// goStep shows step i (-1: the intro) from its first line: the text pane of the step before may have been
// scrolled, or sent to the bottom by its verdict.
func (w *walk) goStep(i int) {
	w.cur, w.notice = i, ""
	w.refresh()
	w.text.GotoTop()
}

func (w *walk) runCurrent() tea.Cmd {
	switch {
	case w.cur == -1:
		w.goStep(0)
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
		// "a step is running; wait" and the like were about the step that just ended.
		w.busy, w.notice = false, ""
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
	s, err := renderMarkdown(md, w.glamourStyle, max(w.text.Width, 20), lipgloss.ColorProfile())
	if err != nil {
		s = md
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
			// A variable a later step captures shows as <NAME>, not as template syntax.
			for i, l := range strings.Split(fillVars(w.runner.Display(c), w.runner.Vars()), "\n") {
				prefix := "  "
				if i == 0 {
					prefix = "$ "
				}
				b.WriteString(st.Command.Render(prefix+l) + "\n")
			}
		}
	}
	if pod := w.shellPod(); pod != "" && w.shell != nil {
		// The lessons say "we're in" after pi exec -it: here is the way in, and back.
		b.WriteString("\n" + st.Dim.Render(fmt.Sprintf("s opens a shell in %s (pi exec -it %s -- sh); exit comes back here.", pod, pod)) + "\n")
	}
	if len(step.Checks) > 0 {
		b.WriteString("\n" + st.Title.Render("Checks") + "\n")
		vars := w.runner.Vars()
		for j, c := range step.Checks {
			b.WriteString(w.mark(w.checks[w.cur][j]) + " " + fillVars(c.Describe(), vars) + "\n")
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

// fillVars shows text with the values captured so far ({{.FIP}} → 198.18.0.7), and a variable not captured
// yet by its name (<FIP>) rather than as template syntax.
func fillVars(text string, vars map[string]string) string {
	refs, err := scenarios.Refs(text)
	if err != nil || len(refs) == 0 {
		return text
	}
	all := make(map[string]string, len(vars)+len(refs))
	for _, r := range refs {
		all[r] = "<" + r + ">"
	}
	for k, v := range vars {
		all[k] = v
	}
	if out, err := scenarios.Expand(text, all); err == nil {
		return out
	}
	return text
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

// scrollMark says where the text pane is when the step's text does not fit: how much is read, and which key
// shows the rest. Empty when it all fits.
func (w *walk) scrollMark() string {
	total := w.text.TotalLineCount()
	if total <= w.text.Height || w.text.Height == 0 {
		return ""
	}
	seen := min(100, (w.text.YOffset+w.text.Height)*100/total)
	switch {
	case !w.text.AtBottom():
		return fmt.Sprintf("↓ more (j) %d%%", seen)
	default:
		return "↑ top (k) · end"
	}
}

// titleLine is the pane's title with the scroll mark at its right.
func (w *walk) titleLine(title string, width int) string {
	mark := w.scrollMark()
	if mark == "" {
		return w.styles.PaneTitle.Render(truncate(title, width))
	}
	tw := max(width-lipgloss.Width(mark)-1, 1)
	title = truncate(title, tw)
	gap := max(width-lipgloss.Width(title)-lipgloss.Width(mark), 1)
	return w.styles.PaneTitle.Render(title) + strings.Repeat(" ", gap) + w.styles.Running.Render(mark)
}

func (w *walk) View() string {
	tw, th, ow, oh := w.layout()
	title := "Introduction"
	if w.cur >= 0 {
		title = fmt.Sprintf("Step %d: %s", w.cur+1, w.sc.Steps[w.cur].Title)
	}
	top := pane(w.styles, tw, th+1, w.titleLine(title, tw)+"\n"+w.text.View())
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
