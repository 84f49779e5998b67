package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Import loads a docker-save or OCI image archive, unpacks every image in it
// for this platform and returns their references. Images in the archive
// without a usable name are called "imported-<first 12 hex of the digest>".
func (s *Store) Import(ctx context.Context, r io.Reader) ([]string, error) {
	ctx = s.ctx(ctx)
	imgs, err := s.client.Import(ctx, r,
		containerd.WithImageRefTranslator(importName),
		containerd.WithDigestRef(unnamedRef),
		// Only images that got no name need the digest name.
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }),
		containerd.WithImportPlatform(platforms.Default()),
	)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w (is it a `docker save` or OCI image archive?)", err)
	}
	if len(imgs) == 0 {
		return nil, errors.New("import image archive: it contains no image for this platform")
	}
	refs := make([]string, 0, len(imgs))
	for _, rec := range imgs {
		img := containerd.NewImageWithPlatform(s.client, rec, platforms.Default())
		if err := img.Unpack(ctx, Snapshotter); err != nil {
			return refs, fmt.Errorf("import image archive: unpack %s: %w", rec.Name, err)
		}
		refs = append(refs, rec.Name)
	}
	return refs, nil
}

// unnamedRef names an image that came without a name after its digest, so
// that it can still be used in a pod spec ("imported-0123456789ab").
func unnamedRef(d digest.Digest) string {
	return "docker.io/library/imported-" + shortDigest(d) + ":latest"
}

// importName turns an OCI ref.name annotation into an image name. A bare tag
// ("latest", "1.25"), the common case for OCI layouts, names nothing.
func importName(name string) string {
	if !strings.ContainsAny(name, "/:@") {
		return ""
	}
	n, err := Normalize(name)
	if err != nil {
		return ""
	}
	return n
}

// Pull fetches ref from its registry (docker.io by default) and unpacks it.
// Registries on localhost are spoken to over plain HTTP, as docker does.
func (s *Store) Pull(ctx context.Context, ref string, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	full, err := Normalize(ref)
	if err != nil {
		return err
	}
	ctx = s.ctx(ctx)
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	var mu sync.Mutex
	fetchLog := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(progress, "%s: fetch %s %s (%s)\n", ShortName(full), kind(desc.MediaType), shortDigest(desc.Digest), humanSize(desc.Size))
		return nil, nil
	})
	fmt.Fprintf(progress, "%s: pulling %s\n", ShortName(full), full)
	img, err := s.client.Pull(ctx, full,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(Snapshotter),
		containerd.WithPlatformMatcher(platforms.Default()),
		containerd.WithImageHandler(fetchLog),
	)
	if err != nil {
		if offline(err) {
			return fmt.Errorf("pull %s: registry unreachable (%v); this machine may be offline: build lab images with `pi image build`, or import an archive with `pi image import FILE`", full, err)
		}
		return fmt.Errorf("pull %s: %w", full, err)
	}
	// Layers bypass image handlers (the unpacker fetches them), so report
	// them from the manifest afterwards.
	if mf, err := images.Manifest(ctx, s.client.ContentStore(), img.Target(), platforms.Default()); err == nil {
		for _, l := range mf.Layers {
			fmt.Fprintf(progress, "%s: fetched layer %s (%s)\n", ShortName(full), shortDigest(l.Digest), humanSize(l.Size))
		}
	}
	fmt.Fprintf(progress, "%s: pulled %s\n", ShortName(full), img.Target().Digest)
	return nil
}

func kind(mediaType string) string {
	switch {
	case strings.Contains(mediaType, "index"), strings.Contains(mediaType, "manifest.list"):
		return "index"
	case strings.Contains(mediaType, "manifest"):
		return "manifest"
	case strings.Contains(mediaType, "config"):
		return "config"
	case strings.Contains(mediaType, "layer"):
		return "layer"
	}
	return "blob"
}

// offline reports whether err means the registry could not be reached at all
// (as opposed to a registry that answered with an error).
func offline(err error) bool {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"no such host", "connection refused", "network is unreachable", "i/o timeout", "no route to host", "dial tcp"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
