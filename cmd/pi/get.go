package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/lab/printers"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type getOptions struct {
	output      string
	selector    string
	watch       bool
	allAccounts bool
}

func newGetCmd() *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME...]",
		Short: "Display one or many objects (pods, deployments, replicasets, services, endpoints, events, accounts, fips)",
		Example: `  pi get pods -o wide
  pi get pod nginx -o yaml
  pi get pods -l app=web -w
  pi get services`,
		Args: cobra.MinimumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				var out []string
				for _, k := range api.Kinds() {
					out = append(out, k.Plural)
				}
				return out, cobra.ShellCompDirectiveNoFileComp
			}
			return completeNames(cmd.Context(), args[0]), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runGet(cmd.Context(), o, args) },
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "output format: wide, yaml, json, name (fips also: ip)")
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "label selector, e.g. app=web")
	cmd.Flags().BoolVarP(&o.watch, "watch", "w", false, "after listing, stream changes until Ctrl-C")
	cmd.Flags().BoolVarP(&o.allAccounts, "all-accounts", "A", false, "list objects of every account")
	return cmd
}

func completeNames(ctx context.Context, kind string) []string {
	k, ok := api.LookupKind(kind)
	if !ok {
		return nil
	}
	objs, err := g.client().List(ctx, k, client.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.GetName())
	}
	return out
}

func lookupKind(s string) (api.Kind, error) {
	k, ok := api.LookupKind(s)
	if !ok {
		return api.Kind{}, fmt.Errorf("the server doesn't have a resource type %q", s)
	}
	return k, nil
}

func printContext(ctx context.Context, cl *client.Client, k api.Kind, o getOptions) printers.Context {
	pc := printers.Context{AllAccounts: o.allAccounts}

	if k.Name == "Account" {
		pc.Counts = accountCounts(ctx, cl)
		pc.Usage = accountUsage(ctx, cl)
	}
	return pc
}

// accountUsage is each account's CPU and memory, used of its ceilings, as the lab reads them from the
// accounts' cgroups (the whole lab's for the admin, a learner's own for a learner); none if it cannot.
func accountUsage(ctx context.Context, cl *client.Client) map[string][2]string {
	var usage map[string]daemon.AccountUsage
	q := url.Values{"allAccounts": {"true"}}
	if err := cl.Do(ctx, "GET", "/x/usage", q, nil, &usage); err != nil {
		return nil
	}
	out := map[string][2]string{}
	for name, u := range usage {
		out[name] = printers.UsageCells(u.CPUMilli, u.CPUQuotaMilli, u.MemoryBytes, u.MemoryQuotaBytes)
	}
	return out
}

func accountCounts(ctx context.Context, cl *client.Client) map[string][3]int {
	out := map[string][3]int{}
	for i, kn := range []string{"pods", "services", "fips"} {
		k, _ := api.LookupKind(kn)
		objs, err := cl.List(ctx, k, client.ListOptions{AllAccounts: true})
		if err != nil {
			continue
		}
		for _, o := range objs {
			c := out[api.AccountOf(o)]
			c[i]++
			out[api.AccountOf(o)] = c
		}
	}
	return out
}

