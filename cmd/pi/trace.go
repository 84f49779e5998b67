package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/pilab/pi/lab/daemon"
	"github.com/spf13/cobra"
)

func newTraceCmd() *cobra.Command {
	var from, output string
	cmd := &cobra.Command{
		Use:   "trace [POD] TARGET",
		Short: "Send a request from a pod (or the Internet side) and show the path the kernel saw it take",
		Long: `trace sends one request from inside a pod's network namespace (or from the account's router, or from
the lab's Internet side) and prints its real path, observed from the kernel: the DNS lookup, the nftables
rules that matched in each namespace the packets crossed, the NAT conntrack applied and the answer.

TARGET is http://HOST[:PORT]/PATH, tcp://HOST:PORT or HOST:PORT, udp://HOST:PORT (one datagram, answered by
any datagram back) or icmp://HOST (a ping). HOST is a pod IP, a Service IP or a Service name (asked of the
account's DNS), an address of the lab's Internet side (the egress NAT), or with --from internet one of the
lab's Floating IPs. A trace never goes outside the lab.

In a multi-node lab the path also shows where the frames went between namespaces, read from the kernel's
bridge forwarding databases after the request: a pod's node bridge to a pod on the same node, or over VXLAN
(the VNI and the underlay address of the other node or of the router) and down the other node's bridge.`,
		Example: `  pi trace nginx http://podinfo:9898/
  pi trace nginx tcp://10.244.0.7:9898
  pi trace nginx udp://10.244.0.2:53          # the account's DNS server
  pi trace nginx icmp://10.244.0.7            # a ping on the flat network
  pi trace --from internet http://198.18.0.1:8080/`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[len(args)-1]
			if len(args) == 2 {
				if from != "" && from != args[0] {
					return fmt.Errorf("give the client once: either POD or --from, not both (%q and %q)", args[0], from)
				}
				from = args[0]
			}
			if from == "" {
				return fmt.Errorf("say where the request starts: pi trace POD %s, or --from internet|router", target)
			}
			req := daemon.TraceRequest{Account: g.accountName(), From: from, Target: target}
			var res daemon.TraceResult
			if err := g.client().Do(cmd.Context(), "POST", "/x/trace", nil, req, &res); err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			case "", "text":
				printTrace(os.Stdout, &res)
			default:
				return fmt.Errorf("-o %q: use text or json", output)
			}
			if res.Error != "" {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "where the request starts: a pod ([account/]pod), router, or internet (the lab's Internet side)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "text (default) or json")
	return cmd
}

// printTrace prints the hops as aligned text: the DNS lookup, the flow, then one numbered line per
// observation (namespace, where in it, what happened), and the outcome.
func printTrace(w io.Writer, r *daemon.TraceResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if d := r.DNS; d != nil {
		fmt.Fprintf(tw, "DNS\t%s → %s\t%s → %s  (account DNS, %.1f ms)\n", d.Client, d.Server, d.Name, d.Answer, d.Ms)
	}
	fmt.Fprintf(tw, "flow\t%s\t(trace %s)\n", r.Flow, r.TraceID)
	lastNote := ""
	for i, h := range r.Hops {
		n := fmt.Sprint(i + 1)
		switch h.Kind {
		case "rule", "policy":
			where := h.Table + "/" + h.Chain
			if h.Direction == "reply" {
				where = "reply " + where
			}
			what := h.Rule + " → " + h.Verdict
			what += ifaces(h.In, h.Out)
			switch {
			case h.Comment != "":
				what += "  # " + h.Comment
			case h.Note != "" && h.Note != lastNote:
				// Said once per run of rules in the same chain.
				what += "  (" + h.Note + ")"
			}
			lastNote = h.Note
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, h.Netns, where, what)
		default:
			text := h.Text
			if h.Inferred && !strings.Contains(text, "inferred") {
				text += " (inferred)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, h.Netns, h.Kind, text)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, r.Summary)
	if len(r.TablesLeft) > 0 {
		fmt.Fprintf(w, "warning: trace tables left behind: %s\n", strings.Join(r.TablesLeft, ", "))
	}
}

// ifaces shows the interfaces a packet came in and goes out by, as the kernel reported them.
func ifaces(in, out string) string {
	var p []string
	if in != "" {
		p = append(p, "in "+in)
	}
	if out != "" {
		p = append(p, "out "+out)
	}
	if len(p) == 0 {
		return ""
	}
	return "  [" + strings.Join(p, " ") + "]"
}
