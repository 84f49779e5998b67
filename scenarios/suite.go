package scenarios

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
)

// SuiteOptions say how RunSuite plays a list of scenarios.
type SuiteOptions struct {
	// KeepGoing plays the scenarios after a failed one; without it they are reported skipped.
	KeepGoing bool
	// Parallel is how many scenarios play at once (0 or 1: one after another). More than one needs
	// Throwaway: two scenarios in one account would make the same names.
	Parallel int
	// Throwaway plays each scenario in an account of its own, made for it and deleted after it.
	Throwaway bool
	// JSON writes the events as JSON lines instead of a transcript.
	JSON bool
}

// Status is how a step ended.
type Status string

const (
	Passed  Status = "passed"
	Failed  Status = "failed"
	Skipped Status = "skipped"
)

// StepResult is one step of a played scenario; the preparation and the cleanup have one when they failed.
type StepResult struct {
	Step     int // 1-based; 0: the preparation, -1: the cleanup
	Title    string
	Status   Status
	Err      error // why it failed, or why it was skipped
	Start    time.Time
	Duration time.Duration
	Output   string // the step's part of the transcript
}

// ScenarioResult is one scenario of a suite.
type ScenarioResult struct {
	Scenario *Scenario
	Account  string
	Start    time.Time
	Duration time.Duration
	Steps    []StepResult
	Err      error // the first failure
}

// Report is what RunSuite played.
type Report struct {
	Start     time.Time
	Duration  time.Duration
	Scenarios []*ScenarioResult
}

// Count returns how many steps passed, failed and were skipped.
func (r *Report) Count() (passed, failed, skipped int) {
	for _, s := range r.Scenarios {
		for _, st := range s.Steps {
			switch st.Status {
			case Passed:
				passed++
			case Failed:
				failed++
			case Skipped:
				skipped++
			}
		}
	}
	return
}

// Summary is the run's last line: "N passed, N failed", and ", N skipped" when some were.
func (r *Report) Summary() string {
	p, f, s := r.Count()
	line := fmt.Sprintf("%d passed, %d failed", p, f)
	if s > 0 {
		line += fmt.Sprintf(", %d skipped", s)
	}
	return line
}

// Err is the first failure of the run (a *StepError naming scenario, step and check), nil when none.
func (r *Report) Err() error {
	var first error
	n := 0
	for _, s := range r.Scenarios {
		if s.Err != nil {
			if first == nil {
				first = s.Err
			}
			n++
		}
	}
	if n > 1 {
		return &moreErrors{first, n - 1}
	}
	return first
}

type moreErrors struct {
	err  error
	more int
}

func (e *moreErrors) Error() string {
	return fmt.Sprintf("%v\n(and %d more failed scenarios; see above)", e.err, e.more)
}
func (e *moreErrors) Unwrap() error { return e.err }

// RunSuite plays scenarios against the lab in opt and writes what happened to w: a transcript as a terminal
// session would show it, or JSON lines (so.JSON). The last line is the Summary. A failed step stops its
// scenario (the rest of its steps are skipped) and, without so.KeepGoing, the run (the later scenarios are
// skipped); a scenario's cleanup runs whatever happened. The report says how every step went.
func RunSuite(ctx context.Context, w io.Writer, list []*Scenario, opt Options, so SuiteOptions) (*Report, error) {
	rep := &Report{Start: time.Now(), Scenarios: make([]*ScenarioResult, len(list))}
	if so.Parallel < 1 {
		so.Parallel = 1
	}
	if so.Parallel > 1 && !so.Throwaway {
		return nil, errors.New("scenarios played in parallel each need an account of their own: use the throwaway accounts (CI=true, or --account NEW with one scenario at a time)")
	}
	out := &syncWriter{w: w}
	var jsonOut *jsonEvents
	if so.JSON {
		jsonOut = &jsonEvents{w: out}
	}
	if !so.Throwaway {
		// An account that does not exist yet is made for the run and deleted after it.
		made, err := ensureAccount(ctx, opt)
		if err != nil {
			return nil, err
		}
		if made {
			note := fmt.Sprintf("account %q did not exist: made for this run, deleted after it", opt.Account)
			if jsonOut != nil {
				jsonOut.event(Event{Kind: Notice, Step: PrepareStep, Text: note, Time: time.Now()})
			} else {
				fmt.Fprintf(out, "# %s\n", note)
			}
			defer func() {
				if err := deleteAccount(context.WithoutCancel(ctx), opt, opt.Account); err != nil {
					fmt.Fprintf(out, "! %v\n", err)
				}
			}()
		}
	}
	var stop atomic.Bool
	sem := make(chan struct{}, so.Parallel)
	var wg sync.WaitGroup
	for i, sc := range list {
		sem <- struct{}{}
		if stop.Load() || ctx.Err() != nil {
			<-sem
			rep.Scenarios[i] = skipScenario(sc, out, jsonOut, "an earlier scenario failed (--keep-going plays the rest)")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var buf bytes.Buffer
			tw := io.Writer(out)
			if so.Parallel > 1 {
				// Transcripts of scenarios played at once would interleave: each is written whole at its end.
				tw = &buf
			}
			res := playScenario(ctx, sc, opt, so, tw, jsonOut)
			if so.Parallel > 1 && !so.JSON {
				out.Write(buf.Bytes())
			}
			rep.Scenarios[i] = res
			if res.Err != nil && !so.KeepGoing {
				stop.Store(true)
			}
		}()
		if so.Parallel == 1 {
			wg.Wait()
		}
	}
	wg.Wait()
	rep.Duration = time.Since(rep.Start)
	if jsonOut != nil {
		p, f, s := rep.Count()
		jsonOut.summary(p, f, s, rep.Duration)
	} else {
		fmt.Fprintln(out, rep.Summary())
	}
	return rep, nil
}

