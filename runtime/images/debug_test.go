package images_test

import (
	"testing"
	"time"
	"os"
	"strings"

	"github.com/containerd/containerd/oci"
)

func TestDebugRun(t *testing.T) {
	name := os.Getenv("DEBUG_IMAGE")
	if name == "" {
		t.Skip()
	}
	store, sup := newStore(t)
	ctx := ctxFor(t, 10*time.Minute)
	if err := store.Build(ctx, []string{name}, false, os.Stdout); err != nil {
		t.Fatal(err)
	}
	img, err := store.Resolve(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var opts []oci.SpecOpts
	if a := os.Getenv("DEBUG_ARGS"); a != "" {
		opts = append(opts, oci.WithProcessArgs(strings.Fields(a)...))
	}
	r := run(t, ctx, sup.Client(), img, "dbg", opts...)
	time.Sleep(3 * time.Second)
	select {
	case st := <-r.exit:
		r.exit = nil
		t.Logf("exited: %d", st.ExitCode())
	default:
		t.Logf("running")
	}
	time.Sleep(500 * time.Millisecond)
	t.Logf("output:\n%s", r.out.String())
}
