package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImportRootfs stores layer (an uncompressed tar of a complete root
// filesystem) as a single-layer OCI image named ref: gzip layer, config and
// manifest go into the content store, the image is unpacked for overlayfs,
// and then the image record is created or re-pointed. On error no image
// record is changed and the written content is left to containerd's GC.
func (s *Store) ImportRootfs(ctx context.Context, ref string, layer io.Reader, cfg ocispec.ImageConfig, labels map[string]string) error {
	full, err := Normalize(ref)
	if err != nil {
		return err
	}
	ctx = s.ctx(ctx)
	// The lease keeps fresh blobs from being collected before the image
	// record references them; on failure its expiry frees them.
	ctx, done, err := s.client.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return fmt.Errorf("import rootfs %s: create lease: %w", full, err)
	}
	defer done(context.WithoutCancel(ctx))

	cs := s.client.ContentStore()
	layerDesc, diffID, err := writeGzipLayer(ctx, cs, layer)
	if err != nil {
		return fmt.Errorf("import rootfs %s: write layer: %w", full, err)
	}

	now := time.Now().UTC()
	img := ocispec.Image{
		Created:  &now,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History:  []ocispec.History{{Created: &now, CreatedBy: "pi: rootfs " + full}},
	}
	configDesc, err := writeJSON(ctx, cs, ocispec.MediaTypeImageConfig, img, nil)
	if err != nil {
		return fmt.Errorf("import rootfs %s: write config: %w", full, err)
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	}
	// GC labels make the manifest hold on to its config and layer.
	manifestDesc, err := writeJSON(ctx, cs, ocispec.MediaTypeImageManifest, manifest, map[string]string{
		"containerd.io/gc.ref.content.config": configDesc.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layerDesc.Digest.String(),
	})
	if err != nil {
		return fmt.Errorf("import rootfs %s: write manifest: %w", full, err)
	}

	rec := images.Image{Name: full, Target: manifestDesc, Labels: labels}
	if err := containerd.NewImage(s.client, rec).Unpack(ctx, Snapshotter); err != nil {
		return fmt.Errorf("import rootfs %s: unpack: %w (is the layer a valid tar?)", full, err)
	}
	if err := s.putImage(ctx, rec); err != nil {
		return fmt.Errorf("import rootfs %s: %w", full, err)
	}
	return nil
}

// putImage creates the image record or replaces target and labels of an
// existing one.
func (s *Store) putImage(ctx context.Context, rec images.Image) error {
	is := s.client.ImageService()
	if _, err := is.Create(ctx, rec); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return fmt.Errorf("create image record: %w", err)
		}
		if _, err := is.Update(ctx, rec, "target", "labels"); err != nil {
			return fmt.Errorf("update image record: %w", err)
		}
	}
	return nil
}

func randomRef(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// writeGzipLayer compresses r into the content store in one pass, computing
// both the compressed digest and the uncompressed diffID.
func writeGzipLayer(ctx context.Context, cs content.Store, r io.Reader) (ocispec.Descriptor, digest.Digest, error) {
	w, err := content.OpenWriter(ctx, cs, content.WithRef(randomRef("pilab-layer-")))
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer w.Close()

	compressed := digest.Canonical.Digester()
	counter := &countWriter{}
	// Buffer so gRPC writes go out in large chunks.
	bw := bufio.NewWriterSize(io.MultiWriter(w, compressed.Hash(), counter), 1<<20)
	// BestSpeed: layers are written once per build on the same machine;
	// ratio matters much less than build time here.
	gz, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	uncompressed := digest.Canonical.Digester()
	if _, err := io.Copy(io.MultiWriter(gz, uncompressed.Hash()), r); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := gz.Close(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if err := bw.Flush(); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	diffID := uncompressed.Digest()
	desc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest:    compressed.Digest(),
		Size:      counter.n,
	}
	err = w.Commit(ctx, desc.Size, desc.Digest, content.WithLabels(map[string]string{
		"containerd.io/uncompressed": diffID.String(),
	}))
	if err != nil && !errdefs.IsAlreadyExists(err) {
		return ocispec.Descriptor{}, "", err
	}
	return desc, diffID, nil
}

func writeJSON(ctx context.Context, cs content.Store, mediaType string, v any, labels map[string]string) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	var opts []content.Opt
	if labels != nil {
		opts = append(opts, content.WithLabels(labels))
	}
	if err := content.WriteBlob(ctx, cs, randomRef("pilab-blob-"), bytes.NewReader(b), desc, opts...); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