func skipScenario(sc *Scenario, w io.Writer, j *jsonEvents, why string) *ScenarioResult {
	res := &ScenarioResult{Scenario: sc, Start: time.Now()}
	if j != nil {
		j.event(Event{Kind: ScenarioStarted, Scenario: sc.Name, Text: sc.Title, Time: res.Start})
	} else {
		fmt.Fprintf(w, "=== SKIP %s: %s\n", sc.Name, why)
	}
	for i, st := range sc.Steps {
		res.Steps = append(res.Steps, StepResult{Step: i + 1, Title: st.Title, Status: Skipped, Err: errors.New(why), Start: res.Start})
		if j != nil {
			j.event(Event{Kind: StepSkipped, Scenario: sc.Name, Step: i, Text: st.Title, Err: errors.New(why), Time: res.Start})
		}
	}
	if j != nil {
		j.event(Event{Kind: ScenarioFinished, Scenario: sc.Name, Text: "skipped", Time: res.Start})
	}
	return res
}

// playScenario plays one scenario: preparation, steps, cleanup.
func playScenario(ctx context.Context, sc *Scenario, opt Options, so SuiteOptions, w io.Writer, j *jsonEvents) *ScenarioResult {
	res := &ScenarioResult{Scenario: sc, Start: time.Now(), Account: opt.Account}
	var t *transcript
	if j == nil {
		t = &transcript{w: w, sc: sc, bol: true}
	}
	steps := map[int]*transcript{} // each step's own transcript, for the report
	var stepBufs = map[int]*strings.Builder{}
	sink := func(ev Event) {
		if t != nil {
			t.event(ev)
		}
		if j != nil {
			ev.Account = res.Account
			j.event(ev)
		}
		if ev.Kind == ScenarioStarted || ev.Kind == ScenarioFinished {
			return
		}
		st := steps[ev.Step]
		if st == nil {
			stepBufs[ev.Step] = &strings.Builder{}
			st = &transcript{w: stepBufs[ev.Step], sc: sc, bol: true}
			steps[ev.Step] = st
		}
		st.event(ev)
	}
	sink(Event{Kind: ScenarioStarted, Scenario: sc.Name, Text: sc.Title, Time: res.Start})
	defer func() {
		res.Duration = time.Since(res.Start)
		ev := Event{Kind: ScenarioFinished, Scenario: sc.Name, Err: res.Err, Time: time.Now(), Text: fmt.Sprint(res.Duration.Round(time.Second))}
		sink(ev)
	}()
	fail := func(step int, title string, start time.Time, err error) {
		res.Steps = append(res.Steps, StepResult{Step: step, Title: title, Status: Failed, Err: err, Start: start, Duration: time.Since(start)})
		if res.Err == nil {
			res.Err = err
		}
	}
	if so.Throwaway {
		start := time.Now()
		name := throwawayName(sc.Name)
		res.Account = name
		opt.Account = name
		sink(Event{Kind: Notice, Scenario: sc.Name, Step: PrepareStep, Text: fmt.Sprintf("playing in account %q, made for this scenario and deleted after it", name), Time: start})
		if err := createAccount(ctx, opt, name); err != nil {
			fail(0, "prepare", start, &StepError{Scenario: sc.Name, Step: 0, Err: err})
			skipRest(res, sc, 0, sink)
			return res
		}
		defer func() {
			start := time.Now()
			if err := deleteAccount(context.WithoutCancel(ctx), opt, name); err != nil {
				sink(Event{Kind: Notice, Scenario: sc.Name, Step: CleanupStep, Text: err.Error(), Time: start})
				fail(-1, "cleanup", start, &StepError{Scenario: sc.Name, Step: -1, Err: err})
			}
		}()
	}
	opt.Sink = sink
	r, err := NewRunner(sc, opt)
	if err != nil {
		fail(0, "prepare", time.Now(), err)
		skipRest(res, sc, 0, sink)
		return res
	}
	defer r.Close()
	defer func() {
		// Cleanup runs even after Ctrl-C, so the next scenario (or the learner) finds the account as it was.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		start := time.Now()
		if err := r.Cleanup(cctx); err != nil {
			fail(-1, "cleanup", start, err)
		}
	}()
	start := time.Now()
	if err := r.Prepare(ctx); err != nil {
		fail(0, "prepare", start, err)
		skipRest(res, sc, 0, sink)
		return res
	}
	for i, st := range sc.Steps {
		start := time.Now()
		err := r.RunStep(ctx, i)
		out := ""
		if b := stepBufs[i]; b != nil {
			out = b.String()
		}
		if err != nil {
			fail(i+1, st.Title, start, err)
			res.Steps[len(res.Steps)-1].Output = out
			skipRest(res, sc, i+1, sink)
			return res
		}
		res.Steps = append(res.Steps, StepResult{Step: i + 1, Title: st.Title, Status: Passed, Start: start, Duration: time.Since(start), Output: out})
	}
	return res
}

