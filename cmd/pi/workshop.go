package main

// pi workshop: the instructor's verbs for a class on one lab. A workshop is a set of accounts made
// together, named PREFIX01..PREFIXnn and labelled pilab.dev/workshop=PREFIX, each with a kubeconfig of its
// own (a bearer token of that account's, lab/server/tokens.go) for a learner to use from their laptop.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
)

// WorkshopLabel marks the accounts of a workshop with its prefix.
const WorkshopLabel = "pilab.dev/workshop"

// workshopPrefix is what a prefix may be: the start of an account name, leaving room for the number.
var workshopPrefix = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,20}[a-z])?$`)

func newWorkshopCmd() *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "workshop",
		Short: "Make, watch and remove a class's accounts, one kubeconfig per learner",
		Long: `A workshop is a set of accounts made together, learner01..learnerNN by default, each with its own
private network and a kubeconfig holding a token of its own. Serve the lab on an address learners reach
(pi up --listen 0.0.0.0:6443 --tls-san lab.example), then:

  pi workshop create --learners 30 --out ./kubeconfigs --server https://lab.example:6443
  pi workshop status
  pi workshop delete`,
	}
	cmd.PersistentFlags().StringVar(&prefix, "prefix", "learner", "the accounts' name prefix (they are PREFIX01, PREFIX02, ...)")

	var f labFlags
	var learners int
	var out, serverURL string
	var quota api.AccountSpec
	create := &cobra.Command{
		Use:   "create --learners N --out DIR",
		Short: "Make N accounts and write a kubeconfig for each into DIR",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !workshopPrefix.MatchString(prefix) {
				return fmt.Errorf("--prefix %q: want lowercase letters, digits and '-', starting with a letter, at most 22 characters", prefix)
			}
			if learners < 1 || learners > 999 {
				return fmt.Errorf("--learners %d: want 1 to 999", learners)
			}
			if out == "" {
				return fmt.Errorf("--out DIR is required: where the learners' kubeconfigs go")
			}
			admin, err := labKubeconfig(cmd, f.raw(), "", serverURL)
			if err != nil {
				return err
			}
			cluster := admin.Clusters["pi"]
			if err := os.MkdirAll(out, 0o700); err != nil {
				return fmt.Errorf("make %s: %w", out, err)
			}
			names := workshopNames(prefix, learners)
			cl := g.client()
			ctx := cmd.Context()
			// Every name first: a workshop is not half made over a name someone already has.
			for _, name := range names {
				if _, err := cl.Get(ctx, accountKind(), name); err == nil {
					return fmt.Errorf("account %q exists already; delete the workshop (pi workshop delete --prefix %s) or choose another --prefix", name, prefix)
				} else if !client.IsNotFound(err) {
					return err
				}
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tKUBECONFIG")
			for _, name := range names {
				a := &api.Account{Spec: quota}
				a.Name = name
				a.Labels = map[string]string{WorkshopLabel: prefix}
				if _, err := cl.Create(ctx, a); err != nil {
					return fmt.Errorf("create account %q: %w", name, err)
				}
				is, err := issueToken(ctx, g.clientFor(name), name, true)
				if err != nil {
					return err
				}
				data, err := clientcmd.Write(*accountKubeconfig(cluster, name, is.Token))
				if err != nil {
					return err
				}
				file := filepath.Join(out, name+".kubeconfig")
				if err := os.WriteFile(file, data, 0o600); err != nil {
					return fmt.Errorf("write %s: %w", file, err)
				}
				fmt.Fprintf(tw, "%s\t%s\n", name, file)
			}
			tw.Flush()
			fmt.Fprintf(os.Stderr, "%d accounts; each kubeconfig is that learner's alone (0600): hand them out privately.\n", len(names))
			return nil
		},
	}
	f.add(create.Flags())
	create.Flags().IntVar(&learners, "learners", 0, "how many accounts to make")
	create.Flags().StringVar(&out, "out", "", "the directory the kubeconfigs go to (made 0700)")
	// Pi's documented quotas for an account (seed 000), and a learner's fair share of the machine: one CPU
	// and 2Gi for all their pods together (issue 11).
	addQuotaFlags(create, &quota, api.AccountSpec{PodQuota: 20, ServiceQuota: 5, FIPQuota: 5, CPUQuota: "1", MemoryQuota: "2Gi"})
	create.Flags().StringVar(&serverURL, "server", "", "the API server URL in the kubeconfigs: where learners reach the lab (default: the lab's listener)")

	status := newWorkshopStatusCmd(&prefix)

	del := &cobra.Command{
		Use:   "delete",
		Short: "Delete the workshop's accounts with everything they hold; their tokens stop working",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			accts, err := workshopAccounts(cmd.Context(), prefix)
			if err != nil {
				return err
			}
			if len(accts) == 0 {
				return fmt.Errorf("no workshop %q in this lab (its accounts carry the label %s=%s)", prefix, WorkshopLabel, prefix)
			}
			for _, a := range accts {
				if err := deleteAccount(cmd.Context(), g.client(), a.Name, true, true, 3*time.Minute, true); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.AddCommand(create, status, del)
	return cmd
}

func accountKind() api.Kind {
	k, _ := api.LookupKind("Account")
	return k
}

// workshopNames are a workshop's account names: prefix and a number, two digits at least.
func workshopNames(prefix string, n int) []string {
	width := max(2, len(strconv.Itoa(n)))
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%0*d", prefix, width, i+1)
	}
	return names
}

// workshopAccounts are the accounts labelled as the prefix's workshop, by name.
func workshopAccounts(ctx context.Context, prefix string) ([]*api.Account, error) {
	objs, err := g.client().List(ctx, accountKind(), client.ListOptions{LabelSelector: WorkshopLabel + "=" + prefix})
	if err != nil {
		return nil, err
	}
	var out []*api.Account
	for _, o := range objs {
		out = append(out, o.(*api.Account))
	}
	return out, nil
}
