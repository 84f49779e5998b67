package api

import (
	"encoding/json"
	"slices"
	"time"
)

// ProgressAnnotation records on an Account which workshop steps it has passed: a JSON object of
// ScenarioProgress by scenario name. The scenario runner reports each step it plays (pi scenario run,
// pi tutorial), from the lab's machine or a learner's; pi workshop status shows it to the instructor.
const ProgressAnnotation = "pilab.dev/progress"

// ScenarioProgress is one scenario's progress in one account.
type ScenarioProgress struct {
	// Steps is how many steps the scenario has.
	Steps int `json:"steps"`
	// Passed are the steps (1-based) that passed the last time they were played, in order.
	Passed []int `json:"passed,omitempty"`
	// At is when a step was last reported.
	At time.Time `json:"at"`
}

// StepReport is what the runner reports of one step.
type StepReport struct {
	Scenario string `json:"scenario"`
	Steps    int    `json:"steps"`
	Step     int    `json:"step"` // 1-based
	Passed   bool   `json:"passed"`
}

// Progress reads an account's progress (nil annotation: none; a damaged one: none, it is rewritten).
func Progress(a *Account) map[string]ScenarioProgress {
	p := map[string]ScenarioProgress{}
	if s := a.Annotations[ProgressAnnotation]; s != "" {
		if json.Unmarshal([]byte(s), &p) != nil {
			return map[string]ScenarioProgress{}
		}
	}
	return p
}

// RecordStep folds one step's report into an account's progress annotation.
func RecordStep(a *Account, r StepReport, at time.Time) {
	p := Progress(a)
	sp := p[r.Scenario]
	if sp.Steps != r.Steps {
		// The scenario changed (another version of it): its old step numbers mean nothing now.
		sp = ScenarioProgress{Steps: r.Steps}
	}
	i, found := slices.BinarySearch(sp.Passed, r.Step)
	switch {
	case r.Passed && !found:
		sp.Passed = slices.Insert(sp.Passed, i, r.Step)
	case !r.Passed && found:
		sp.Passed = slices.Delete(sp.Passed, i, i+1)
	}
	sp.At = at.UTC().Truncate(time.Second)
	p[r.Scenario] = sp
	data, _ := json.Marshal(p)
	if a.Annotations == nil {
		a.Annotations = map[string]string{}
	}
	a.Annotations[ProgressAnnotation] = string(data)
}
