package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/net/netns"
	"k8s.io/apimachinery/pkg/types"
)

// Options say which lab a Runner plays against and where its events go.
type Options struct {
	Socket string // the daemon's API socket
	// Kubeconfig, if set, makes the runner a client of the lab it names instead (from another machine: the
	// learner's own account; KubeContext: its context, "" for the current one).
	Kubeconfig, KubeContext string
	Lab                     string
	Account                 string
	// Exe is the pi binary the commands run; empty: this very binary (os.Executable).
	Exe string
	// WorkDir is where write: puts files and commands run; empty: a temporary directory Close removes.
	WorkDir string
	// Sink receives every event, from the goroutine calling the Runner; nil drops them.
	Sink func(Event)
	// CommandTimeout bounds one command (one attempt of a within: command); 0 means 3 minutes.
	CommandTimeout time.Duration
	// Parse reads a pi command line (without "pi") as pi's flag parser does, to know which objects a
	// command makes or changes; nil: ParseCommandLine.
	Parse func(args []string) (ParsedCommand, error)
}

// EventKind tells what an Event reports.
type EventKind int

const (
	StepStarted     EventKind = iota // Step began; Text is its title
	CommandStarted                   // Index: command; Text: the command line as the learner would type it
	Output                           // Text: output of the running command, as it comes
	CommandFinished                  // Index: command; Err: why it failed
	CheckFinished                    // Index: check; Text: the check described; Err: nil when it passed
	StepFinished                     // Err: nil when every command and check of the step passed
	Notice                           // Text: the runner's own remark (a retry, a skipped cleanup command)
	// The suite's own (RunSuite), around a runner's:
	ScenarioStarted  // Text: the scenario's title
	ScenarioFinished // Err: the scenario's first failure
	StepSkipped      // Text: the step's title; a step not run after a failure
)

// Steps that are not the scenario's own.
const (
	PrepareStep = -1 // images and working directory, before the first step
	CleanupStep = -2 // the cleanup: section
)

// Event is one thing that happened while a scenario ran.
type Event struct {
	Kind     EventKind
	Scenario string
	Step     int
	Index    int
	Text     string
	Err      error
	// Time is when it happened (set by the runner).
	Time time.Time
	// Account is the account the scenario plays in (set by RunSuite).
	Account string
	// Trace is, on the CommandFinished of a trace: command, the path the request took (also when it failed).
	Trace *daemon.TraceResult
}

// StepError says which scenario, step and command or check failed, and how.
type StepError struct {
	Scenario string
	Step     int // 1-based; 0 for preparation, -1 for cleanup
	Title    string
	What     string // "command 2 `pi create fip`", "check 1 (...)"
	Err      error
}

func (e *StepError) Error() string {
	where := fmt.Sprintf("scenario %q, step %d %q", e.Scenario, e.Step, e.Title)
	switch e.Step {
	case 0:
		where = fmt.Sprintf("scenario %q, preparation", e.Scenario)
	case -1:
		where = fmt.Sprintf("scenario %q, cleanup", e.Scenario)
	}
	if e.What != "" {
		where += ", " + e.What
	}
	return where + ": " + e.Err.Error()
}

func (e *StepError) Unwrap() error { return e.Err }

// Runner plays one scenario against a lab, step by step. Its methods run one at a time (the TUI runs them
// on a goroutine of their own); Vars may be called at any time.
type Runner struct {
	sc     *Scenario
	opt    Options
	cl     *client.Client
	info   daemon.Info
	pool   netip.Prefix
	ownDir bool
	g      *guard
	// nodes is how many nodes the lab has, once Prepare asked (0: not asked, the scenario needs no count).
	nodes int

	mu   sync.Mutex
	vars map[string]string
}

// NewRunner makes a runner of sc; nothing happens in the lab until Prepare.
func NewRunner(sc *Scenario, opt Options) (*Runner, error) {
	if opt.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the pi binary to run the scenario's commands: %w", err)
		}
		opt.Exe = exe
	}
	if opt.CommandTimeout == 0 {
		opt.CommandTimeout = 3 * time.Minute
	}
	cl, err := opt.Client(opt.Account)
	if err != nil {
		return nil, err
	}
	return &Runner{sc: sc, opt: opt, cl: cl, g: newGuard(cl, cl.Account, opt.Parse), vars: map[string]string{}}, nil
}

