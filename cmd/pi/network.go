package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"

	"github.com/pilab/pi/lab/daemon"
	"github.com/spf13/cobra"
)

func newNetworkCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Show the account's network: router, bridge and ports, pods, Services and endpoints, Floating IPs",
		Long: `network draws the account's network as the lab has it, read from the daemon's objects and from the
kernel: the router's network namespace (run tools in it with ip netns exec), its bridge br0 and the port of
each pod (the router side of the pod's veth), each pod's IP and MAC, each Service's IP and ports with the
chain that dispatches it and its endpoints, the Floating IPs and the Services they expose, and the transit
link to the Internet side with the router's WAN address.

In a multi-node lab (pi up --nodes N) the pods are not on br0 but on their nodes: each node is shown with its
underlay address (ul0), the account's bridge on it with its pods' ports, and the VXLAN device that stretches
the account's network between the nodes and the router, with the peers it sends to.

-o dot prints a Graphviz graph (pi network -o dot | dot -Tsvg > net.svg); -o json the same data as
pi's API gives it (the fields are documented in lab/daemon/network_view.go).`,
		Example: `  pi network
  pi network --account alice -o json
  pi network -o dot | dot -Tpng > network.png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "", "text", "dot", "json":
			default:
				return fmt.Errorf("-o %q: use text, dot or json", output)
			}
			var v daemon.NetworkView
			if err := g.client().Do(cmd.Context(), "GET", "/x/network", url.Values{"account": {g.accountName()}}, nil, &v); err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			case "dot":
				daemon.WriteNetworkDot(os.Stdout, &v)
			default:
				daemon.WriteNetworkText(os.Stdout, &v)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "text (default), dot (Graphviz) or json")
	return cmd
}
