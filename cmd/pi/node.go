package main

import (
	"fmt"
	"net/url"
	"time"

	"github.com/pilab/pi/lab/daemon"
	"github.com/spf13/cobra"
)

// newNodeCmd is `pi node`: the nodes of a multi-node lab, which are network namespaces of this machine, so
// a machine verb (the lab's socket, root). Reading them is `pi get nodes` / `kubectl get nodes`; cordon,
// uncordon and drain are kubectl's.
func newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Add, delete, stop and start the lab's nodes (a multi-node lab: pi up --nodes N)",
		Example: `  pi node add                 # a new node, worker<N>, on the lab's underlay
  pi node stop worker2        # the node fails: NotReady, its pods frozen; they are replaced elsewhere
  pi node start worker2       # it comes back; its evicted pods are collected
  pi node drain worker3       # cordoned, every account's pods on it deleted (and replaced elsewhere)
  pi node delete worker3      # refused while pods are on it: pi node drain first, or --force`,
	}
	say := func(verb string, r daemon.NodeResult) {
		fmt.Printf("node/%s %s (%s)\n", r.Name, verb, r.Took.Round(time.Millisecond))
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a node to a multi-node lab and wait until it is Ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var r daemon.NodeResult
			if err := g.client().Do(cmd.Context(), "POST", "/x/nodes", nil, nil, &r); err != nil {
				return err
			}
			say("added", r)
			return nil
		},
	}
	var force bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a node: refused while pods are on it, unless --force (its pods are deleted and replaced elsewhere)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if force {
				q.Set("force", "true")
			}
			var r daemon.NodeResult
			if err := g.client().Do(cmd.Context(), "DELETE", "/x/nodes/"+url.PathEscape(args[0]), q, nil, &r); err != nil {
				return err
			}
			for _, p := range r.Evicted {
				fmt.Printf("pod/%s deleted\n", p)
			}
			say("deleted", r)
			return nil
		},
	}
	del.Flags().BoolVar(&force, "force", false, "delete the node's pods too (their ReplicaSets replace them on other nodes)")
	stop := &cobra.Command{
		Use:   "stop NAME",
		Short: "Fail a node as a dead host: cut from the underlay, its pods frozen; NotReady, and its pods evicted after the eviction timeout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r daemon.NodeResult
			if err := g.client().Do(cmd.Context(), "POST", "/x/nodes/"+url.PathEscape(args[0])+"/stop", nil, nil, &r); err != nil {
				return err
			}
			say("stopped", r)
			return nil
		},
	}
	start := &cobra.Command{
		Use:   "start NAME",
		Short: "Bring a stopped node back: Ready again, its evicted pods collected",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r daemon.NodeResult
			if err := g.client().Do(cmd.Context(), "POST", "/x/nodes/"+url.PathEscape(args[0])+"/start", nil, nil, &r); err != nil {
				return err
			}
			say("started", r)
			return nil
		},
	}
	drain := &cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a node and delete every account's pods on it (their ReplicaSets replace them elsewhere); kubectl drain does it for one account",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r daemon.NodeResult
			if err := g.client().Do(cmd.Context(), "POST", "/x/nodes/"+url.PathEscape(args[0])+"/drain", nil, nil, &r); err != nil {
				return err
			}
			for _, p := range r.Evicted {
				fmt.Printf("pod/%s deleted\n", p)
			}
			say("drained", r)
			return nil
		},
	}
	cmd.AddCommand(add, del, stop, start, drain)
	return cmd
}