// Client is a client of the lab acting for account: over the socket, or through the kubeconfig (where
// account "" is the kubeconfig's own).
func (o Options) Client(account string) (*client.Client, error) {
	if o.Kubeconfig == "" {
		return client.New(o.Socket, account), nil
	}
	return client.FromKubeconfig(o.Kubeconfig, o.KubeContext, account)
}

// Scenario is the scenario the runner plays.
func (r *Runner) Scenario() *Scenario { return r.sc }

// WorkDir is where the scenario's files are written and its commands run ("" before Prepare).
func (r *Runner) WorkDir() string { return r.opt.WorkDir }

// Vars returns a copy of the variables captured so far.
func (r *Runner) Vars() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.vars))
	for k, v := range r.vars {
		out[k] = v
	}
	return out
}

func (r *Runner) emit(ev Event) {
	if r.opt.Sink != nil {
		ev.Scenario = r.sc.Name
		ev.Time = time.Now()
		r.opt.Sink(ev)
	}
}

// Prepare asks the lab where its Internet side is, builds the images the scenario needs and makes the
// working directory.
func (r *Runner) Prepare(ctx context.Context) (err error) {
	r.emit(Event{Kind: StepStarted, Step: PrepareStep, Text: "prepare"})
	defer func() {
		if err != nil {
			err = &StepError{Scenario: r.sc.Name, Step: 0, Err: err}
		}
		r.emit(Event{Kind: StepFinished, Step: PrepareStep, Err: err})
	}()
	// From another machine the lab's own facts are the admin's; its Floating IPs are fetched by the lab
	// (httpGet), which knows its pool.
	if r.cl.Socket != "" {
		if err := r.cl.Do(ctx, "GET", "/x/info", nil, nil, &r.info); err != nil {
			return fmt.Errorf("ask the lab daemon for its info: %w", err)
		}
	}
	if r.info.FIPPool != "" {
		p, err := netip.ParsePrefix(r.info.FIPPool)
		if err != nil {
			return fmt.Errorf("the lab reports FIP pool %q, which is no CIDR: %w", r.info.FIPPool, err)
		}
		r.pool = p
	}
	if len(r.sc.Images) > 0 {
		var have []struct{ Name string }
		if err := r.cl.Do(ctx, "GET", "/x/images", nil, nil, &have); err != nil {
			return fmt.Errorf("list the lab's images: %w", err)
		}
		names := map[string]bool{}
		for _, im := range have {
			names[im.Name] = true
		}
		var missing []string
		for _, n := range r.sc.Images {
			if !names[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 && r.cl.Socket == "" {
			return fmt.Errorf("the lab has no image %s, and building images is the lab's admin's: ask for `pi image build %s` on the lab's machine",
				strings.Join(missing, ", "), strings.Join(missing, " "))
		}
		if len(missing) > 0 {
			line := "pi image build " + strings.Join(missing, " ")
			// Building from Debian packages takes minutes on a cold cache; the command timeout is for steps.
			res := r.runLine(ctx, PrepareStep, 0, line, true, 30*time.Minute)
			if res.Err != nil {
				return fmt.Errorf("`%s`: %v: %s", line, res.Err, quoteOutput(res.Output()))
			}
		}
	}
	if err := r.prepareNodes(ctx); err != nil {
		return err
	}
	if r.opt.WorkDir == "" {
		dir, err := os.MkdirTemp("", "pi-scenario-"+r.sc.Name+"-")
		if err != nil {
			return fmt.Errorf("make the scenario's working directory: %w", err)
		}
		r.opt.WorkDir, r.ownDir = dir, true
	}
	return nil
}

// prepareNodes gives a multi-node lab the nodes the scenario says it is about (nodes:), with `pi node add`
// as the learner would; the nodes stay, as the images do. A single-node lab cannot grow nodes (its one
// node is the machine, its pods on the routers' bridges): the scenario plays there anyway, its pods on the
// one node, and a notice says so and how to see the real thing.
func (r *Runner) prepareNodes(ctx context.Context) error {
	need := r.sc.Nodes
	for _, st := range r.sc.Steps {
		for _, c := range st.Checks {
			need = max(need, c.MinNodes)
		}
	}
	if need <= 1 {
		return nil
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := r.cl.Do(ctx, "GET", "/api/v1/nodes", nil, nil, &list); err != nil {
		return fmt.Errorf("list the lab's nodes: %w", err)
	}
	r.nodes = len(list.Items)
	multi := false
	for _, n := range list.Items {
		if n.Metadata.Annotations[api.NodeIndexAnnotation] != "" {
			multi = true
		}
	}
	switch {
	case r.nodes >= r.sc.Nodes:
		return nil
	case !multi:
		r.emit(Event{Kind: Notice, Step: PrepareStep, Text: fmt.Sprintf("this lab has one node, so the workshop's pods all run on it: "+
			"the workshop is about %d nodes; a lab made with `pi up --nodes %d` puts its pods on several nodes, their network stretched between them by VXLAN", r.sc.Nodes, r.sc.Nodes)})
		return nil
	case r.cl.Socket == "":
		r.emit(Event{Kind: Notice, Step: PrepareStep, Text: fmt.Sprintf("the lab has %s and the workshop is about %d; adding nodes is the lab admin's (`pi node add` on the lab's machine), so the pods share the ones there are",
			nodesText(r.nodes), r.sc.Nodes)})
		return nil
	}
	r.emit(Event{Kind: Notice, Step: PrepareStep, Text: fmt.Sprintf("the lab has %s and the workshop is about %d: adding %d (they stay; `pi node delete NAME` removes one)",
		nodesText(r.nodes), r.sc.Nodes, r.sc.Nodes-r.nodes)})
	for r.nodes < r.sc.Nodes {
		res := r.runLine(ctx, PrepareStep, 0, "pi node add", true, r.opt.CommandTimeout)
		if res.Err != nil {
			return fmt.Errorf("`pi node add` (the workshop is about %d nodes, the lab has %d): %v: %s", r.sc.Nodes, r.nodes, res.Err, quoteOutput(res.Output()))
		}
		r.nodes++
	}
	return nil
}

func nodesText(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

// Close removes the working directory the runner made.
func (r *Runner) Close() error {
	if r.ownDir {
		return os.RemoveAll(r.opt.WorkDir)
	}
	return nil
}

// RunStep runs step i (0-based): its commands, then its checks, stopping at the first failure, which it
// returns as a *StepError.
func (r *Runner) RunStep(ctx context.Context, i int) (err error) {
	if i < 0 || i >= len(r.sc.Steps) {
		return fmt.Errorf("scenario %q has steps 1 to %d, not %d", r.sc.Name, len(r.sc.Steps), i+1)
	}
	if r.opt.WorkDir == "" {
		return fmt.Errorf("scenario %q: Prepare must run before the steps", r.sc.Name)
	}
	st := r.sc.Steps[i]
	r.emit(Event{Kind: StepStarted, Step: i, Text: st.Title})
	defer func() {
		r.emit(Event{Kind: StepFinished, Step: i, Err: err})
		r.reportProgress(ctx, i, err == nil)
	}()
	fail := func(what string, err error) error {
		return &StepError{Scenario: r.sc.Name, Step: i + 1, Title: st.Title, What: what, Err: err}
	}
	var out strings.Builder
	for j, c := range st.Commands {
		res, err := r.runCommand(ctx, i, j, c)
		out.WriteString(res.Stdout)
		if err != nil {
			return fail(fmt.Sprintf("command %d `%s`", j+1, r.Display(c)), err)
		}
	}
	for j, c := range st.Checks {
		if c.MinNodes > r.nodes {
			// Not a failure: the scenario plays on a smaller lab on purpose (Prepare said why).
			r.emit(Event{Kind: CheckFinished, Step: i, Index: j, Text: fmt.Sprintf("%s (skipped: it needs a lab of %d nodes, this one has %d)", r.describe(c), c.MinNodes, max(r.nodes, 1))})
			continue
		}
		err := r.runCheck(ctx, i, c, Result{Stdout: out.String()})
		r.emit(Event{Kind: CheckFinished, Step: i, Index: j, Text: r.describe(c), Err: err})
		if err != nil {
			return fail(fmt.Sprintf("check %d (%s)", j+1, r.describe(c)), err)
		}
	}
	return nil
}

// Cleanup runs the cleanup: section, then deletes what the run made and the section left. It never deletes
// an object the run did not make: a cleanup command naming one is skipped with a notice, and so is one
// naming a variable never captured. It runs them all and returns what failed.
func (r *Runner) Cleanup(ctx context.Context) (err error) {
	now, serr := r.g.snapshot(ctx)
	if serr != nil {
		return &StepError{Scenario: r.sc.Name, Step: -1, Err: serr}
	}
	left := r.g.leftover(now)
	if len(r.sc.Cleanup) == 0 && len(left) == 0 {
		return nil
	}
	r.emit(Event{Kind: StepStarted, Step: CleanupStep, Text: "cleanup"})
	var errs []error
	for j, c := range r.sc.Cleanup {
		line, err := Expand(c.Run, r.Vars())
		if err != nil {
			var mv *MissingVarError
			if errors.As(err, &mv) {
				r.emit(Event{Kind: Notice, Step: CleanupStep, Text: fmt.Sprintf("skipped `%s`: {{.%s}} was never captured", c.Run, mv.Name)})
				continue
			}
		}
		if args, err := SplitWords(line); err == nil && len(args) > 0 {
			eff, err := r.g.effectsOf(ctx, args[1:], r.opt.WorkDir)
			if err == nil {
				err = r.g.check(ctx, eff)
			}
			var no *NotOwnedError
			if errors.As(err, &no) {
				r.emit(Event{Kind: Notice, Step: CleanupStep, Text: fmt.Sprintf("skipped `%s`: %s in account %q was not made by this run; it stays", line, no.Ref, no.Account)})
				continue
			} else if err != nil {
				errs = append(errs, fmt.Errorf("`%s`: %w", line, err))
				continue
			}
		}
		res := r.runLine(ctx, CleanupStep, j, c.Run, true, r.opt.CommandTimeout)
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("`%s`: %v: %s", r.Display(c), res.Err, quoteOutput(res.Output())))
		}
	}
	if err := r.sweep(ctx); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		err = &StepError{Scenario: r.sc.Name, Step: -1, Err: errors.Join(errs...)}
	}
	r.emit(Event{Kind: StepFinished, Step: CleanupStep, Err: err})
	return err
}

// sweep deletes what the run made and its cleanup section left, checking each object's UID first: a
// learner may have made an object of the same name since.
func (r *Runner) sweep(ctx context.Context) error {
	now, err := r.g.snapshot(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, uid := range r.g.leftover(now) {
		ref := now[uid]
		if got, err := r.g.lookup(ctx, ref); err != nil || got != uid {
			continue
		}
		k, _ := api.LookupKind(ref.Kind)
		line := fmt.Sprintf("pi delete %s %s --ignore-not-found", k.Singular, ref.Name)
		r.emit(Event{Kind: Notice, Step: CleanupStep, Text: fmt.Sprintf("%s was made by this run and is still there", ref)})
		res := r.runLine(ctx, CleanupStep, -1, line, true, r.opt.CommandTimeout)
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("`%s`: %v: %s", line, res.Err, quoteOutput(res.Output())))
		}
	}
	return errors.Join(errs...)
}

