package daemon

import (
	"fmt"
	"net/http"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// progress answers POST /x/progress: the scenario runner's report of one step it played in the account
// (api.StepReport), recorded on the Account (api.ProgressAnnotation) for pi workshop status. An account
// reports for itself only (lab/server/auth.go sets the account).
func (d *Daemon) progress(w http.ResponseWriter, r *http.Request) {
	var rep api.StepReport
	if err := server.DecodeJSON(w, r, &rep); err != nil {
		server.WriteError(w, server.Invalid("progress report: %v; send {\"scenario\": NAME, \"steps\": N, \"step\": I, \"passed\": true|false}", err))
		return
	}
	// Names as the scenario files have them, and counts a workshop can have: the annotation stays small.
	if rep.Scenario == "" || len(rep.Scenario) > 63 || rep.Steps < 1 || rep.Steps > 100 || rep.Step < 1 || rep.Step > rep.Steps {
		server.WriteError(w, server.Invalid("progress report %+v: want a scenario name (at most 63 characters), 1 to 100 steps and a step among them", rep))
		return
	}
	account := server.Account(r)
	_, err := d.store.Mutate(kindAccount, "", account, func(o metav1.Object) error {
		a := o.(*api.Account)
		if p := api.Progress(a); len(p) >= 50 {
			if _, known := p[rep.Scenario]; !known {
				return server.Invalid("account %q has progress in 50 scenarios already", account)
			}
		}
		api.RecordStep(a, rep, time.Now())
		return nil
	})
	if store.IsNotFound(err) {
		server.WriteError(w, fmt.Errorf("account %q not found: %w", account, err))
		return
	}
	if err != nil {
		server.WriteError(w, err)
		return
	}
	server.WriteJSON(w, http.StatusOK, rep)
}
