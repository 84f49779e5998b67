package images_test

import (
	"os"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestDebugImport(t *testing.T) {
	p := os.Getenv("DEBUG_TAR")
	if p == "" {
		t.Skip()
	}
	store, sup := newStore(t)
	ctx := ctxFor(t, 10*time.Minute)
	f, _ := os.Open(p)
	start := time.Now()
	if err := store.ImportRootfs(ctx, "dbg", f, ocispec.ImageConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("import: %s", time.Since(start))
	_ = sup
}
