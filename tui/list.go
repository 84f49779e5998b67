package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/pilab/pi/scenarios"
)

// chooseMsg opens a scenario.
type chooseMsg struct{ sc *scenarios.Scenario }

// list is the first screen: the scenarios to pick from.
type list struct {
	common
	items  []*scenarios.Scenario
	cursor int
}

func newList(c common, items []*scenarios.Scenario) *list { return &list{common: c, items: items} }

func (l *list) Update(msg tea.Msg) (*list, tea.Cmd) {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return l, nil
	}
	switch {
	case key.Matches(km, l.keys.Up):
		if l.cursor > 0 {
			l.cursor--
		}
	case key.Matches(km, l.keys.Down):
		if l.cursor < len(l.items)-1 {
			l.cursor++
		}
	case key.Matches(km, l.keys.Run):
		if len(l.items) > 0 {
			sc := l.items[l.cursor]
			return l, func() tea.Msg { return chooseMsg{sc} }
		}
	}
	return l, nil
}

func (l *list) View() string {
	var b strings.Builder
	b.WriteString(l.styles.PaneTitle.Render("Workshops") + "\n\n")
	for i, sc := range l.items {
		line := fmt.Sprintf("%d. %-16s %s", i+1, sc.Name, sc.Title)
		steps := l.styles.Dim.Render(fmt.Sprintf(" (%d steps)", len(sc.Steps)))
		if i == l.cursor {
			b.WriteString(l.styles.Selected.Render("> "+line) + steps + "\n")
		} else {
			b.WriteString("  " + line + steps + "\n")
		}
	}
	b.WriteString("\n" + l.styles.Dim.Render("Each workshop runs real pi commands in your account and cleans up after itself."))
	return pane(l.styles, max(l.width-2, 0), max(l.height-2, 0), b.String())
}