// skipRest reports the steps from index from on as skipped.
func skipRest(res *ScenarioResult, sc *Scenario, from int, sink func(Event)) {
	why := errors.New("an earlier step of the scenario failed")
	for i := from; i < len(sc.Steps); i++ {
		res.Steps = append(res.Steps, StepResult{Step: i + 1, Title: sc.Steps[i].Title, Status: Skipped, Err: why, Start: time.Now()})
		sink(Event{Kind: StepSkipped, Scenario: sc.Name, Step: i, Text: sc.Steps[i].Title, Err: why, Time: time.Now()})
	}
}

var notLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// throwawayName is a fresh account name for a scenario: "s-" and its name, cut to fit the 20 characters
// of an account name, and 4 random hex digits.
func throwawayName(scenario string) string {
	base := strings.Trim(notLabel.ReplaceAllString(strings.ToLower(scenario), "-"), "-")
	if len(base) > 13 {
		base = strings.TrimRight(base[:13], "-")
	}
	var b [2]byte
	rand.Read(b[:])
	return "s-" + base + "-" + hex.EncodeToString(b[:])
}

func accountKind() api.Kind {
	k, _ := api.LookupKind("Account")
	return k
}

// ensureAccount makes opt.Account when it does not exist, and says whether it did.
func ensureAccount(ctx context.Context, opt Options) (bool, error) {
	cl, err := opt.Client(opt.Account)
	if err != nil {
		return false, err
	}
	name := cl.Account // "default" when none is named; a learner's kubeconfig: its own
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = cl.Get(cctx, accountKind(), name)
	switch {
	case err == nil:
		return false, nil
	case !client.IsNotFound(err):
		return false, fmt.Errorf("look up account %q: %w", name, err)
	}
	return true, createAccount(ctx, opt, name)
}

func createAccount(ctx context.Context, opt Options, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a := &api.Account{}
	a.Name = name
	cl, err := opt.Client("")
	if err != nil {
		return err
	}
	if _, err := cl.Create(ctx, a); err != nil {
		return fmt.Errorf("make account %q to play in: %w", name, err)
	}
	return nil
}

// deleteAccount deletes an account the run made, with everything in it, and waits until it is gone.
func deleteAccount(ctx context.Context, opt Options, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cl, err := opt.Client("")
	if err != nil {
		return err
	}
	if err := cl.Delete(ctx, accountKind(), name, true); err != nil && !client.IsNotFound(err) {
		return fmt.Errorf("delete account %q, made for the scenarios: %w (delete it with `pi account delete %s --all`)", name, err, name)
	}
	for {
		if _, err := cl.Get(ctx, accountKind(), name); client.IsNotFound(err) {
			return nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return fmt.Errorf("account %q, made for the scenarios, is still there after 3 minutes (delete it with `pi account delete %s --all`)", name, name)
		}
	}
}

// syncWriter serializes writes of scenarios played at once.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
