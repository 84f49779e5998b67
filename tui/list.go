package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
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
	case key.Matches(km, l.keys.ListUp):
		if l.cursor > 0 {
			l.cursor--
		}
	case key.Matches(km, l.keys.ListDown):
		if l.cursor < len(l.items)-1 {
			l.cursor++
		}
	case key.Matches(km, l.keys.Start):
		if len(l.items) > 0 {
			sc := l.items[l.cursor]
			return l, func() tea.Msg { return chooseMsg{sc} }
		}
	}
	return l, nil
}

// bindings are the keys the list answers (Update), and the app's own.
func (l *list) bindings() bindings {
	k := l.keys
	return bindings{
		short: []key.Binding{k.Start, k.ListUp, k.ListDown, k.Help, k.Quit},
		full:  [][]key.Binding{{k.Start, k.ListUp, k.ListDown}, {withHelp(k.Help, "hide these keys"), k.Quit}},
	}
}

func (l *list) View() string {
	var b strings.Builder
	b.WriteString(l.styles.PaneTitle.Render("Workshops") + "\n\n")
	w := max(l.width-2, 1)
	// Two lines a workshop, the title first: both fit a pane of 80 columns' two thirds, and wrap below that.
	for i, sc := range l.items {
		title := fmt.Sprintf("%d. %s", i+1, sc.Title)
		about := l.styles.Dim.Render(ansi.Wrap(fmt.Sprintf("%s · %d steps", sc.Name, len(sc.Steps)), max(w-5, 1), ""))
		about = "     " + strings.ReplaceAll(about, "\n", "\n     ")
		if i == l.cursor {
			b.WriteString(l.styles.Selected.Render(ansi.Wrap("> "+title, w, "")) + "\n" + about + "\n")
		} else {
			b.WriteString(ansi.Wrap("  "+title, w, "") + "\n" + about + "\n")
		}
	}
	b.WriteString("\n" + l.styles.Dim.Render(ansi.Wrap("Each workshop runs real pi commands in your account and cleans up after itself.", w, "")))
	return pane(l.styles, max(l.width-2, 0), max(l.height-2, 0), b.String())
}
