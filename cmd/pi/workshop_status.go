package main

// pi workshop status: the instructor's view of each learner's account.

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/billing"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/printers"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func newWorkshopStatusCmd(prefix *string) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Each learner's account: its network, pods, Services, Floating IPs, tokens, spend and workshop progress",
		Long: `Each learner's account, a line each: its network, pods (and how many run), Services, Floating IPs,
tokens, what it has spent so far (pi bill), and its progress through the workshops: for each scenario it
has played (pi scenario run, pi tutorial; from the lab's machine or its own), the steps passed of the
scenario's steps ("pod-networking:4/6").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			accts, err := workshopAccounts(cmd.Context(), *prefix)
			if err != nil {
				return err
			}
			if len(accts) == 0 {
				return fmt.Errorf("no workshop %q in this lab; make one with `pi workshop create --prefix %s --learners N --out DIR`", *prefix, *prefix)
			}
			// The whole lab's bill, once: each learner's spend is its account's line of it.
			var bill billing.Bill
			if err := g.client().Do(cmd.Context(), "GET", "/x/bill", url.Values{"allAccounts": {"true"}}, nil, &bill); err != nil {
				return fmt.Errorf("read the lab's bill: %w", err)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tNETWORK\tPODS\tRUNNING\tSERVICES\tFIPS\tTOKENS\tSPEND\tPROGRESS\tAGE")
			for _, a := range accts {
				row, err := workshopRow(cmd.Context(), a, bill.Accounts[a.Name])
				if err != nil {
					return err
				}
				fmt.Fprintln(tw, row)
			}
			return tw.Flush()
		},
	}
}

// workshopRow is one account's line of `pi workshop status`.
func workshopRow(ctx context.Context, a *api.Account, spend billing.Money) (string, error) {
	cl := g.clientFor(a.Name)
	count := func(kind string) ([]metav1.Object, error) {
		k, _ := api.LookupKind(kind)
		objs, err := cl.List(ctx, k, client.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list the %s of account %q: %w", k.Plural, a.Name, err)
		}
		return objs, nil
	}
	pods, err := count("Pod")
	if err != nil {
		return "", err
	}
	running := 0
	for _, o := range pods {
		if p, ok := o.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
			running++
		}
	}
	svcs, err := count("Service")
	if err != nil {
		return "", err
	}
	fips, err := count("FloatingIP")
	if err != nil {
		return "", err
	}
	var tokens struct{ Tokens int }
	if err := cl.Do(ctx, "GET", "/x/accounts/"+a.Name+"/tokens", nil, nil, &tokens); err != nil {
		return "", fmt.Errorf("count the tokens of account %q: %w", a.Name, err)
	}
	network := a.Status.Network
	if !a.Status.Ready {
		network = "(not ready)"
	}
	return fmt.Sprintf("%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s", a.Name, network, len(pods), running, len(svcs), len(fips), tokens.Tokens,
		spend, progressColumn(api.Progress(a)), printers.Age(a.CreationTimestamp)), nil
}

// progressColumn is an account's workshop progress: "pod-networking:4/6 expose-nginx:7/7", for each
// scenario it played the steps passed of its steps.
func progressColumn(p map[string]api.ScenarioProgress) string {
	if len(p) == 0 {
		return "-"
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(p)) {
		out = append(out, fmt.Sprintf("%s:%d/%d", name, len(p[name].Passed), p[name].Steps))
	}
	return strings.Join(out, " ")
}
