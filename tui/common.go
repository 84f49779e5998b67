package tui

import (
	"context"
	"strings"

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

// keyMap holds every binding. Each view says which of them it answers (list.bindings, walk.bindings), and
// the footer shows exactly those: a key advertised is a key that does what it says there.
type keyMap struct {
	Run, Next, Prev, Up, Down, PageUp, PageDown, Shell, Back, Quit, Help key.Binding
	// Pane toggles the right pane between the live view and the network (the app's, in every view).
	Pane key.Binding
	// The list's: the same keys, other words.
	Start, ListUp, ListDown key.Binding
}

func defaultKeys() *keyMap {
	return &keyMap{
		Run:      key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "run step")),
		Next:     key.NewBinding(key.WithKeys("n", "right"), key.WithHelp("n/→", "next step")),
		Prev:     key.NewBinding(key.WithKeys("p", "left"), key.WithHelp("p/←", "previous step")),
		Up:       key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "scroll text up")),
		Down:     key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "scroll text down")),
		PageUp:   key.NewBinding(key.WithKeys("pgup", "b"), key.WithHelp("pgup/b", "scroll output up")),
		PageDown: key.NewBinding(key.WithKeys("pgdown", " "), key.WithHelp("pgdn/space", "scroll output down")),
		Shell:    key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "shell in the pod")),
		Back:     key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "clean up, back to the list")),
		Quit:     key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		Help:     key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "more keys")),
		Pane:     key.NewBinding(key.WithKeys("tab"), key.WithHelp("tab", "network pane")),
		Start:    key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "start workshop")),
		ListUp:   key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		ListDown: key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
	}
}

// bindings is what a view shows in the footer: a short line, and the full help (?) in columns.
type bindings struct {
	short []key.Binding
	full  [][]key.Binding
}

func (b bindings) ShortHelp() []key.Binding  { return b.short }
func (b bindings) FullHelp() [][]key.Binding { return b.full }

// withHelp is b with another description (the same keys, enabled or not).
func withHelp(b key.Binding, desc string) key.Binding {
	nb := key.NewBinding(key.WithKeys(b.Keys()...), key.WithHelp(b.Help().Key, desc))
	nb.SetEnabled(b.Enabled())
	return nb
}

// short is b for the one-line footer: its first key and a word or two.
func short(b key.Binding, desc string) key.Binding {
	nb := key.NewBinding(key.WithKeys(b.Keys()...), key.WithHelp(strings.SplitN(b.Help().Key, "/", 2)[0], desc))
	nb.SetEnabled(b.Enabled())
	return nb
}

// enabled is b, shown and answered only when on is true.
func enabled(b key.Binding, on bool) key.Binding {
	b.SetEnabled(on)
	return b
}
