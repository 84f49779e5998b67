package scenarios

import (
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"
)

var kindNames = map[EventKind]string{
	StepStarted: "step_started", CommandStarted: "command_started", Output: "output", CommandFinished: "command_finished",
	CheckFinished: "check_finished", StepFinished: "step_finished", Notice: "notice",
	ScenarioStarted: "scenario_started", ScenarioFinished: "scenario_finished", StepSkipped: "step_skipped",
}

func (k EventKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "unknown"
}

// JSONEvent is one line of `pi scenario run -o json`: an Event for other tools. Steps are numbered from 1;
// the preparation and the cleanup are phases without a step number.
type JSONEvent struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`
	Scenario string    `json:"scenario,omitempty"`
	Account  string    `json:"account,omitempty"`
	Phase    string    `json:"phase,omitempty"` // "prepare", "step" or "cleanup"
	Step     int       `json:"step,omitempty"`
	Index    *int      `json:"index,omitempty"` // the command or check of the step, from 0
	Text     string    `json:"text,omitempty"`
	Error    string    `json:"error,omitempty"`
	Expected string    `json:"expected,omitempty"` // of a failed check or capture
	Got      string    `json:"got,omitempty"`
	// The last line, kind "summary": steps counted.
	Passed   *int    `json:"passed,omitempty"`
	Failed   *int    `json:"failed,omitempty"`
	Skipped  *int    `json:"skipped,omitempty"`
	Duration float64 `json:"seconds,omitempty"`
}

// ToJSON is the event as a JSON line carries it.
func (ev Event) ToJSON() JSONEvent {
	j := JSONEvent{Time: ev.Time, Kind: ev.Kind.String(), Scenario: ev.Scenario, Account: ev.Account, Text: ev.Text}
	switch ev.Kind {
	case ScenarioStarted, ScenarioFinished:
	default:
		switch ev.Step {
		case PrepareStep:
			j.Phase = "prepare"
		case CleanupStep:
			j.Phase = "cleanup"
		default:
			j.Phase, j.Step = "step", ev.Step+1
		}
	}
	switch ev.Kind {
	case CommandStarted, Output, CommandFinished, CheckFinished:
		if ev.Index >= 0 {
			i := ev.Index
			j.Index = &i
		}
	}
	if ev.Err != nil {
		j.Error = ev.Err.Error()
		var m *Mismatch
		if errors.As(ev.Err, &m) {
			j.Expected, j.Got = m.Expected, m.Got
		}
	}
	return j
}

// jsonEvents writes events as JSON lines, one at a time.
type jsonEvents struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *jsonEvents) write(j JSONEvent) {
	data, err := json.Marshal(j)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Write(append(data, '\n'))
}

func (e *jsonEvents) event(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	e.write(ev.ToJSON())
}

func (e *jsonEvents) summary(passed, failed, skipped int, d time.Duration) {
	e.write(JSONEvent{Time: time.Now(), Kind: "summary", Passed: &passed, Failed: &failed, Skipped: &skipped, Duration: d.Seconds()})
}