// Display is a command as the learner would type it, with the variables known so far filled in.
func (r *Runner) Display(c Command) string {
	vars := r.Vars()
	exp := func(s string) string {
		if e, err := Expand(s, vars); err == nil {
			return e
		}
		return s
	}
	switch c.Kind() {
	case "http":
		return "open " + exp(c.HTTP) + "   # in a browser on the laptop"
	case "write":
		content, err := r.fileContent(c, vars)
		if err != nil {
			content = "(" + err.Error() + ")\n"
		}
		return "cat <<EOF > " + c.Write + "\n" + content + "EOF"
	case "sh":
		return "pi exec " + exp(c.Pod) + " -- sh -c " + shQuote(exp(c.Sh))
	case "trace":
		from, target, err := TraceArgs(exp(c.Trace))
		if err != nil {
			return "pi trace " + exp(c.Trace)
		}
		return traceLine(from, target)
	}
	return exp(c.Run)
}

func (r *Runner) describe(c Check) string {
	d := c.Describe()
	if e, err := Expand(d, r.Vars()); err == nil {
		return e
	}
	return d
}

// runCommand runs a command of a step. A pi command line is looked at first: one that would make an object
// the learner holds, or change one the run did not make, stops here. On a step re-run, a command whose
// objects this run made are all still there is not run again: its output of then is replayed (a second
// `pi create fip` would hold a second address).
func (r *Runner) runCommand(ctx context.Context, step, idx int, c Command) (Result, error) {
	if c.Kind() != "run" {
		return r.retryCommand(ctx, step, idx, c)
	}
	key := [2]int{step, idx}
	if res, done, err := r.replay(ctx, step, idx, c); done || err != nil {
		return res, err
	}
	refuse := func(err error) (Result, error) {
		r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: r.Display(c)})
		r.emit(Event{Kind: CommandFinished, Step: step, Index: idx, Err: err})
		return Result{Err: err}, err
	}
	line, err := Expand(c.Run, r.Vars())
	if err != nil {
		return refuse(err)
	}
	args, err := SplitWords(line)
	if err != nil || len(args) == 0 {
		return refuse(fmt.Errorf("%q is not a pi command line", line))
	}
	eff, err := r.g.effectsOf(ctx, args[1:], r.opt.WorkDir)
	if err == nil {
		err = r.g.check(ctx, eff)
	}
	if err != nil {
		return refuse(err)
	}
	before, err := r.g.snapshot(ctx)
	if err != nil {
		return refuse(err)
	}
	res, err := r.retryCommand(ctx, step, idx, c)
	// What appeared is the run's even when the command failed half-way: the cleanup deletes it.
	after, serr := r.g.snapshot(ctx)
	if serr != nil {
		if err == nil {
			err = serr
		}
		return res, err
	}
	r.g.record(key, before, after, res)
	return res, err
}

