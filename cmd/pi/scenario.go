package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pilab/pi/lab/printers"
	"github.com/pilab/pi/scenarios"
	"github.com/pilab/pi/tui"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
	if g.remote != nil {
		// From another machine: the runner and its commands are clients of the same kubeconfig.
		return scenarios.Options{Kubeconfig: g.kubeconfigPath(), KubeContext: g.contextName(), Lab: g.lab, Account: g.explicitAccount()}
	}
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
	var (
		all, keepGoing bool
		junitPath      string
		output         string
		parallel       int
	)
	run := &cobra.Command{
		Use:   "run (NAME|FILE)... | --all",
		Short: "Play scenarios against the lab without a UI, printing a transcript and a summary line",
		Long: `Play scenarios against the lab without a UI. A run never changes or deletes an object it did not make:
a step that would make a name the account already holds stops with a message, and the cleanup deletes only
what the run made. --account NEW (an account that does not exist) plays in a throwaway account, made for the
run and deleted after it; with CI=true, --all plays each scenario in a throwaway account of its own, which
lets --parallel play several at once. The last line counts the steps: "N passed, N failed[, N skipped]".`,
		Example: `  pi scenario run pod-networking
  pi scenario run --all --keep-going --junit report.xml
  pi scenario run --all -o json
  pi scenario run --account sandbox expose-nginx
  CI=true pi scenario run --all --parallel 3
  pi scenario run ./my-workshop.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("-o %q: the run prints a transcript, or JSON lines with -o json", output)
			}
			if parallel < 1 {
				return fmt.Errorf("--parallel %d: play at least one scenario at a time", parallel)
			}
			list, err := pickScenarios(args, all)
			if err != nil {
				return err
			}
			so := scenarios.SuiteOptions{KeepGoing: keepGoing, Parallel: parallel, JSON: output == "json"}
			explicitAccount := cmd.Flags().Changed("account") || os.Getenv("PI_ACCOUNT") != ""
			ci := os.Getenv("CI") == "true"
			switch {
			case parallel > 1 && explicitAccount:
				return fmt.Errorf("--parallel plays each scenario in a throwaway account of its own; drop --account (or PI_ACCOUNT)")
			case parallel > 1 || (all && ci && !explicitAccount):
				so.Throwaway = true
			}
			opt := scenarioOptions()
			opt.Parse = parseLine(cmd.Root())
			rep, err := scenarios.RunSuite(cmd.Context(), os.Stdout, list, opt, so)
			if err != nil {
				return err
			}
			if junitPath != "" {
				if err := writeJUnit(junitPath, rep); err != nil {
					return err
				}
			}
			if err := rep.Err(); err != nil {
				if so.JSON {
					// The failures are in the JSON lines; the exit status says there were some.
					return exitError{1}
				}
				return err
			}
			return nil
		},
	}
	run.Flags().BoolVar(&all, "all", false, "play every built-in scenario, in order")
	run.Flags().BoolVar(&keepGoing, "keep-going", false, "after a failed scenario, play the rest (without it they are reported skipped)")
	run.Flags().StringVar(&junitPath, "junit", "", "write a JUnit XML report to this file (a testsuite per scenario, a testcase per step)")
	run.Flags().StringVarP(&output, "output", "o", "", "json: print the run's events as JSON lines instead of a transcript")
	run.Flags().IntVar(&parallel, "parallel", 1, "play this many scenarios at once, each in a throwaway account")
	lint := &cobra.Command{
		Use:   "lint FILE...",
		Short: "Check scenario files without a lab",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, f := range args {
				if err := scenarios.Lint(f); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Printf("%s: ok\n", f)
			}
			return errors.Join(errs...)
		},
	}
	schema := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of scenario files, for editors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := scenarios.Schema()
			if err != nil {
				return err
			}
			if len(data) > 0 && data[len(data)-1] != '\n' {
				data = append(data, '\n')
			}
			_, err = os.Stdout.Write(data)
			return err
		},
	}
	cmd.AddCommand(list, run, lint, schema)
	return cmd
}

func writeJUnit(path string, rep *scenarios.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the JUnit report: %w", err)
	}
	if err := rep.WriteJUnit(f); err != nil {
		f.Close()
		return fmt.Errorf("write the JUnit report %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the JUnit report %s: %w", path, err)
	}
	return nil
}

// parseLine reads a scenario's pi command line with pi's own command tree, without running or changing
// anything: which subcommand, its positional arguments and its flags by long name. The runner learns from it
// which objects a command makes or changes.
func parseLine(root *cobra.Command) func([]string) (scenarios.ParsedCommand, error) {
	return func(args []string) (scenarios.ParsedCommand, error) {
		p := scenarios.ParsedCommand{Flags: map[string][]string{}}
		c, rest, err := root.Find(args)
		if err != nil || c == nil {
			return p, fmt.Errorf("pi %s: %v", strings.Join(args, " "), err)
		}
		for x := c; x != nil && x != root; x = x.Parent() {
			p.Path = append([]string{x.Name()}, p.Path...)
		}
		// A set of its own: the command's flag sets are left as they are.
		flags := pflag.NewFlagSet(c.Name(), pflag.ContinueOnError)
		flags.AddFlagSet(c.Flags())
		flags.AddFlagSet(c.InheritedFlags())
		for i := 0; i < len(rest); i++ {
			a := rest[i]
			if a == "--" {
				break
			}
			if !strings.HasPrefix(a, "-") || a == "-" {
				p.Args = append(p.Args, a)
				continue
			}
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			var f *pflag.Flag
			if strings.HasPrefix(a, "--") {
				f = flags.Lookup(name)
			} else {
				if len(name) > 1 && !hasVal {
					// -fFILE or -it: the first letter names the flag.
					f = flags.ShorthandLookup(name[:1])
					if f != nil && f.NoOptDefVal == "" {
						val, hasVal = name[1:], true
					}
				} else {
					f = flags.ShorthandLookup(name)
				}
			}
			if f == nil {
				return p, fmt.Errorf("pi %s: unknown flag %s", strings.Join(args, " "), a)
			}
			switch {
			case hasVal:
			case f.NoOptDefVal != "":
				val = f.NoOptDefVal
			case i+1 < len(rest):
				i++
				val = rest[i]
			}
			p.Flags[f.Name] = append(p.Flags[f.Name], val)
		}
		return p, nil
	}
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
