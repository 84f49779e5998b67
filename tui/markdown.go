package tui

import (
	"regexp"
	"strings"

	"github.com/charmbracelet/glamour"
	gansi "github.com/charmbracelet/glamour/ansi"
	"github.com/charmbracelet/glamour/styles"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"
)

// markdownStyle is glamour's standard style name ("dark", "light", "ascii", "notty") made fit for a pane:
// headings without their "###" (the standard styles print the markdown prefix), no margin (the pane has a
// border, and the step's commands and checks below start at its edge), code spans without the padding that
// throws the word wrap off inside a blockquote. An unknown name is "ascii".
func markdownStyle(name string) gansi.StyleConfig {
	base, ok := styles.DefaultStyles[name]
	if !ok {
		base = &styles.ASCIIStyleConfig
	}
	cfg := *base
	zero := uint(0)
	cfg.Document.Margin = &zero
	cfg.H1.Prefix, cfg.H1.Suffix = "", ""
	for _, h := range []*gansi.StyleBlock{&cfg.H2, &cfg.H3, &cfg.H4, &cfg.H5, &cfg.H6} {
		h.Prefix = ""
	}
	if cfg.Heading.Color == nil {
		// Without colors a heading would look like a line of text: capitals mark it, as the panes' titles.
		up := true
		cfg.Heading.Upper = &up
		// and emphasis is plain text rather than *markers* that read as raw markdown. (The colored styles
		// have italic and bold for it.)
		cfg.Emph, cfg.Strong = gansi.StylePrimitive{}, gansi.StylePrimitive{}
	}
	cfg.Code.Prefix, cfg.Code.Suffix = "", ""
	return cfg
}

// renderMarkdown renders md for a pane width cells wide with a fixed style: nothing asks the terminal, so the
// same text gives the same screen (and the goldens hold).
//
// Blockquotes are rendered here rather than by glamour, whose quotes keep their source line breaks as hard
// ones and miscount the width of a first line with bold or italic in it: a quote written at 110 columns
// came out as long and short lines, alternating, some without the quote's bar. A quote's text is rendered
// as markdown of its own, two cells narrower, and each line gets the bar.
func renderMarkdown(md, style string, width int, profile termenv.Profile) (string, error) {
	cfg := markdownStyle(style)
	token := "│ "
	if cfg.BlockQuote.IndentToken != nil {
		token = *cfg.BlockQuote.IndentToken
	}
	var parts []string
	for _, seg := range splitQuotes(md) {
		w := width
		if seg.quote {
			w = max(width-lipgloss.Width(token), 10)
		}
		out, err := renderPlain(seg.text, cfg, w, profile)
		if err != nil {
			return "", err
		}
		if out == "" {
			continue
		}
		if seg.quote {
			lines := strings.Split(out, "\n")
			for i, l := range lines {
				lines[i] = strings.TrimRight(token+l, " ")
			}
			out = strings.Join(lines, "\n")
		}
		parts = append(parts, out)
	}
	return strings.Join(parts, "\n\n"), nil
}

// renderPlain renders md with glamour, one line a paragraph, and wraps it here: glamour's own word wrap
// breaks a line a word too late and then cuts that word onto a line of its own ("…apart from" / "FIPs" /
// "which cost…"). A list item's or quote's continuation lines hang under its text.
func renderPlain(md string, cfg gansi.StyleConfig, width int, profile termenv.Profile) (string, error) {
	if strings.TrimSpace(md) == "" {
		return "", nil
	}
	r, err := glamour.NewTermRenderer(glamour.WithStyles(cfg), glamour.WithWordWrap(unwrapped), glamour.WithColorProfile(profile))
	if err != nil {
		return "", err
	}
	out, err := r.Render(joinSoftBreaks(md))
	if err != nil {
		return "", err
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		// glamour pads each line to the wrap width, sometimes inside its last escape sequence.
		lines = append(lines, wrapHanging(trimPadding(l), width))
	}
	return strings.Trim(strings.Join(lines, "\n"), "\n"), nil
}

// unwrapped is a wrap width no paragraph of a lesson reaches.
const unwrapped = 2000

