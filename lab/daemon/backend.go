package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/pilab/pi/lab/validate"
	"io"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/billing"
	"github.com/pilab/pi/lab/server"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Delete starts deleting an object, refusing what would break something that uses it.
func (d *Daemon) Delete(ctx context.Context, account string, k api.Kind, name string, o metav1.Object, opts server.DeleteOptions) error {
	switch k.Name {
	case "Account":
		if name == api.DefaultAccount {
			return server.Invalid("account %q cannot be deleted", name)
		}
		if !opts.Cascade {
			var held []string
			for kk, n := range d.ctrl.AccountObjects(name) {
				held = append(held, fmt.Sprintf("%d %s", n, kk))
			}
			if len(held) > 0 {
				sort.Strings(held)
				return server.Invalid("account %q still holds %s; delete them first, or delete the account with --all", name, strings.Join(held, ", "))
			}
		}
	case "FloatingIP":
		if users := d.fipUsers(account, name); len(users) > 0 {
			return server.Invalid("fip %q is used by service %s; delete the service first", name, joinNames(users))
		}
	}
	return d.ctrl.DeleteObjectGrace(ctx, account, k, o, opts.GracePeriodSeconds)
}

func (d *Daemon) fipUsers(account, ip string) []string {
	objs, _ := d.store.List(kindService, account)
	var out []string
	for _, o := range objs {
		if svc := o.(*corev1.Service); svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerIP == ip {
			out = append(out, svc.Name)
		}
	}
	return out
}

// Info describes the lab to clients.
type Info struct {
	Lab        string `json:"lab"`
	Node       string `json:"node"`
	Pid        int    `json:"pid"`
	Socket     string `json:"socket"`
	Root       string `json:"root"`
	RunDir     string `json:"runDir"`
	Containerd string `json:"containerd"`
	HostNetns  string `json:"hostNetns,omitempty"`
	FIPPool    string `json:"fipPool"`
	Prices     string `json:"prices"`
}

// Extra serves images, fips, bill, info and shutdown.
func (d *Daemon) Extra() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		server.WriteJSON(w, 200, Info{Lab: d.cfg.Lab, Node: host, Pid: os.Getpid(), Socket: d.cfg.Socket, Root: d.cfg.Root,
			RunDir: d.cfg.RunDir, Containerd: d.sup.Address(), HostNetns: d.cfg.HostNetns, FIPPool: d.fipPool.String(), Prices: d.prices})
	})
	d.nodeRoutes(mux)
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		server.WriteJSON(w, 200, map[string]int{"pid": os.Getpid()})
		go d.stop()
	})
	mux.HandleFunc("GET /images", func(w http.ResponseWriter, r *http.Request) {
		list, err := d.images.List(r.Context())
		if err != nil {
			server.WriteError(w, err)
			return
		}
		server.WriteJSON(w, 200, list)
	})
	mux.HandleFunc("POST /images/build", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Names []string `json:"names"`
			Force bool     `json:"force"`
		}
		if err := server.DecodeJSON(w, r, &req); err != nil {
			server.WriteError(w, server.Invalid("image build request: %v; send {\"names\": [...], \"force\": false}", err))
			return
		}
		streamText(w, func(out io.Writer) error { return d.images.Build(r.Context(), req.Names, req.Force, out) })
	})
	mux.HandleFunc("POST /images/pull", func(w http.ResponseWriter, r *http.Request) {
		ref := r.URL.Query().Get("ref")
		streamText(w, func(out io.Writer) error { return d.images.Pull(r.Context(), ref, out) })
	})
	mux.HandleFunc("POST /images/import", func(w http.ResponseWriter, r *http.Request) {
		refs, err := d.images.Import(r.Context(), r.Body)
		if err != nil {
			server.WriteError(w, server.Invalid("import: %v", err))
			return
		}
		server.WriteJSON(w, 200, refs)
	})
	mux.HandleFunc("DELETE /images/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if users := d.imageUsers(name); len(users) > 0 && r.URL.Query().Get("force") != "true" {
			server.WriteError(w, server.Invalid("image %q is used by pod %s; delete the pods first, or use --force", name, joinNames(users)))
			return
		}
		if err := d.images.Remove(r.Context(), name); err != nil {
			server.WriteError(w, err)
			return
		}
		server.WriteJSON(w, 200, map[string]string{"deleted": name})
	})
	mux.HandleFunc("POST /fips", d.allocateFIPs)
	mux.HandleFunc("POST /fips/{ip}/name", d.nameFIP)
	mux.HandleFunc("GET /bill", d.bill)
	mux.HandleFunc("POST /fetch", d.fetch)
	mux.HandleFunc("POST /progress", d.progress)
	mux.HandleFunc("GET /usage", d.usage)
	mux.HandleFunc("POST /trace", d.trace)
	mux.HandleFunc("GET /network", d.networkView)
	mux.HandleFunc("GET /rules", d.rulesView)
	return mux
}

