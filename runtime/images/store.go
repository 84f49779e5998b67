// Package images manages a lab's container images in containerd: listing,
// resolving short names, importing archives, pulling, and building the lab's
// own images (busybox, httpd, nginx, podinfo) from Debian packages with
// mmdebstrap, so that workshops run without any registry.
package images

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// Snapshotter is the snapshotter every image is unpacked for; pods use it too.
const Snapshotter = "overlayfs"

// Labels set on images.
const (
	LabelLabImage = "pilab.dev/lab-image" // "true" on images built by Build
	LabelRecipe   = "pilab.dev/recipe"    // recipe hash; Build skips an image whose hash matches
)

// Store is the image store of one lab: a containerd namespace plus a work dir
// for build caches.
type Store struct {
	client    *containerd.Client
	namespace string
	workDir   string

	buildMu sync.Mutex
}

// Image describes a stored image.
type Image struct {
	Name    string // short: "nginx" for docker.io/library/nginx:latest
	Ref     string // full reference
	Digest  string // manifest (or index) digest
	Size    int64  // unpacked size if unpacked, else content size
	Created time.Time
	Lab     bool // built by pi image build
}

// New returns the image store of a lab. workDir holds build caches (apt
// archives and lists) and is created on demand.
func New(client *containerd.Client, namespace, workDir string) *Store {
	return &Store{client: client, namespace: namespace, workDir: workDir}
}

func (s *Store) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, s.namespace)
}

// Normalize turns a user-supplied image name into a full reference:
// "nginx" -> "docker.io/library/nginx:latest".
func Normalize(name string) (string, error) {
	r, err := reference.ParseDockerRef(strings.TrimSpace(name))
	if err != nil {
		return "", fmt.Errorf("invalid image name %q: %w", name, err)
	}
	return r.String(), nil
}

// ShortName is the familiar form of a reference without a ":latest" tag:
// "docker.io/library/nginx:latest" -> "nginx".
func ShortName(ref string) string {
	r, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	return strings.TrimSuffix(reference.FamiliarString(r), ":latest")
}

// List returns all images of the lab, sorted by name.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	ctx = s.ctx(ctx)
	imgs, err := s.client.ListImages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images in containerd namespace %s: %w", s.namespace, err)
	}
	out := make([]Image, 0, len(imgs))
	for _, img := range imgs {
		md := img.Metadata()
		im := Image{
			Name:    ShortName(md.Name),
			Ref:     md.Name,
			Digest:  md.Target.Digest.String(),
			Created: md.CreatedAt,
			Lab:     md.Labels[LabelLabImage] == "true",
		}
		// The image record's own time changes on every re-tag; the config's
		// creation time is what users know from `docker images`.
		if spec, err := img.Spec(ctx); err == nil && spec.Created != nil {
			im.Created = *spec.Created
		}
		im.Size = s.size(ctx, img)
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// size is the unpacked size (sum of the snapshot chain) when unpacked, else
// the content size; 0 if neither can be determined (e.g. missing content).
func (s *Store) size(ctx context.Context, img containerd.Image) int64 {
	if diffs, err := img.RootFS(ctx); err == nil && len(diffs) > 0 {
		sn := s.client.SnapshotService(Snapshotter)
		var total int64
		complete := true
		for i := range diffs {
			u, err := sn.Usage(ctx, identity.ChainID(diffs[:i+1]).String())
			if err != nil {
				complete = false
				break
			}
			total += u.Size
		}
		if complete {
			return total
		}
	}
	n, err := img.Size(ctx)
	if err != nil {
		return 0
	}
	return n
}

// NotFoundError is returned by Resolve for an image that is not stored.
type NotFoundError struct{ Name string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("image %q not found locally; run: pi image build %s | pi image pull %s | pi image import FILE", e.Name, e.Name, e.Name)
}

// Is lets errors.Is(err, errdefs.ErrNotFound) match.
func (e *NotFoundError) Is(target error) bool { return target == errdefs.ErrNotFound }

// Resolve finds a stored image by (short) name and makes sure it is unpacked
// for the overlayfs snapshotter. It never pulls: pulling must be explicit.
func (s *Store) Resolve(ctx context.Context, name string) (containerd.Image, error) {
	ctx = s.ctx(ctx)
	ref, err := Normalize(name)
	if err != nil {
		return nil, err
	}
	img, err := s.client.GetImage(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, &NotFoundError{Name: strings.TrimSpace(name)}
		}
		return nil, fmt.Errorf("look up image %s: %w", ref, err)
	}
	if err := s.ensureUnpacked(ctx, img); err != nil {
		return nil, err
	}
	return img, nil
}

func (s *Store) ensureUnpacked(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, Snapshotter)
	if err != nil {
		return fmt.Errorf("check whether image %s is unpacked: %w", img.Name(), err)
	}
	if ok {
		return nil
	}
	if err := img.Unpack(ctx, Snapshotter); err != nil {
		return fmt.Errorf("unpack image %s for %s: %w; its content may be incomplete: remove and import/pull/build it again", img.Name(), Snapshotter, err)
	}
	return nil
}

// Remove deletes an image record and, synchronously, its unreferenced content
// and snapshots. It does not check whether pods use the image.
func (s *Store) Remove(ctx context.Context, name string) error {
	ctx = s.ctx(ctx)
	ref, err := Normalize(name)
	if err != nil {
		return err
	}
	if err := s.client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("remove image %q: %w", name, &NotFoundError{Name: name})
		}
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// get returns the image record for a full reference, nil if absent.
func (s *Store) get(ctx context.Context, ref string) (*images.Image, error) {
	img, err := s.client.ImageService().Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &img, nil
}

func shortDigest(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
