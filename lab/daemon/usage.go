package daemon

import (
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/runtime/pods"
)

// AccountUsage is what an account's pods use of its ceilings (its cgroup's CPU and memory), as
// `pi get accounts` shows it.
type AccountUsage struct {
	// CPUMilli is the CPU used over the sampling interval, in millicores.
	CPUMilli int64 `json:"cpuMilli"`
	// CPUQuotaMilli is the account's CPU ceiling (the machine's CPUs when it sets none).
	CPUQuotaMilli int64 `json:"cpuQuotaMilli"`
	// MemoryBytes is the working set; MemoryQuotaBytes the ceiling.
	MemoryBytes      uint64 `json:"memoryBytes"`
	MemoryQuotaBytes int64  `json:"memoryQuotaBytes"`
}

// usageSample is how far apart the two CPU readings of a usage answer are: long enough to see a
// busy account, short enough for `pi get accounts` to stay quick.
const usageSample = 300 * time.Millisecond

// usage answers GET /x/usage: each account's use of its ceilings (allAccounts=true: every account, the
// admin's; else the request's account), by account name.
func (d *Daemon) usage(w http.ResponseWriter, r *http.Request) {
	var accts []*api.Account
	if r.URL.Query().Get("allAccounts") == "true" {
		objs, err := d.store.List(kindAccount, "")
		if err != nil {
			server.WriteError(w, err)
			return
		}
		for _, o := range objs {
			accts = append(accts, o.(*api.Account))
		}
	} else {
		a, err := d.accountFor(server.Account(r))
		if err != nil {
			server.WriteError(w, err)
			return
		}
		accts = append(accts, a)
	}
	read := func() (map[string]pods.Usage, error) {
		out := map[string]pods.Usage{}
		for _, a := range accts {
			u, err := d.runtime.AccountUsage(string(a.UID))
			if err != nil {
				return nil, fmt.Errorf("usage of account %q: %w", a.Name, err)
			}
			out[a.Name] = u
		}
		return out, nil
	}
	t0 := time.Now()
	first, err := read()
	if err == nil {
		time.Sleep(usageSample)
	}
	var second map[string]pods.Usage
	if err == nil {
		second, err = read()
	}
	if err != nil {
		server.WriteError(w, err)
		return
	}
	dt := time.Since(t0).Nanoseconds()
	out := map[string]AccountUsage{}
	for _, a := range accts {
		cpu, mem, err := api.AccountCeilings(a.Spec)
		if err != nil {
			server.WriteError(w, fmt.Errorf("account %q: %w", a.Name, err))
			return
		}
		if cpu == 0 {
			cpu = int64(runtime.NumCPU()) * 1000
		}
		u := AccountUsage{CPUQuotaMilli: cpu, MemoryBytes: second[a.Name].MemoryBytes, MemoryQuotaBytes: mem}
		if s, f := second[a.Name].CPUNanos, first[a.Name].CPUNanos; s > f && dt > 0 {
			u.CPUMilli = int64((s - f) * 1000 / uint64(dt))
		}
		out[a.Name] = u
	}
	server.WriteJSON(w, http.StatusOK, out)
}
