package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/pilab/pi/lab/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type execOptions struct {
	container string
	stdin     bool
	tty       bool
}

func newExecCmd() *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:   "exec POD [-c CONTAINER] [-it] -- COMMAND [ARGS...]",
		Short: "Run a command in a container of a pod",
		Example: `  pi exec nginx -- curl -s localhost
  pi exec -it nginx -- sh`,
		Args: cobra.MinimumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return completeNames(cmd.Context(), "pods"), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
				return fmt.Errorf("exec needs a pod and a command after --: pi exec %s -- COMMAND", args[0])
			}
			code, err := runExec(cmd.Context(), o, args[0], args[1:])
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&o.container, "container", "c", "", "the container (default: the pod's first)")
	cmd.Flags().BoolVarP(&o.stdin, "stdin", "i", false, "pass stdin to the container")
	cmd.Flags().BoolVarP(&o.tty, "tty", "t", false, "stdin is a TTY")
	return cmd
}

func runExec(ctx context.Context, o execOptions, pod string, command []string) (int, error) {
	eo := client.ExecOptions{Container: o.container, Command: command, Stdout: os.Stdout, Stderr: os.Stderr}
	if o.stdin {
		eo.Stdin = os.Stdin
	}
	fd := int(os.Stdin.Fd())
	if o.tty {
		if !o.stdin || !term.IsTerminal(fd) {
			fmt.Fprintln(os.Stderr, "Unable to use a TTY - input is not a terminal or the right kind of file")
		} else {
			eo.TTY = true
			old, err := term.MakeRaw(fd)
			if err != nil {
				return 0, fmt.Errorf("set terminal raw mode: %w", err)
			}
			defer term.Restore(fd, old)
			sizes := make(chan [2]uint16, 4)
			eo.Resize = sizes
			winch := make(chan os.Signal, 1)
			signal.Notify(winch, syscall.SIGWINCH)
			defer signal.Stop(winch)
			send := func() {
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case sizes <- [2]uint16{uint16(w), uint16(h)}:
					default:
					}
				}
			}
			send()
			go func() {
				for range winch {
					send()
				}
			}()
			// In raw mode Ctrl-C reaches the container as a byte, not as a signal to pi.
			signal.Ignore(os.Interrupt)
			defer signal.Reset(os.Interrupt)
		}
	}
	return g.client().Exec(ctx, pod, eo)
}

type logsOptions struct {
	container string
	follow    bool
	tail      int
	previous  bool
}

func newLogsCmd() *cobra.Command {
	var o logsOptions
	cmd := &cobra.Command{
		Use:   "logs POD [-c CONTAINER] [-f] [--tail N]",
		Short: "Print the output of a container of a pod",
		Args:  cobra.ExactArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return completeNames(cmd.Context(), "pods"), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.client().Logs(cmd.Context(), args[0], client.LogOptions{Container: o.container, Follow: o.follow, Tail: o.tail, Previous: o.previous, Notes: os.Stderr}, stdoutWriter{})
		},
	}
	cmd.Flags().StringVarP(&o.container, "container", "c", "", "the container (default: the pod's first)")
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep printing new output until Ctrl-C")
	cmd.Flags().IntVar(&o.tail, "tail", -1, "print only the last N lines")
	cmd.Flags().BoolVarP(&o.previous, "previous", "p", false, "the output of the previous, terminated instance of the container")
	return cmd
}

type stdoutWriter struct{}

func (stdoutWriter) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
