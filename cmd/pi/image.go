package main

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pilab/pi/lab/printers"
	"github.com/pilab/pi/runtime/images"
	"github.com/spf13/cobra"
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
func streamProgress(ctx context.Context, path string, q url.Values, body any) error {
	resp, err := g.client().Raw(ctx, "POST", path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	start := time.Now()
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, 0); i >= 0 {
			if i > 0 {
				fmt.Println(line[:i])
			}
			status := line[i+1:]
			if status == "ok" {
				return nil
			}
			return fmt.Errorf("%s", strings.TrimPrefix(status, "error: "))
		}
		fmt.Println(line)
	}
	return fmt.Errorf("connection to the daemon lost after %s", time.Since(start).Round(time.Second))
}
