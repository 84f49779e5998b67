package main

import (
	"fmt"
	"os"

	"github.com/pilab/pi/lab/printers"
	"github.com/pilab/pi/scenarios"
	"github.com/pilab/pi/tui"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// addLearnCommands adds the workshop commands under their own help group.
func addLearnCommands(root *cobra.Command) {
	root.AddGroup(&cobra.Group{ID: "learn", Title: "Learn:"})
	for _, c := range []*cobra.Command{newScenarioCmd(), newTutorialCmd()} {
		c.GroupID = "learn"
		root.AddCommand(c)
	}
}

func scenarioOptions() scenarios.Options {
	return scenarios.Options{Socket: g.socketPath(), Lab: g.lab, Account: g.accountName()}
}

func newScenarioCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "scenario", Short: "List the workshops and play them headless"}
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the built-in scenarios",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			all, err := scenarios.Builtin()
			if err != nil {
				return err
			}
			t := printers.NewTable(os.Stdout)
			t.Row("NAME", "STEPS", "TITLE")
			for _, sc := range all {
				t.Row(sc.Name, fmt.Sprint(len(sc.Steps)), sc.Title)
			}
			t.Flush()
			return nil
		},
	}
	var all bool
	run := &cobra.Command{
		Use:   "run (NAME|FILE)... | --all",
		Short: "Play scenarios against the lab without a UI, printing a transcript; fails at the first failed check",
		Example: `  pi scenario run pod-networking
  pi scenario run --all
  pi scenario run ./my-workshop.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := pickScenarios(args, all)
			if err != nil {
				return err
			}
			return scenarios.RunHeadless(cmd.Context(), os.Stdout, list, scenarioOptions())
		},
	}
	run.Flags().BoolVar(&all, "all", false, "play every built-in scenario, in order")
	cmd.AddCommand(list, run)
	return cmd
}

func pickScenarios(args []string, all bool) ([]*scenarios.Scenario, error) {
	switch {
	case all && len(args) > 0:
		return nil, fmt.Errorf("give scenario names or --all, not both")
	case all:
		return scenarios.Builtin()
	case len(args) == 0:
		return nil, fmt.Errorf("name a scenario (see `pi scenario list`), a scenario file, or --all")
	}
	var out []*scenarios.Scenario
	for _, a := range args {
		sc, err := scenarios.Load(a)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func newTutorialCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "tutorial [NAME|FILE]",
		Short: "Walk through a workshop in the terminal UI, with a live view of your pods and services",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !term.IsTerminal(int(os.Stdin.Fd())) || !term.IsTerminal(int(os.Stdout.Fd())) {
				return fmt.Errorf("pi tutorial needs a terminal (stdin and stdout are not one); to play a scenario without one, use `pi scenario run NAME`")
			}
			var list []*scenarios.Scenario
			var err error
			if len(args) == 1 {
				list, err = pickScenarios(args, false)
			} else {
				list, err = scenarios.Builtin()
			}
			if err != nil {
				return err
			}
			return tui.Run(cmd.Context(), tui.Options{Scenarios: list, Start: len(args) == 1, Runner: scenarioOptions()})
		},
	}
}