// replay serves a step re-run: done when command (step, idx) made objects before that all still exist.
// Objects it made of which only some are left are deleted, so that the command can make them again.
func (r *Runner) replay(ctx context.Context, step, idx int, c Command) (Result, bool, error) {
	made, res := r.g.madeBy([2]int{step, idx})
	if len(made) == 0 {
		return Result{}, false, nil
	}
	now, err := r.g.snapshot(ctx)
	if err != nil {
		return Result{Err: err}, false, err
	}
	var there []types.UID
	var names []string
	for _, uid := range made {
		if ref, ok := now[uid]; ok {
			there = append(there, uid)
			names = append(names, ref.String())
		}
	}
	switch {
	case len(there) == len(made):
		r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: r.Display(c)})
		r.emit(Event{Kind: Notice, Step: step, Index: idx, Text: fmt.Sprintf("not run again: this run made %s already; its output then:", strings.Join(names, ", "))})
		r.emit(Event{Kind: Output, Step: step, Index: idx, Text: res.Output()})
		r.emit(Event{Kind: CommandFinished, Step: step, Index: idx})
		vars, err := Capture(c, res.Stdout)
		r.setVars(step, idx, vars)
		return res, true, err
	case len(there) > 0:
		for _, uid := range there {
			ref := now[uid]
			if got, err := r.g.lookup(ctx, ref); err != nil || got != uid {
				continue
			}
			k, _ := api.LookupKind(ref.Kind)
			line := fmt.Sprintf("pi delete %s %s --ignore-not-found", k.Singular, ref.Name)
			r.emit(Event{Kind: Notice, Step: step, Index: idx, Text: fmt.Sprintf("%s is left of this command's last run; deleted so it runs again", ref)})
			if res := r.runLine(ctx, step, -1, line, true, r.opt.CommandTimeout); res.Err != nil {
				err := fmt.Errorf("`%s`: %v: %s", line, res.Err, quoteOutput(res.Output()))
				return Result{Err: err}, false, err
			}
		}
	}
	return Result{}, false, nil
}

