// Package scenarios holds the workshops of pilab as scenario files and the runner that plays them against a
// real lab, headless (`pi scenario run`, CI) or step by step in the terminal UI (`pi tutorial`).
//
// The file format (every field of Scenario, Step, Command and Check, variables, how commands run) is
// described in FORMAT.md next to this file; Schema returns its JSON Schema, generated from these types, and
// Lint checks a file without a lab.
//
// A Runner plays one scenario: Prepare (images, working directory), RunStep for each step, Cleanup. What
// happens is reported as Events to the Options' Sink; RunHeadless turns them into a terminal-like
// transcript, the TUI into its panes.
package scenarios