func runGet(ctx context.Context, o getOptions, args []string) error {
	cl := g.client()
	var kinds []api.Kind
	names := args[1:]
	// kubectl accepts TYPE/NAME and TYPE,TYPE.
	if strings.Contains(args[0], "/") {
		kn, name, _ := strings.Cut(args[0], "/")
		args = append([]string{kn, name}, args[1:]...)
		names = args[1:]
	}
	for _, t := range strings.Split(args[0], ",") {
		k, err := lookupKind(t)
		if err != nil {
			return err
		}
		kinds = append(kinds, k)
	}
	if o.watch && len(kinds) > 1 {
		return fmt.Errorf("you may only specify a single resource type with --watch")
	}
	var errs errorList
	printed := false
	for _, k := range kinds {
		pc := printContext(ctx, cl, k, o)
		var objs []metav1.Object
		if len(names) > 0 {
			for _, n := range names {
				obj, err := cl.Get(ctx, k, n)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				objs = append(objs, obj)
			}
			pc.Single = len(names) == 1
		} else {
			var err error
			objs, err = cl.List(ctx, k, client.ListOptions{LabelSelector: o.selector, AllAccounts: o.allAccounts})
			if err != nil {
				return err
			}
			sortObjects(k, objs)
		}
		if k.Name == "FloatingIP" && o.output == "ip" {
			for _, f := range objs {
				fmt.Println(f.GetName())
			}
			printed = printed || len(objs) > 0
			continue
		}
		if printed && (o.output == "" || o.output == "wide") && len(objs) > 0 {
			fmt.Println()
		}
		if o.watch {
			return watch(ctx, cl, k, o, pc, objs)
		}
		if err := printers.Print(os.Stdout, k, objs, o.output, pc); err != nil {
			return err
		}
		printed = printed || len(objs) > 0
	}
	if len(errs) > 0 {
		return errs
	}
	if !printed && len(names) == 0 && o.output != "json" && o.output != "yaml" {
		if kinds[0].Namespaced && !o.allAccounts {
			fmt.Fprintf(os.Stderr, "No resources found in account %s.\n", cl.Account)
		} else {
			fmt.Fprintln(os.Stderr, "No resources found")
		}
	}
	return nil
}

func sortObjects(k api.Kind, objs []metav1.Object) {
	sort.SliceStable(objs, func(i, j int) bool {
		if k.Name == "Event" {
			return objs[i].(*corev1.Event).LastTimestamp.Before(&objs[j].(*corev1.Event).LastTimestamp)
		}
		ai, aj := api.AccountOf(objs[i]), api.AccountOf(objs[j])
		if ai != aj {
			return ai < aj
		}
		return objs[i].GetName() < objs[j].GetName()
	})
}

// watch prints the objects there are, then each change as a row (kubectl -w) until Ctrl-C. The stream
// starts with the objects there are; those already printed (same resourceVersion) are skipped. In a table,
// every row goes through the one printers.Table that printed the header, so watched rows keep the columns
// of the first batch (widened, never narrowed, by a longer cell), as kubectl's do.
func watch(ctx context.Context, cl *client.Client, k api.Kind, o getOptions, pc printers.Context, printed []metav1.Object) error {
	pc.Wide = o.output == "wide"
	t := printers.NewTable(os.Stdout)
	table := o.output == "" || o.output == "wide"
	if table && len(printed) > 0 {
		printers.WriteTable(t, k, printed, pc)
	} else if !table {
		if err := printers.Print(os.Stdout, k, printed, o.output, pc); err != nil {
			return err
		}
	}
	events, err := cl.Watch(ctx, k, client.ListOptions{LabelSelector: o.selector, AllAccounts: o.allAccounts})
	if err != nil {
		return err
	}
	shown := map[string]string{}
	for _, obj := range printed {
		shown[api.AccountOf(obj)+"/"+obj.GetName()] = obj.GetResourceVersion()
	}
	needHeader := len(printed) == 0
	for ev := range events {
		obj, err := api.Decode(k, ev.Object)
		if err != nil {
			return err
		}
		key := api.AccountOf(obj) + "/" + obj.GetName()
		if ev.Type == api.Added && shown[key] == obj.GetResourceVersion() {
			continue
		}
		switch o.output {
		case "", "wide":
			if needHeader {
				t.Row(printers.Header(k, pc)...)
				needHeader = false
			}
			t.Row(printers.Row(obj, pc)...)
			t.Flush()
		case "json":
			data, _ := json.Marshal(ev)
			fmt.Println(string(data))
		default:
			if err := printers.Print(os.Stdout, k, []metav1.Object{obj}, o.output, printers.Context{Single: true}); err != nil {
				return err
			}
		}
	}
	return nil
}