func (r *Runner) setVars(step, idx int, vars map[string]string) {
	r.mu.Lock()
	for k, v := range vars {
		r.vars[k] = v
	}
	r.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		r.emit(Event{Kind: Notice, Step: step, Index: idx, Text: fmt.Sprintf("%s=%s", k, vars[k])})
	}
}

func (r *Runner) retryCommand(ctx context.Context, step, idx int, c Command) (Result, error) {
	deadline := time.Now().Add(time.Duration(c.Within))
	for attempt := 1; ; attempt++ {
		res, vars, err := r.attempt(ctx, step, idx, c, c.Within == 0)
		if err == nil || c.Within == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			if c.Within != 0 {
				// The output was held back while retrying; the learner sees the last attempt's.
				r.emitCommand(step, idx, c, res)
			}
			r.setVars(step, idx, vars)
			return res, err
		}
		r.emit(Event{Kind: Notice, Step: step, Index: idx, Text: fmt.Sprintf("`%s`, attempt %d: %v; trying again", r.Display(c), attempt, shortErr(err))})
		if !sleepCtx(ctx, time.Second) {
			return res, ctx.Err()
		}
	}
}

// attempt runs c once and returns what it captures; with stream its output is reported as it comes, else
// the caller reports it.
func (r *Runner) attempt(ctx context.Context, step, idx int, c Command, stream bool) (Result, map[string]string, error) {
	var res Result
	switch c.Kind() {
	case "write":
		res = r.write(step, idx, c)
	case "http":
		u, err := Expand(c.HTTP, r.Vars())
		if err != nil {
			return Result{Err: err}, nil, err
		}
		if stream {
			r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: r.Display(c)})
		}
		res = r.httpGet(ctx, u)
		if stream {
			r.emit(Event{Kind: Output, Step: step, Index: idx, Text: res.Output()})
			r.emit(Event{Kind: CommandFinished, Step: step, Index: idx, Err: res.Err})
		}
	case "sh":
		pod, err := Expand(c.Pod, r.Vars())
		if err == nil {
			var line string
			if line, err = Expand(c.Sh, r.Vars()); err == nil {
				res = r.runArgs(ctx, step, idx, r.Display(c), []string{"pi", "exec", pod, "--", "sh", "-c", line}, stream, r.opt.CommandTimeout)
			}
		}
		if err != nil {
			return Result{Err: err}, nil, err
		}
	case "trace":
		line, err := Expand(c.Trace, r.Vars())
		if err != nil {
			return Result{Err: err}, nil, err
		}
		from, target, err := TraceArgs(line)
		if err != nil {
			return Result{Err: err}, nil, err
		}
		if stream {
			r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: r.Display(c)})
		}
		res = r.trace(ctx, from, target)
		if stream {
			r.emit(Event{Kind: Output, Step: step, Index: idx, Text: res.Output()})
			r.emit(Event{Kind: CommandFinished, Step: step, Index: idx, Err: res.Err, Trace: res.Trace})
		}
	default:
		res = r.runLine(ctx, step, idx, c.Run, stream, r.opt.CommandTimeout)
	}
	if res.Err != nil {
		return res, nil, res.Err
	}
	vars, err := Capture(c, res.Stdout)
	return res, vars, err
}

