package scenarios

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jstemmer/go-junit-report/v2/junit"
)

// JUnit is the report as JUnit XML testsuites: one testsuite per scenario, one testcase per step (and one for
// a failed preparation or cleanup), failures with the check's message, what was expected and what came.
func (r *Report) JUnit() junit.Testsuites {
	host, _ := os.Hostname()
	out := junit.Testsuites{Name: "pi scenarios", Time: seconds(r.Duration)}
	for id, s := range r.Scenarios {
		if s == nil {
			continue
		}
		ts := junit.Testsuite{Name: s.Scenario.Name, ID: id, Hostname: host, Time: seconds(s.Duration), File: s.Scenario.Source}
		ts.SetTimestamp(s.Start)
		ts.AddProperty("title", s.Scenario.Title)
		if s.Account != "" {
			ts.AddProperty("account", s.Account)
		}
		for _, st := range s.Steps {
			tc := junit.Testcase{Name: caseName(st), Classname: s.Scenario.Name, Time: seconds(st.Duration)}
			switch st.Status {
			case Failed:
				tc.Failure = failure(st.Err)
			case Skipped:
				msg := "skipped"
				if st.Err != nil {
					msg = st.Err.Error()
				}
				tc.Skipped = &junit.Result{Message: msg}
			}
			if st.Output != "" {
				tc.SystemOut = &junit.Output{Data: st.Output}
			}
			ts.AddTestcase(tc)
		}
		out.AddSuite(ts)
	}
	return out
}

// WriteJUnit writes the JUnit XML of the report to w.
func (r *Report) WriteJUnit(w io.Writer) error {
	j := r.JUnit()
	if _, err := io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"); err != nil {
		return err
	}
	return j.WriteXML(w)
}

func caseName(st StepResult) string {
	switch st.Step {
	case 0:
		return "prepare"
	case -1:
		return "cleanup"
	}
	return fmt.Sprintf("step %d: %s", st.Step, st.Title)
}

// failure is a JUnit failure from a step's error: its message says what failed (the command or check and
// how), its text what was expected and what came.
func failure(err error) *junit.Result {
	if err == nil {
		return &junit.Result{Message: "failed"}
	}
	res := &junit.Result{Type: "command", Message: err.Error()}
	var se *StepError
	if errors.As(err, &se) {
		if se.What != "" {
			res.Message = se.What + ": " + se.Err.Error()
		} else {
			res.Message = se.Err.Error()
		}
		if strings.HasPrefix(se.What, "check") {
			res.Type = "check"
		}
	}
	var m *Mismatch
	if errors.As(err, &m) {
		res.Data = "expected: " + m.Expected + "\ngot: " + m.Got + "\n"
	} else {
		res.Data = err.Error() + "\n"
	}
	return res
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
