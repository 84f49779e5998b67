package tui

import (
	"regexp"
	"strings"

	"github.com/charmbracelet/glamour"
	gansi "github.com/charmbracelet/glamour/ansi"
	"github.com/charmbracelet/glamour/styles"
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
func renderMarkdown(md, style string, width int, profile termenv.Profile) (string, error) {
	r, err := glamour.NewTermRenderer(
		glamour.WithStyles(markdownStyle(style)),
		glamour.WithWordWrap(width),
		glamour.WithColorProfile(profile),
	)
	if err != nil {
		return "", err
	}
	out, err := r.Render(joinQuoteLines(md))
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.Trim(out, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n"), nil
}

var (
	quoteLine = regexp.MustCompile(`^\s*>\s?(.*)$`)
	// A line that starts a block of its own inside a quote: a list item, a heading, a fence, a rule.
	blockStart = regexp.MustCompile(`^\s*([-*+]\s|\d+[.)]\s|#|` + "```" + `|---)`)
)

// joinQuoteLines joins the lines of each paragraph and list item of a blockquote into one. glamour keeps a
// quote's source line breaks as hard ones and then wraps each line again, so a quote written at 110 columns
// came out in a narrow pane as one long and one short line, alternating.
func joinQuoteLines(md string) string {
	lines := strings.Split(md, "\n")
	var out []string
	prevText := false // the previous line is quote text a continuation can join
	inFence := false
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
		}
		m := quoteLine.FindStringSubmatch(l)
		if m == nil || inFence {
			out = append(out, l)
			prevText = false
			continue
		}
		body := strings.TrimSpace(m[1])
		if prevText && body != "" && !blockStart.MatchString(body) {
			out[len(out)-1] += " " + body
			continue
		}
		out = append(out, l)
		prevText = body != "" && !strings.HasPrefix(body, "#")
	}
	return strings.Join(out, "\n")
}