func (r *Runner) emitCommand(step, idx int, c Command, res Result) {
	r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: r.Display(c)})
	r.emit(Event{Kind: Output, Step: step, Index: idx, Text: res.Output()})
	r.emit(Event{Kind: CommandFinished, Step: step, Index: idx, Err: res.Err, Trace: res.Trace})
}

func (r *Runner) runCheck(ctx context.Context, step int, c Check, stepOut Result) error {
	if c.Run == "" && c.HTTP == "" {
		return c.Eval(stepOut, r.Vars())
	}
	deadline := time.Now().Add(time.Duration(c.Within))
	for attempt := 1; ; attempt++ {
		var res Result
		if c.Run != "" {
			res = r.runLine(ctx, step, -1, c.Run, false, r.opt.CommandTimeout)
		} else if u, err := Expand(c.HTTP, r.Vars()); err != nil {
			return err
		} else {
			res = r.httpGet(ctx, u)
		}
		err := c.Eval(res, r.Vars())
		if err == nil || c.Within == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		r.emit(Event{Kind: Notice, Step: step, Text: fmt.Sprintf("check %q, attempt %d: %v; trying again", r.describe(c), attempt, shortErr(err))})
		if !sleepCtx(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

// runLine runs one pi command line: this binary, no shell, the lab in its environment.
func (r *Runner) runLine(ctx context.Context, step, idx int, line string, stream bool, timeout time.Duration) Result {
	expanded, err := Expand(line, r.Vars())
	if err != nil {
		return Result{Err: err}
	}
	args, err := SplitWords(expanded)
	if err != nil {
		return Result{Err: err}
	}
	if len(args) == 0 || args[0] != "pi" {
		return Result{Err: fmt.Errorf("%q is not a pi command line", line)}
	}
	return r.runArgs(ctx, step, idx, expanded, args, stream, timeout)
}

// runArgs runs pi with args (args[0] is "pi"); display is the line the learner sees.
func (r *Runner) runArgs(ctx context.Context, step, idx int, display string, args []string, stream bool, timeout time.Duration) Result {
	if stream {
		r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: display})
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.opt.Exe, args[1:]...)
	cmd.Args[0] = "pi"
	cmd.Dir = r.opt.WorkDir
	cmd.Env = append(os.Environ(), "PI_SOCKET="+r.opt.Socket, "PI_LAB="+r.opt.Lab, "PI_ACCOUNT="+r.opt.Account)
	if r.opt.Kubeconfig != "" {
		cmd.Env = append(os.Environ(), "PI_KUBECONFIG="+r.opt.Kubeconfig, "PI_CONTEXT="+r.opt.KubeContext, "PI_ACCOUNT="+r.cl.Account)
	}
	// A pod's process may keep the pipes open after pi exits; do not wait for it forever.
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	flush := func() {}
	if stream {
		// exec copies stdout and stderr on two goroutines; the sink sees whole lines, one at a time (a table
		// printer writes cell by cell, which would make an event of every cell).
		var mu sync.Mutex
		var partial []byte
		live := writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			partial = append(partial, p...)
			if i := bytes.LastIndexByte(partial, '\n'); i >= 0 {
				r.emit(Event{Kind: Output, Step: step, Index: idx, Text: string(partial[:i+1])})
				partial = append(partial[:0], partial[i+1:]...)
			}
			return len(p), nil
		})
		flush = func() {
			mu.Lock()
			defer mu.Unlock()
			if len(partial) > 0 {
				r.emit(Event{Kind: Output, Step: step, Index: idx, Text: string(partial)})
			}
		}
		cmd.Stdout = io.MultiWriter(&stdout, live)
		cmd.Stderr = io.MultiWriter(&stderr, live)
	} else {
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
	}
	err := cmd.Run()
	flush()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("no end after %s", timeout)
	}
	res := Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
	if stream {
		r.emit(Event{Kind: CommandFinished, Step: step, Index: idx, Err: err})
	}
	return res
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (r *Runner) fileContent(c Command, vars map[string]string) (string, error) {
	data, err := fs.ReadFile(r.sc.files, path.Clean(c.From))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", c.From, err)
	}
	s := string(data)
	for _, old := range slices.Sorted(maps.Keys(c.Replace)) {
		if !strings.Contains(s, old) {
			return "", fmt.Errorf("replace: %q does not occur in %s", old, c.From)
		}
		nv, err := Expand(c.Replace[old], vars)
		if err != nil {
			return "", err
		}
		s = strings.ReplaceAll(s, old, nv)
	}
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s, nil
}

