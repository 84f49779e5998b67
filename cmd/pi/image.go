package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/pilab/pi/lab/printers"
	"github.com/pilab/pi/runtime/images"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Build, import, pull, list and remove images"}
	var force bool
	build := &cobra.Command{
		Use:   "build [NAME...]",
		Short: "Build the lab images (nginx, httpd, busybox, podinfo) from Debian packages",
		RunE: func(cmd *cobra.Command, args []string) error {
			return streamProgress(cmd.Context(), "/x/images/build", nil, map[string]any{"names": args, "force": force})
		},
	}
	build.Flags().BoolVar(&force, "force", false, "rebuild even when the recipe has not changed")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []images.Image
			if err := g.client().Do(cmd.Context(), "GET", "/x/images", nil, nil, &list); err != nil {
				return err
			}
			t := printers.NewTable(os.Stdout)
			t.Row("NAME", "REF", "SIZE", "AGE", "SOURCE")
			for _, im := range list {
				src := "imported"
				if im.Lab {
					src = "lab"
				}
				t.Row(im.Name, im.Ref, humanSize(im.Size), printers.Age(metav1.NewTime(im.Created)), src)
			}
			t.Flush()
			return nil
		},
	}
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Import images from a docker-save or OCI archive (- for stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := os.Stdin
			if args[0] != "-" {
				var err error
				if f, err = os.Open(args[0]); err != nil {
					return err
				}
				defer f.Close()
			}
			var refs []string
			if err := g.client().Do(cmd.Context(), "POST", "/x/images/import", nil, f, &refs); err != nil {
				return err
			}
			for _, r := range refs {
				fmt.Printf("image %q imported\n", r)
			}
			return nil
		},
	}
	pull := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry (docker.io by default)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return streamProgress(cmd.Context(), "/x/images/pull", url.Values{"ref": {args[0]}}, nil)
		},
	}
	var rmForce bool
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range args {
				q := url.Values{}
				if rmForce {
					q.Set("force", "true")
				}
				if err := g.client().Do(cmd.Context(), "DELETE", "/x/images/"+url.PathEscape(n), q, nil, nil); err != nil {
					return err
				}
				fmt.Printf("image %q deleted\n", n)
			}
			return nil
		},
	}
	rm.Flags().BoolVarP(&rmForce, "force", "f", false, "remove even if pods use it")
	cmd.AddCommand(build, ls, imp, pull, rm)
	return cmd
}

func humanSize(n int64) string {
	q := resource.NewQuantity(n, resource.BinarySI)
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return q.String()
}

// streamProgress prints a long operation's progress lines; the daemon ends the stream with "\x00ok" or "\x00error: ...".
// Image builds' progress lines (images.ProgressPrefix) become a progress bar on a terminal and, elsewhere, plain
// lines at each phase and every few seconds.
func streamProgress(ctx context.Context, path string, q url.Values, body any) error {
	resp, err := g.client().Raw(ctx, "POST", path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := newProgressRenderer(os.Stdout, term.IsTerminal(int(os.Stdout.Fd())))
	defer r.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	start := time.Now()
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, 0); i >= 0 {
			if i > 0 {
				r.Line(line[:i])
			}
			status := line[i+1:]
			if status == "ok" {
				return nil
			}
			r.Close()
			return fmt.Errorf("%s", strings.TrimPrefix(status, "error: "))
		}
		r.Line(line)
	}
	r.Close()
	return fmt.Errorf("connection to the daemon lost after %s", time.Since(start).Round(time.Second))
}

// plainProgressEvery is how often a pipe or CI log gets a progress line within one phase.
const plainProgressEvery = 5 * time.Second

// progressRenderer shows a stream of lines. Progress lines are drawn as one bar line that is redrawn in place (on
// a terminal) or thinned out to phase changes and one line every plainProgressEvery (elsewhere); all other lines
// are printed as they come, above the bar.
type progressRenderer struct {
	out   io.Writer
	tty   bool
	width func() int
	now   func() time.Time

	shown    bool // a bar is on the terminal's last line
	lastKey  string
	lastLine time.Time
}

func newProgressRenderer(out io.Writer, tty bool) *progressRenderer {
	width := func() int {
		if f, ok := out.(*os.File); ok {
			if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
				return w
			}
		}
		return 80
	}
	return &progressRenderer{out: out, tty: tty, width: width, now: time.Now}
}

// Line takes one line of the stream.
func (r *progressRenderer) Line(line string) {
	p, ok := images.ParseProgress(line)
	if !ok {
		r.clear()
		fmt.Fprintln(r.out, line)
		return
	}
	if r.tty {
		r.draw(p)
		return
	}
	key := fmt.Sprintf("%d %s %s", p.Step, p.Image, p.Phase)
	if key == r.lastKey && r.now().Sub(r.lastLine) < plainProgressEvery {
		return
	}
	r.lastKey, r.lastLine = key, r.now()
	fmt.Fprintln(r.out, line)
}

// draw puts p on the terminal's last line: "[1/2] nginx  download ━━━━━━──── 12.3/38.0 MB, 37 packages".
func (r *progressRenderer) draw(p images.Progress) {
	w := r.width()
	head := p.Image
	if p.Steps > 0 {
		head = fmt.Sprintf("[%d/%d] %s", p.Step, p.Steps, p.Image)
	}
	head = fmt.Sprintf("%s  %-8s ", head, p.Phase)
	var detail []string
	if p.Bytes > 0 || p.TotalBytes > 0 {
		if p.TotalBytes > 0 {
			detail = append(detail, fmt.Sprintf("%.1f/%.1f MB", float64(p.Bytes)/1e6, float64(p.TotalBytes)/1e6))
		} else {
			detail = append(detail, fmt.Sprintf("%.1f MB", float64(p.Bytes)/1e6))
		}
	}
	if p.Done > 0 || p.Total > 0 {
		if p.Total > 0 {
			detail = append(detail, fmt.Sprintf("%d/%d packages", p.Done, p.Total))
		} else {
			detail = append(detail, fmt.Sprintf("%d packages", p.Done))
		}
	}
	tail := ""
	if len(detail) > 0 {
		tail = " " + strings.Join(detail, ", ")
	}
	line := head
	if f, ok := p.Fraction(); ok {
		if bw := min(40, w-ansi.StringWidth(head)-ansi.StringWidth(tail)-1); bw >= 10 {
			line += progressBar(f, bw)
		}
	}
	line = strings.TrimRight(line+tail, " ")
	fmt.Fprint(r.out, "\r\x1b[2K"+ansi.Truncate(line, w-1, ""))
	r.shown = true
}

// progressBar draws fraction f (0 to 1) as width cells.
func progressBar(f float64, width int) string {
	full := int(f*float64(width) + 0.5)
	full = min(max(full, 0), width)
	return strings.Repeat("█", full) + strings.Repeat("░", width-full)
}

// clear removes the bar so that a plain line can be printed in its place.
func (r *progressRenderer) clear() {
	if r.shown {
		fmt.Fprint(r.out, "\r\x1b[2K")
		r.shown = false
	}
}

// Close leaves the terminal without a half-drawn bar.
func (r *progressRenderer) Close() { r.clear() }
