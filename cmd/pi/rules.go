package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"

	"github.com/pilab/pi/lab/daemon"
	"github.com/spf13/cobra"
)

func newRulesCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "rules service NAME | fip IP | pod NAME",
		Short: "Show the nftables rules and conntrack entries that implement a Service, a Floating IP or a pod",
		Long: `rules reads, live from the account's router, the nftables rules that implement one object, with the
comments pilab writes on them and why each chain is part of it, then the router's conntrack entries of the
connections to (or, for a pod, from) it:

  service NAME  the dispatch map entry of its IP and ports, its chain, the endpoint pick and the DNAT
                to each endpoint, the masquerade, and the refusal when no endpoint is ready
  fip IP        the same for the Service that uses the Floating IP, plus the router's forward rules and
                the Internet side's edge rules that let it in
  pod NAME      the endpoint chains that DNAT to the pod and the router's rules for the account's pods

The same rules can be read by hand with: ip netns exec <router netns> nft -a list ruleset
(pi network names the router netns).`,
		Example: `  pi rules service podinfo
  pi rules fip 198.18.0.1
  pi rules pod nginx -o json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := args[0]
			switch kind {
			case "service", "svc", "services":
				kind = "service"
			case "fip", "fips", "floatingip":
				kind = "fip"
			case "pod", "pods", "po":
				kind = "pod"
			default:
				return fmt.Errorf("pi rules %s: say service NAME, fip IP or pod NAME", kind)
			}
			switch output {
			case "", "text", "json":
			default:
				return fmt.Errorf("-o %q: use text or json", output)
			}
			var v daemon.RulesView
			q := url.Values{"account": {g.accountName()}, "kind": {kind}, "name": {args[1]}}
			if err := g.client().Do(cmd.Context(), "GET", "/x/rules", q, nil, &v); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			daemon.WriteRulesText(os.Stdout, &v)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "text (default) or json")
	return cmd
}
