package tui

import (
	"context"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/lipgloss"
)

// common is what every component shares, as in soft-serve: the app's context, the size the component is
// given, the styles and the keys. Components embed it.
type common struct {
	ctx    context.Context
	width  int
	height int
	styles *Styles
	keys   *keyMap
	// glamourStyle names glamour's standard style for markdown ("dark", "light"; "ascii" in tests).
	glamourStyle string
}

func (c *common) SetSize(w, h int) { c.width, c.height = w, h }

// Styles are the app's looks in one place.
type Styles struct {
	Header    lipgloss.Style
	Title     lipgloss.Style
	Dim       lipgloss.Style
	Pane      lipgloss.Style
	PaneTitle lipgloss.Style
	Command   lipgloss.Style
	Passed    lipgloss.Style
	Failed    lipgloss.Style
	Running   lipgloss.Style
	Selected  lipgloss.Style
	Error     lipgloss.Style
}

func defaultStyles() *Styles {
	return &Styles{
		Header:    lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("212")),
		Title:     lipgloss.NewStyle().Bold(true),
		Dim:       lipgloss.NewStyle().Foreground(lipgloss.Color("241")),
		Pane:      lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(lipgloss.Color("238")),
		PaneTitle: lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("39")),
		Command:   lipgloss.NewStyle().Foreground(lipgloss.Color("214")),
		Passed:    lipgloss.NewStyle().Foreground(lipgloss.Color("42")),
		Failed:    lipgloss.NewStyle().Foreground(lipgloss.Color("196")),
		Running:   lipgloss.NewStyle().Foreground(lipgloss.Color("220")),
		Selected:  lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("212")),
		Error:     lipgloss.NewStyle().Foreground(lipgloss.Color("196")),
	}
}

type keyMap struct {
	Run, Next, Prev, Up, Down, PageUp, PageDown, Back, Quit, Help key.Binding
	// list is true on the scenario list, where enter starts a scenario and n/p mean nothing.
	list bool
}

func defaultKeys() *keyMap {
	return &keyMap{
		Run:      key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "run step")),
		Next:     key.NewBinding(key.WithKeys("n", "right"), key.WithHelp("n", "next step")),
		Prev:     key.NewBinding(key.WithKeys("p", "left"), key.WithHelp("p", "previous step")),
		Up:       key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "scroll text up")),
		Down:     key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "scroll text down")),
		PageUp:   key.NewBinding(key.WithKeys("pgup", "b"), key.WithHelp("pgup", "scroll output up")),
		PageDown: key.NewBinding(key.WithKeys("pgdown", " "), key.WithHelp("pgdn", "scroll output down")),
		Back:     key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "clean up, back to the list")),
		Quit:     key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		Help:     key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
	}
}

// ShortHelp and FullHelp make keyMap a help.KeyMap.
func (k keyMap) ShortHelp() []key.Binding {
	if k.list {
		return []key.Binding{withHelp(k.Run, "start"), k.Up, k.Down, k.Quit, k.Help}
	}
	return []key.Binding{k.Run, k.Next, k.Prev, k.Help, k.Quit}
}

func (k keyMap) FullHelp() [][]key.Binding {
	if k.list {
		return [][]key.Binding{{withHelp(k.Run, "start the scenario"), withHelp(k.Up, "up"), withHelp(k.Down, "down")}, {k.Quit, k.Help}}
	}
	return [][]key.Binding{{k.Run, k.Next, k.Prev}, {k.Up, k.Down, k.PageUp, k.PageDown}, {k.Back, k.Quit, k.Help}}
}

func withHelp(b key.Binding, desc string) key.Binding {
	return key.NewBinding(key.WithKeys(b.Keys()...), key.WithHelp(b.Help().Key, desc))
}