func (r *Runner) write(step, idx int, c Command) Result {
	r.emit(Event{Kind: CommandStarted, Step: step, Index: idx, Text: r.Display(c)})
	content, err := r.fileContent(c, r.Vars())
	if err == nil {
		err = os.WriteFile(filepath.Join(r.opt.WorkDir, c.Write), []byte(content), 0o644)
	}
	r.emit(Event{Kind: CommandFinished, Step: step, Index: idx, Err: err})
	return Result{Err: err}
}

// reportProgress records in the lab that step i passed or failed in the runner's account, for the
// instructor's pi workshop status. A lab that does not record progress (404) is no failure of the step;
// any other refusal is said as a notice.
func (r *Runner) reportProgress(ctx context.Context, i int, passed bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	rep := api.StepReport{Scenario: r.sc.Name, Steps: len(r.sc.Steps), Step: i + 1, Passed: passed}
	err := r.cl.Do(ctx, "POST", "/x/progress", nil, rep, nil)
	var ae *client.APIError
	if err != nil && !(errors.As(err, &ae) && ae.Code == http.StatusNotFound) {
		r.emit(Event{Kind: Notice, Step: i, Text: fmt.Sprintf("could not record step %d's progress in the lab: %v", i+1, err)})
	}
}

// httpGet is the laptop's browser: a GET from the lab's Internet side (its --host-netns, when it has one).
// It only goes to loopback or the lab's Floating IPs: scenarios never send traffic out of the machine.
func (r *Runner) httpGet(ctx context.Context, rawURL string) Result {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" {
		return Result{Err: fmt.Errorf("%q is not an http:// URL", rawURL)}
	}
	if r.cl.Socket == "" {
		// From another machine, "the laptop" is the lab's Internet side: the lab does the GET there.
		var got struct {
			Status int    `json:"status"`
			Body   string `json:"body"`
		}
		if err := r.cl.Do(ctx, "POST", "/x/fetch", nil, map[string]string{"url": rawURL}, &got); err != nil {
			return Result{Err: err}
		}
		res := Result{Stdout: got.Body}
		if got.Status >= 400 {
			res.Err = fmt.Errorf("HTTP %d %s", got.Status, http.StatusText(got.Status))
		}
		return res
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil || !(ip.IsLoopback() || (r.pool.IsValid() && r.pool.Contains(ip))) {
		return Result{Err: fmt.Errorf("refusing to GET %s: a scenario only reaches loopback or the lab's Floating IPs (pool %s)", rawURL, r.info.FIPPool)}
	}
	dial := (&net.Dialer{}).DialContext
	if r.info.HostNetns != "" {
		// The transport dials on goroutines of its own, so every socket is made inside the namespace.
		dial = netns.DialContext(netns.Path(r.info.HostNetns))
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, "GET", rawURL, nil)
	if err != nil {
		return Result{Err: err}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Result{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res := Result{Stdout: string(body), Err: err}
	if resp.StatusCode >= 400 {
		res.Err = fmt.Errorf("HTTP %s", resp.Status)
	}
	return res
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func durationString(d Duration) string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}

// shQuote quotes s for sh when it needs it, for the line the learner reads.
func shQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=,@%+", c))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// traceLine is a trace as the learner would type it.
func traceLine(from, target string) string {
	if from == "internet" || from == "router" {
		return "pi trace --from " + from + " " + target
	}
	return "pi trace " + from + " " + target
}

// trace asks the daemon to send a request from `from` to target and to report the path the kernel saw it
// take (POST /x/trace, what pi trace does); the output is that path, one line per hop (TraceText).
func (r *Runner) trace(ctx context.Context, from, target string) Result {
	ctx, cancel := context.WithTimeout(ctx, r.opt.CommandTimeout)
	defer cancel()
	var tr daemon.TraceResult
	req := daemon.TraceRequest{Account: r.cl.Account, From: from, Target: target}
	if err := r.cl.Do(ctx, "POST", "/x/trace", nil, req, &tr); err != nil {
		return Result{Err: fmt.Errorf("`%s`: %w", traceLine(from, target), err)}
	}
	res := Result{Stdout: TraceText(&tr), Trace: &tr}
	if tr.Error != "" {
		// The path is shown all the same: where it stopped is the lesson of a refused request.
		res.Err = fmt.Errorf("the traced request did not get an answer: %s", tr.Summary)
	}
	return res
}

// TraceText is a trace's path for a transcript: the name lookup and the flow, then one line per hop (its
// number, the namespace it was seen in, what the kernel did there), and the outcome.
func TraceText(tr *daemon.TraceResult) string {
	var b strings.Builder
	if d := tr.DNS; d != nil {
		fmt.Fprintf(&b, "DNS   %s → %s: %s → %s\n", d.Client, d.Server, d.Name, d.Answer)
	}
	if tr.Flow != "" {
		fmt.Fprintf(&b, "flow  %s\n", tr.Flow)
	}
	for i, h := range tr.Hops {
		text := h.Text
		if h.Direction == "reply" {
			text = "reply: " + text
		}
		if h.Inferred && !strings.Contains(text, "inferred") {
			text += " (inferred)"
		}
		fmt.Fprintf(&b, "%-5d %s: %s\n", i+1, h.Netns, strings.Join(strings.Fields(text), " "))
	}
	fmt.Fprintln(&b, tr.Summary)
	return b.String()
}
