package billing

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Print writes the bill as an aligned table, kubectl style: one row per line,
// then, when the bill covers several accounts, a TOTAL row per account, and last
// the overall TOTAL row (their END is the bill's time). A bill of one account
// has the one TOTAL row: its account subtotal would repeat it. Line costs are shown to 6 decimals (9 when wide), totals to the cent;
// totals are rounded from exact sums, so they can differ by a cent from adding
// the rounded figures above them. wide adds the UID and RATE columns.
// Warnings, if any, follow the table.
func (b Bill) Print(w io.Writer, wide bool) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	cols := []string{"ACCOUNT", "KIND", "NAME", "SIZE", "START", "END", "USAGE", "COST"}
	if wide {
		cols = []string{"ACCOUNT", "KIND", "NAME", "UID", "SIZE", "START", "END", "USAGE", "RATE", "COST"}
	}
	row := func(cells ...string) {
		for i, c := range cells {
			if c == "" {
				cells[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	row(cols...)
	decimals := 6
	if wide {
		decimals = 9
	}
	for _, l := range b.Lines {
		end := "(open)"
		if !l.End.IsZero() {
			end = fmtTime(l.End)
		}
		cost := l.Amount.Format(decimals)
		if wide {
			row(l.Account, l.Kind, l.Name, l.UID, l.Size, fmtTime(l.Start), end, l.Quantity, l.Rate, cost)
		} else {
			row(l.Account, l.Kind, l.Name, l.Size, fmtTime(l.Start), end, l.Quantity, cost)
		}
	}
	// Total rows leave the other columns blank rather than "-".
	total := func(account string, m Money) {
		cells := make([]string, len(cols))
		cells[0], cells[1] = account, "TOTAL"
		if account == "" {
			cells[0], cells[1] = "TOTAL", ""
		}
		for i, c := range cols {
			if c == "END" {
				cells[i] = fmtTime(b.At)
			}
		}
		cells[len(cols)-1] = m.String()
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	accounts := make([]string, 0, len(b.Accounts))
	for a := range b.Accounts {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	if len(accounts) < 2 {
		accounts = nil
	}
	for _, a := range accounts {
		name := a
		if name == "" {
			name = "-"
		}
		total(name, b.Accounts[a])
	}
	total("", b.Total)
	tw.Flush()
	for _, warn := range b.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}