// streamText sends a long operation's progress as it happens; the last line is "ok" or "error: ...".
func streamText(w http.ResponseWriter, fn func(io.Writer) error) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(200)
	fw := &flushingWriter{w: w}
	if err := fn(fw); err != nil {
		fmt.Fprintf(fw, "\x00error: %v\n", err)
		return
	}
	fmt.Fprintf(fw, "\x00ok\n")
}

type flushingWriter struct{ w http.ResponseWriter }

func (f *flushingWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

func (d *Daemon) imageUsers(name string) []string {
	objs, _ := d.store.List(kindPod, "")
	var out []string
	for _, o := range objs {
		for _, c := range o.(*corev1.Pod).Spec.Containers {
			if c.Image == name || strings.TrimSuffix(c.Image, ":latest") == strings.TrimSuffix(name, ":latest") {
				out = append(out, o.GetName())
				break
			}
		}
	}
	return out
}

// allocateFIPs gives an account addresses from the lab's pool, within its quota: all it asked for, or none.
func (d *Daemon) allocateFIPs(w http.ResponseWriter, r *http.Request) {
	account := server.Account(r)
	count := 1
	if c := r.URL.Query().Get("count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			server.WriteError(w, server.Invalid("--count must be a positive number, not %q", c))
			return
		}
		count = n
	}
	out, err := d.registry.AllocateFIPs(account, count)
	if err != nil {
		server.WriteError(w, err)
		return
	}
	for _, f := range out {
		d.ctrl.MeterFIP(f, true)
	}
	server.WriteJSON(w, 201, out)
}

func (d *Daemon) nameFIP(w http.ResponseWriter, r *http.Request) {
	account := server.Account(r)
	var req struct {
		Name string `json:"name"`
	}
	if err := server.DecodeJSON(w, r, &req); err != nil {
		server.WriteError(w, server.Invalid("fip %q: name request: %v; send {\"name\": \"NAME\"}", r.PathValue("ip"), err))
		return
	}
	if errs := validate.FIPDisplayName(req.Name, field.NewPath("name")); len(errs) > 0 {
		server.WriteError(w, server.Invalid("fip %q: %v", r.PathValue("ip"), errs.ToAggregate()))
		return
	}
	o, err := d.store.Mutate(kindFIP, account, r.PathValue("ip"), func(o metav1.Object) error {
		o.(*api.FloatingIP).Spec.DisplayName = req.Name
		return nil
	})
	if err != nil {
		server.WriteError(w, fmt.Errorf("fip %q: %w", r.PathValue("ip"), err))
		return
	}
	server.WriteJSON(w, 200, o)
}

func (d *Daemon) bill(w http.ResponseWriter, r *http.Request) {
	prices, err := billing.LoadPrices(d.prices)
	if err != nil {
		server.WriteError(w, err)
		return
	}
	at := time.Now().UTC()
	if s := r.URL.Query().Get("at"); s != "" {
		if at, err = time.Parse(time.RFC3339, s); err != nil {
			server.WriteError(w, server.Invalid("--at %q: use RFC 3339, e.g. 2026-12-31T23:59:59Z", s))
			return
		}
	}
	account := r.URL.Query().Get("account")
	if r.URL.Query().Get("allAccounts") == "true" {
		account = ""
	}
	var usage []billing.Usage
	err = d.store.Usage(func(id string, data []byte) error {
		var u billing.Usage
		if err := json.Unmarshal(data, &u); err != nil {
			return fmt.Errorf("usage record %s: %w", id, err)
		}
		if account == "" || u.Account == account {
			usage = append(usage, u)
		}
		return nil
	})
	if err != nil {
		server.WriteError(w, err)
		return
	}
	server.WriteJSON(w, 200, billing.Compute(prices, usage, at))
}
