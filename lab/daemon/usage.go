package daemon

import (
	"fmt"
	"net/http"
	"runtime"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/printers"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/runtime/pods"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	out, err := d.accountUsage(accts)
	if err != nil {
		server.WriteError(w, err)
		return
	}
	server.WriteJSON(w, http.StatusOK, out)
}

// accountUsage samples what each account uses of its ceilings: two readings of its cgroup usageSample
// apart, for the CPU rate.
func (d *Daemon) accountUsage(accts []*api.Account) (map[string]AccountUsage, error) {
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
		return nil, err
	}
	dt := time.Since(t0).Nanoseconds()
	out := map[string]AccountUsage{}
	for _, a := range accts {
		cpu, mem, err := api.AccountCeilings(a.Spec)
		if err != nil {
			return nil, fmt.Errorf("account %q: %w", a.Name, err)
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
	return out, nil
}

// AccountUsageCells are the accounts' CPU and MEMORY cells of the API's Table (server.AccountUsager);
// none when the cgroups cannot be read, and the columns say "-".
func (d *Daemon) AccountUsageCells(objs []metav1.Object) map[string][2]string {
	var accts []*api.Account
	for _, o := range objs {
		if a, ok := o.(*api.Account); ok {
			accts = append(accts, a)
		}
	}
	usage, err := d.accountUsage(accts)
	if err != nil {
		d.log.Warn("read the accounts' usage for a table", "err", err)
		return nil
	}
	out := map[string][2]string{}
	for name, u := range usage {
		out[name] = printers.UsageCells(u.CPUMilli, u.CPUQuotaMilli, u.MemoryBytes, u.MemoryQuotaBytes)
	}
	return out
}