var hangPrefix = regexp.MustCompile(`^(\s*([•*-]|\d+\.)?\s*)`)

// wrapHanging wraps l at width cells; the lines after the first start under its text, past its indent and
// bullet ("• ", "1. ").
func wrapHanging(l string, width int) string {
	if lipgloss.Width(l) <= width {
		return l
	}
	plain := ansi.Strip(l)
	hang := lipgloss.Width(hangPrefix.FindString(plain))
	if hang > width/2 {
		hang = 0
	}
	wrapped := strings.Split(ansi.Wrap(l, width, ""), "\n")
	if hang == 0 {
		return strings.Join(wrapped, "\n")
	}
	// Wrap the first line at the width, the rest hang: rejoin what follows and wrap it narrower.
	first := ansi.Wrap(l, width, "")
	firstLine := strings.SplitN(first, "\n", 2)[0]
	rest := strings.TrimLeft(ansi.Cut(l, lipgloss.Width(firstLine), lipgloss.Width(l)), " ")
	out := []string{strings.TrimRight(firstLine, " ")}
	pad := strings.Repeat(" ", hang)
	for _, rl := range strings.Split(ansi.Wrap(rest, width-hang, ""), "\n") {
		out = append(out, pad+strings.TrimRight(rl, " "))
	}
	return strings.Join(out, "\n")
}

// trimPadding drops the blanks glamour pads a line with (each in an escape sequence of its own), and ends
// the line with a reset when it dropped one.
func trimPadding(l string) string {
	m := trailingPad.FindStringIndex(l)
	if m == nil {
		return l
	}
	pad := l[m[0]:]
	l = l[:m[0]]
	if strings.Contains(pad, "\x1b") {
		l += "\x1b[0m"
	}
	return l
}

var trailingPad = regexp.MustCompile("(?:\x1b\\[[0-9;]*m| )+$")

// A line that starts a block of its own: a list item, a heading, a fence, a table row, a rule.
var blockStart = regexp.MustCompile(`^\s*([-*+]\s|\d+[.)]\s|#|` + "```" + `|\||---|===)`)

// joinSoftBreaks joins the source lines of each paragraph and list item into one line. glamour keeps the
// line breaks of a list item (and of a quote) as hard ones, so a note written at 110 columns came out in a
// narrow pane as one long and one short line, alternating. Fenced and indented code stay as they are.
func joinSoftBreaks(md string) string {
	var out []string
	joinable := false // the previous line is text the next one may continue
	inFence, inCode := false, false
	for _, l := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") {
			inFence = !inFence
			out = append(out, l)
			joinable = false
			continue
		}
		indented := strings.HasPrefix(l, "    ") || strings.HasPrefix(l, "\t")
		switch {
		case inFence:
		case trimmed == "":
			inCode = false
		case !joinable && indented && (len(out) == 0 || strings.TrimSpace(out[len(out)-1]) == ""):
			inCode = true
		case inCode && !indented:
			inCode = false
		}
		if joinable && !inFence && !inCode && trimmed != "" && !blockStart.MatchString(l) {
			out[len(out)-1] += " " + trimmed
			continue
		}
		out = append(out, l)
		joinable = !inFence && !inCode && trimmed != "" && !strings.HasPrefix(trimmed, "#") && !strings.HasPrefix(trimmed, "|")
	}
	return strings.Join(out, "\n")
}

// segment is a run of lines of md: a blockquote's (without its "> ") or other text.
type segment struct {
	quote bool
	text  string
}

var quoteLine = regexp.MustCompile(`^\s{0,3}>\s?(.*)$`)

// splitQuotes cuts md into blockquotes and the rest. Lines in a code fence are never a quote.
func splitQuotes(md string) []segment {
	var segs []segment
	inFence := false
	add := func(quote bool, line string) {
		if n := len(segs); n > 0 && segs[n-1].quote == quote {
			segs[n-1].text += "\n" + line
			return
		}
		segs = append(segs, segment{quote: quote, text: line})
	}
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
		}
		if m := quoteLine.FindStringSubmatch(l); m != nil && !inFence {
			add(true, m[1])
			continue
		}
		add(false, l)
	}
	return segs
}
