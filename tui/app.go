// Package tui is pi's terminal UI: a workshop walkthrough (the step's text, its commands and their output,
// the checks that prove it worked) beside a live view of the account's pods and services. It drives the
// same scenarios.Runner as `pi scenario run`.
package tui

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/scenarios"
)

// Options say what the tutorial offers and which lab it plays in.
type Options struct {
	Scenarios []*scenarios.Scenario
	// Start opens the first scenario at once instead of showing the list.
	Start  bool
	Runner scenarios.Options

	// newRunner and watcher replace the lab in tests.
	newRunner   func(sc *scenarios.Scenario, sink func(scenarios.Event)) (Runner, error)
	watcher     Watcher
	network     NetworkSource
	execProcess func(*exec.Cmd, tea.ExecCallback) tea.Cmd
}

// errMsg is an error for the status line.
type errMsg struct{ err error }

// App is the root model: the scenario list or a walkthrough, the live pane, help.
type App struct {
	common
	opts Options
	list *list
	walk *walk
	live *live
	net  *network
	// showNet: the right pane is the network pane (the map and the last trace), not the live pane.
	showNet  bool
	help     help.Model
	showHelp bool
	err      error
}

func newApp(ctx context.Context, o Options, glamourStyle string) *App {
	c := common{ctx: ctx, styles: defaultStyles(), keys: defaultKeys(), glamourStyle: glamourStyle}
	if o.newRunner == nil {
		o.newRunner = func(sc *scenarios.Scenario, sink func(scenarios.Event)) (Runner, error) {
			ro := o.Runner
			ro.Sink = sink
			return scenarios.NewRunner(sc, ro)
		}
	}
	if o.watcher == nil || o.network == nil {
		cl, err := o.Runner.Client(o.Runner.Account)
		if err != nil {
			// The kubeconfig was read once already (pi's flags); a client that fails says so in the panes.
			cl = client.New(o.Runner.Socket, o.Runner.Account)
		}
		if o.watcher == nil {
			o.watcher = cl
		}
		if o.network == nil {
			o.network = labNetwork{cl}
		}
	}
	a := &App{common: c, opts: o, help: help.New()}
	a.list = newList(c, o.Scenarios)
	a.live = newLive(c, o.watcher)
	a.net = newNetwork(c, o.network)
	return a
}

func (a *App) Init() tea.Cmd {
	cmds := []tea.Cmd{a.live.Init()}
	if a.opts.Start && len(a.opts.Scenarios) > 0 {
		sc := a.opts.Scenarios[0]
		cmds = append(cmds, func() tea.Msg { return chooseMsg{sc} })
	}
	return tea.Batch(cmds...)
}

func (a *App) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	var cmd tea.Cmd
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		a.SetSize(msg.Width, msg.Height)
		return a, nil
	case tea.KeyMsg:
		switch {
		case key.Matches(msg, a.keys.Quit):
			return a, tea.Quit
		case key.Matches(msg, a.keys.Help):
			a.showHelp = !a.showHelp
			a.SetSize(a.width, a.height)
			return a, nil
		case key.Matches(msg, a.keys.Pane):
			a.showNet = !a.showNet
			if a.showNet {
				// The map as it is now: steps change it.
				return a, a.net.fetch()
			}
			return a, nil
		}
		a.err = nil
		if a.walk != nil {
			a.walk, cmd = a.walk.Update(msg)
			a.leaveIfDone()
		} else {
			a.list, cmd = a.list.Update(msg)
		}
		return a, cmd
	case chooseMsg:
		return a, a.open(msg.sc)
	case errMsg:
		a.err = msg.err
		return a, nil
	case eventMsg:
		var fetch tea.Cmd
		switch ev := msg.ev; {
		case ev.Kind == scenarios.CommandFinished && ev.Trace != nil:
			// A step traced a request: its path is what the step is about, so the pane shows it.
			a.net.trace, a.showNet = ev.Trace, true
			fetch = a.net.fetch()
		case ev.Kind == scenarios.StepFinished && a.showNet:
			fetch = a.net.fetch()
		}
		if a.walk != nil {
			a.walk, cmd = a.walk.Update(msg)
			a.leaveIfDone()
		}
		return a, tea.Batch(cmd, fetch)
	case networkMsg:
		return a, a.net.update(msg)
	case shellMsg:
		if a.walk != nil {
			a.walk, cmd = a.walk.Update(msg)
		}
		return a, cmd
	case watchMsg, watchStartedMsg, watchEndedMsg, rewatchMsg:
		a.live, cmd = a.live.Update(msg)
		if _, ok := msg.(watchMsg); ok && a.showNet {
			// The map on screen is a live one: what the watch reports changed, it draws again.
			cmd = tea.Batch(cmd, a.net.changed())
		}
		return a, cmd
	}
	return a, nil
}

// leaveIfDone goes back to the list once the walkthrough's cleanup is over.
func (a *App) leaveIfDone() {
	if a.walk == nil || !a.walk.done {
		return
	}
	a.walk.runner.Close()
	a.walk.pipe.close(nil)
	a.walk, a.err = nil, a.walk.doneErr
	a.SetSize(a.width, a.height)
}

func (a *App) open(sc *scenarios.Scenario) tea.Cmd {
	p := newPipe()
	r, err := a.opts.newRunner(sc, p.Sink)
	if err != nil {
		return func() tea.Msg { return errMsg{err} }
	}
	a.walk = newWalk(a.common, sc, r, p)
	a.net.trace = nil // another scenario's path
	a.walk.shell = a.shellCommand
	if a.opts.execProcess != nil {
		a.walk.execProcess = a.opts.execProcess
	}
	a.SetSize(a.width, a.height)
	return a.walk.Init()
}

