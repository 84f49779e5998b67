package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/billing"
	"github.com/pilab/pi/lab/client"
	"github.com/spf13/cobra"
)

func newAccountCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "account", Short: "Create and delete accounts (each has its own private network)"}
	var quota api.AccountSpec
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an account",
		Long: `Create an account: its own private network behind its own router. Its quotas are set now and
kept for its life (0: the lab's defaults, 500 pods, no Service limit, pi up's --fip-quota Floating IPs;
its pods together get the machine's CPUs and 4Gi of memory unless --cpu-quota and --memory-quota say otherwise).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a := &api.Account{Spec: quota}
			a.Name = args[0]
			if _, err := g.client().Create(cmd.Context(), a); err != nil {
				return err
			}
			fmt.Printf("account %q created\n", a.Name)
			return nil
		},
	}
	addQuotaFlags(create, &quota, api.AccountSpec{})
	var all bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an account; refuses while it holds objects, unless --all",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deleteAccount(cmd.Context(), g.client(), args[0], all, true, 3*time.Minute, false)
		},
	}
	del.Flags().BoolVar(&all, "all", false, "delete everything the account holds, then the account")
	cmd.AddCommand(create, del, newAccountTokenCmd())
	return cmd
}

// addQuotaFlags adds the flags that set an account's quotas, with defaults def.
func addQuotaFlags(cmd *cobra.Command, q *api.AccountSpec, def api.AccountSpec) {
	cmd.Flags().IntVar(&q.PodQuota, "pod-quota", def.PodQuota, "pods the account may hold (0: the lab's cap)")
	cmd.Flags().IntVar(&q.ServiceQuota, "service-quota", def.ServiceQuota, "Services the account may hold (0: no limit)")
	cmd.Flags().IntVar(&q.FIPQuota, "fip-quota", def.FIPQuota, "Floating IPs the account may hold (0: the lab's default)")
	cmd.Flags().StringVar(&q.CPUQuota, "cpu-quota", def.CPUQuota, `CPU all the account's pods together may use, e.g. "2" or "500m" (empty: the machine's CPUs)`)
	cmd.Flags().StringVar(&q.MemoryQuota, "memory-quota", def.MemoryQuota, `memory all the account's pods together may use, e.g. "4Gi" (empty: `+api.DefaultAccountMemoryQuota+`)`)
}

func newAccountTokenCmd() *cobra.Command {
	var rotate, revoke bool
	cmd := &cobra.Command{
		Use:   "token NAME",
		Short: "Issue a bearer token for an account (--rotate: its only one; --revoke: none)",
		Long: `Issue a new bearer token for an account and print it: the account's credential on the lab's HTTPS
listener (a kubeconfig's token:). It is shown this once; the lab keeps only its hash. The account's other
tokens keep working, unless --rotate: then this is its only token and the others stop working at once,
their open watches, logs, execs and port-forwards ended. --revoke removes every token of the account and
prints nothing. (pi kubeconfig --account NAME makes a whole kubeconfig around a new token.)

  pi account token alice              # a new token, beside alice's others
  pi account token alice --rotate     # the old ones stop working
  pi account token alice --revoke`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			cl := g.clientFor(name)
			if revoke {
				if rotate {
					return fmt.Errorf("--rotate and --revoke: choose one (--rotate issues a new token, --revoke leaves none)")
				}
				var out struct{ Revoked int }
				if err := cl.Do(cmd.Context(), "DELETE", "/x/accounts/"+url.PathEscape(name)+"/tokens", nil, nil, &out); err != nil {
					return fmt.Errorf("revoke the tokens of account %q: %w", name, err)
				}
				fmt.Fprintf(os.Stderr, "account %q: %d token(s) revoked\n", name, out.Revoked)
				return nil
			}
			is, err := issueToken(cmd.Context(), cl, name, rotate)
			if err != nil {
				return err
			}
			fmt.Println(is.Token)
			return nil
		},
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "make this the account's only token: the others stop working now")
	cmd.Flags().BoolVar(&revoke, "revoke", false, "revoke every token of the account")
	return cmd
}

