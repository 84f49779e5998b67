package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/billing"
	"github.com/spf13/cobra"
)

func newAccountCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "account", Short: "Create and delete accounts (each has its own private network)"}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an account",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a := &api.Account{}
			a.Name = args[0]
			if _, err := g.client().Create(cmd.Context(), a); err != nil {
				return err
			}
			fmt.Printf("account %q created\n", a.Name)
			return nil
		},
	}
	var all bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an account; refuses while it holds objects, unless --all",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := g.client()
			k, _ := api.LookupKind("Account")
			if err := cl.Delete(cmd.Context(), k, args[0], all); err != nil {
				return err
			}
			deadline := time.Now().Add(3 * time.Minute)
			for {
				if _, err := cl.Get(cmd.Context(), k, args[0]); err != nil {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("timed out waiting for account %q to be deleted", args[0])
				}
				time.Sleep(200 * time.Millisecond)
			}
			fmt.Printf("account %q deleted\n", args[0])
			return nil
		},
	}
	del.Flags().BoolVar(&all, "all", false, "delete everything the account holds, then the account")
	cmd.AddCommand(create, del)
	return cmd
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