// shellCommand is `pi exec -it POD -- sh` against the scenario's lab and account, as the runner runs its
// commands: the same binary, the lab in the environment.
func (a *App) shellCommand(pod string) (*exec.Cmd, error) {
	ro := a.opts.Runner
	exe := ro.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the pi binary for a shell in %s: %w", pod, err)
		}
	}
	cmd := exec.Command(exe, "exec", "-it", pod, "--", "sh")
	cmd.Args[0] = "pi"
	cmd.Env = os.Environ()
	for k, v := range map[string]string{"PI_SOCKET": ro.Socket, "PI_LAB": ro.Lab, "PI_ACCOUNT": ro.Account, "PI_KUBECONFIG": ro.Kubeconfig, "PI_CONTEXT": ro.KubeContext} {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	return cmd, nil
}

// SetSize lays out the header line, the body (walkthrough or list beside the live pane) and the footer.
func (a *App) SetSize(w, h int) {
	a.common.SetSize(w, h)
	a.help.Width = max(w-1, 0) // the footer's leading blank
	body := max(h-1-lipgloss.Height(a.footer()), 0)
	// The live pane keeps room for an IP, a pod name cut in the middle and its status, even at 80 columns.
	left := w - max(w/3, min(34, w/2))
	a.list.SetSize(left, body)
	if a.walk != nil {
		a.walk.SetSize(left, body)
	}
	a.live.SetSize(w-left, body)
	a.net.SetSize(w-left, body)
}

func (a *App) header() string {
	title := a.styles.Header.Render("Pi tutorial")
	right := ""
	if a.walk != nil {
		title += a.styles.Dim.Render(" · ") + a.styles.Title.Render(a.walk.sc.Title)
		right = a.walk.progress()
	}
	gap := a.width - lipgloss.Width(title) - lipgloss.Width(right) - 2
	if gap < 1 {
		return truncate(" "+title, a.width)
	}
	return " " + title + strings.Repeat(" ", gap) + right + " "
}

func (a *App) footer() string {
	var keys bindings
	if a.walk != nil {
		keys = a.walk.bindings()
	} else {
		keys = a.list.bindings()
	}
	keys = a.withPane(keys)
	// A narrow screen loses the keys the full help (?) still lists: previous step first, then next.
	for _, drop := range []string{"p", "n"} {
		if lipgloss.Width(" "+a.help.ShortHelpView(keys.short)) <= a.width {
			break
		}
		keys.short = slices.DeleteFunc(slices.Clone(keys.short), func(b key.Binding) bool { return b.Help().Key == drop })
	}
	var s string
	if a.showHelp {
		s = a.help.FullHelpView(keys.FullHelp())
	} else {
		s = a.help.ShortHelpView(keys.ShortHelp())
	}
	// help cuts a line that does not fit only when its "…" does; cut what is left here.
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = truncate(" "+l, a.width)
	}
	s = strings.Join(lines, "\n")
	if a.err != nil {
		s = a.styles.Error.Render(truncate(" error: "+a.err.Error(), a.width)) + "\n" + s
	}
	return s
}

// withPane adds the key that toggles the right pane to a view's keys: before "? keys" on the short line,
// and with the app's keys in the full help. It says which pane it shows next.
func (a *App) withPane(b bindings) bindings {
	pane, shortPane := withHelp(a.keys.Pane, "network pane"), "map"
	if a.showNet {
		pane, shortPane = withHelp(a.keys.Pane, "live pane"), "live"
	}
	out := bindings{full: append([][]key.Binding(nil), b.full...)}
	placed := false
	for _, k := range b.short {
		if !placed && k.Help().Key == a.keys.Help.Help().Key {
			out.short = append(out.short, short(pane, shortPane))
			placed = true
		}
		out.short = append(out.short, k)
	}
	if !placed {
		out.short = append(out.short, pane)
	}
	if n := len(out.full); n > 0 {
		out.full[n-1] = append([]key.Binding{pane}, out.full[n-1]...)
	}
	return out
}

func (a *App) View() string {
	if a.width == 0 {
		return ""
	}
	var left string
	if a.walk != nil {
		left = a.walk.View()
	} else {
		left = a.list.View()
	}
	right := a.live.View()
	if a.showNet {
		right = a.net.View()
	}
	body := lipgloss.JoinHorizontal(lipgloss.Top, left, right)
	return a.header() + "\n" + body + "\n" + a.footer()
}

// Run runs the tutorial until the learner quits, then cleans up the scenario that was open.
func Run(ctx context.Context, o Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	style := "light"
	if lipgloss.HasDarkBackground() {
		style = "dark"
	}
	app := newApp(ctx, o, style)
	final, err := tea.NewProgram(app, tea.WithAltScreen(), tea.WithContext(ctx)).Run()
	if err != nil && err != tea.ErrProgramKilled {
		return err
	}
	a, _ := final.(*App)
	if a == nil || a.walk == nil {
		return nil
	}
	// A step may still be running: stop it, then let the runner print what it does from now on.
	w := a.walk
	w.pipe.close(printEvent)
	cancel()
	w.pipe.ops.Wait()
	defer w.runner.Close()
	if !w.prepared {
		return nil
	}
	fmt.Fprintf(os.Stdout, "cleaning up scenario %s:\n", w.sc.Name)
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer ccancel()
	return w.runner.Cleanup(cctx)
}

func printEvent(ev scenarios.Event) {
	switch ev.Kind {
	case scenarios.CommandStarted:
		fmt.Fprintf(os.Stdout, "$ %s\n", ev.Text)
	case scenarios.Output:
		fmt.Fprint(os.Stdout, ev.Text)
	case scenarios.Notice:
		fmt.Fprintf(os.Stdout, "# %s\n", ev.Text)
	}
}