// deleteAccount deletes one account, with everything in it when cascade is set (the server refuses an
// account that holds objects otherwise, saying so), and, when wait is set, returns once the account is
// gone: its pods, network and router take a moment to go. It prints `account "NAME" deleted`.
func deleteAccount(ctx context.Context, cl *client.Client, name string, cascade, wait bool, timeout time.Duration, ignoreNotFound bool) error {
	k, _ := api.LookupKind("Account")
	var uid string
	if o, err := cl.Get(ctx, k, name); err == nil {
		uid = string(o.GetUID())
	}
	if err := cl.Delete(ctx, k, name, cascade); err != nil {
		if ignoreNotFound && client.IsNotFound(err) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(timeout)
	for wait {
		o, err := cl.Get(ctx, k, name)
		// Gone, or already another account of the same name: this one is deleted.
		if client.IsNotFound(err) || (err == nil && string(o.GetUID()) != uid) {
			break
		}
		if err != nil {
			return fmt.Errorf("waiting for account %q to be deleted: %w", name, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for account %q to be deleted; it is still being emptied (see pi get pods --account %s)", timeout, name, name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Printf("account %q deleted\n", name)
	return nil
}

// withDeleteAll gives the delete verb's --all its second meaning. For a type alone, `pi delete pods --all`
// is kubectl's "every pod", and runDelete does that. With names, kubectl refuses --all; but the README's
// `pi delete account alice --all` names one account and means what `pi account delete alice --all` does:
// the account with everything in it. So: accounts named with --all are deleted with their contents; any
// other type named with --all, or --all with -l, gets kubectl's own error rather than --all being dropped
// without a word (before, `pi delete pod web --all` deleted web alone and `pi delete account alice --all`
// refused a non-empty alice). It wraps the command's RunE because the flags live in create.go's
// newDeleteCmd; the rest goes to runDelete unchanged.
func withDeleteAll(del *cobra.Command) *cobra.Command {
	del.Example += "\n  pi delete account alice --all      # the account with everything in it"
	next := del.RunE
	del.RunE = func(cmd *cobra.Command, args []string) error {
		f := cmd.Flags()
		all, _ := f.GetBool("all")
		files, _ := f.GetStringSlice("filename")
		if !all || len(files) > 0 || len(args) == 0 {
			return next(cmd, args)
		}
		if sel, _ := f.GetString("selector"); sel != "" {
			return fmt.Errorf("cannot set --all and --selector at the same time")
		}
		kn, name, slash := strings.Cut(args[0], "/")
		k, ok := api.LookupKind(kn)
		names := args[1:]
		if slash {
			names = append([]string{name}, names...)
		}
		if !ok || len(names) == 0 {
			return next(cmd, args)
		}
		if k.Name != "Account" {
			if slash {
				return fmt.Errorf("selectors and the all flag cannot be used when passing resource/name arguments")
			}
			return fmt.Errorf("name cannot be provided when a selector is specified (--all deletes every %s; to delete %s %q, leave --all out)", k.Singular, k.Singular, names[0])
		}
		wait, _ := f.GetBool("wait")
		timeout, _ := f.GetDuration("timeout")
		ignore, _ := f.GetBool("ignore-not-found")
		cl := g.client()
		var errs errorList
		for _, n := range names {
			if err := deleteAccount(cmd.Context(), cl, n, true, wait, timeout, ignore); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errs
		}
		return nil
	}
	return del
}

// piConfig is ~/.pi/config.
type piConfig struct {
	Account string `json:"account,omitempty"`
}

func configPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".pi", "config")
}

func loadConfig() (piConfig, error) {
	var c piConfig
	data, err := os.ReadFile(configPath())
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(data, &c)
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Client settings (~/.pi/config)"}
	use := &cobra.Command{
		Use:   "use-account NAME",
		Short: "Act as this account from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _ := loadConfig()
			c.Account = args[0]
			data, _ := json.MarshalIndent(c, "", "  ")
			if err := os.MkdirAll(filepath.Dir(configPath()), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(configPath(), append(data, '\n'), 0o600); err != nil {
				return err
			}
			fmt.Printf("Switched to account %q.\n", args[0])
			return nil
		},
	}
	cur := &cobra.Command{
		Use:   "current-account",
		Short: "Print the account pi acts as",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, args []string) { fmt.Println(g.accountName()) },
	}
	cmd.AddCommand(use, cur)
	return cmd
}

func newCreateFIPCmd() *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:     "fip",
		Aliases: []string{"floatingip"},
		Short:   "Allocate a Floating IP (prints the address)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []api.FloatingIP
			if err := g.client().Do(cmd.Context(), "POST", "/x/fips", url.Values{"count": {fmt.Sprint(count)}}, nil, &out); err != nil {
				return err
			}
			for _, f := range out {
				fmt.Println(f.Name)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&count, "count", 1, "how many addresses")
	return cmd
}

func newNameCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "name", Short: "Name things"}
	var name string
	fip := &cobra.Command{
		Use:   "fip ADDRESS --name NAME",
		Short: "Give a Floating IP a name",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().Do(cmd.Context(), "POST", "/x/fips/"+url.PathEscape(args[0])+"/name", nil, map[string]string{"name": name}, nil); err != nil {
				return err
			}
			fmt.Printf("fip %q named %q\n", args[0], name)
			return nil
		},
	}
	fip.Flags().StringVar(&name, "name", "", "the name")
	fip.MarkFlagRequired("name")
	cmd.AddCommand(fip)
	return cmd
}

func newBillCmd() *cobra.Command {
	var at string
	var all, wide bool
	cmd := &cobra.Command{
		Use:   "bill [--account A] [--at TIME]",
		Short: "Show what the account's usage costs, to the second (or projected to --at)",
		Example: `  pi bill
  pi bill --at 2026-12-31T23:59:59Z    # what will it cost by the end of the month`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if at != "" {
				t, err := parseTime(at)
				if err != nil {
					return err
				}
				q.Set("at", t.Format(time.RFC3339))
			}
			if all {
				q.Set("allAccounts", "true")
			} else {
				q.Set("account", g.accountName())
			}
			var b billing.Bill
			if err := g.client().Do(cmd.Context(), "GET", "/x/bill", q, nil, &b); err != nil {
				return err
			}
			b.Print(os.Stdout, wide)
			return nil
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "project the bill to this time (RFC 3339, a date, or +DURATION like +720h)")
	cmd.Flags().BoolVarP(&all, "all-accounts", "A", false, "every account")
	cmd.Flags().BoolVar(&wide, "wide", false, "more digits and the rates")
	return cmd
}

func parseTime(s string) (time.Time, error) {
	if strings.HasPrefix(s, "+") {
		d, err := time.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("--at %q: %v", s, err)
		}
		return time.Now().Add(d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--at %q: use RFC 3339 (2026-12-31T23:59:59Z), a date (2026-12-31) or +DURATION (+720h)", s)
}
