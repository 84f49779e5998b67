package daemon

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/runtime/pods"
	"github.com/pilab/pi/runtime/supervisor"
)

// Reset removes everything a lab created: its containers (and with them their snapshots), its images when it
// used a shared containerd, its network namespaces, links, routes and nft tables, its mounts and its
// directories. The daemon must be stopped. It returns what it removed, one entry per thing.
func Reset(ctx context.Context, cfg Config) ([]string, error) {
	cfg.Defaults()
	if err := CheckLabName(cfg.Lab); err != nil {
		return nil, err
	}
	var removed []string
	var errs []string

	if cfg.ContainerdAddress != "" || dirExists(cfg.Root) || dirExists(cfg.RunDir) {
		r, err := resetContainers(ctx, cfg)
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if cfg.ContainerdAddress == "" {
		if err := supervisor.Shutdown(cfg.RunDir); err != nil {
			errs = append(errs, fmt.Sprintf("stop private containerd: %v", err))
		}
	}

	nm, err := network.New(network.Options{Lab: cfg.Lab, HostNetns: cfg.HostNetns})
	if err != nil {
		errs = append(errs, fmt.Sprintf("network: %v", err))
	} else {
		defer nm.Close()
		r, err := nm.Reset()
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, fmt.Sprintf("network: %v", err))
		}
	}
	if names, err := netns.ListNamed(cfg.Lab + "-"); err == nil {
		for _, n := range names {
			if err := netns.DeleteNamed(n); err != nil {
				errs = append(errs, fmt.Sprintf("netns %s: %v", n, err))
				continue
			}
			removed = append(removed, "netns "+n)
		}
	}
	for _, dir := range []string{cfg.RunDir, cfg.Root} {
		if !dirExists(dir) {
			continue
		}
		for _, m := range mountsUnder(dir) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err == nil {
				removed = append(removed, "mount "+m)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Sprintf("remove %s: %v", dir, err))
			continue
		}
		removed = append(removed, "directory "+dir)
	}
	if cfg.Socket != "" && !strings.HasPrefix(cfg.Socket, cfg.RunDir+"/") {
		if os.Remove(cfg.Socket) == nil {
			removed = append(removed, "socket "+cfg.Socket)
		}
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("reset lab %q: %s", cfg.Lab, strings.Join(errs, "; "))
	}
	return removed, nil
}

func resetContainers(ctx context.Context, cfg Config) ([]string, error) {
	var removed []string
	logf, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer logf.Close()
	if cfg.ContainerdAddress == "" {
		if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
			return nil, err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sup, err := supervisor.Start(sctx, supervisor.Options{Lab: cfg.Lab, Root: cfg.Root, RunDir: cfg.RunDir, Address: cfg.ContainerdAddress, Log: logf})
	if err != nil {
		return nil, fmt.Errorf("reach containerd to remove the lab's containers: %w", err)
	}
	defer sup.Close()
	cl := sup.Client()
	ctx = namespaces.WithNamespace(ctx, cfg.Lab)
	ctrs, err := cl.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	// The pods runtime knows every piece a container leaves: task, snapshot, cgroups, runc state.
	if err := pods.New(cl, cfg.Lab, nil, cfg.RunDir).RemoveAll(ctx); err != nil {
		return nil, fmt.Errorf("remove the lab's containers: %w", err)
	}
	for _, c := range ctrs {
		removed = append(removed, "container "+c.ID())
	}
	if cfg.ContainerdAddress != "" {
		// On a shared containerd the lab's images live in its namespace; take them and the namespace.
		is := cl.ImageService()
		imgs, _ := is.List(ctx)
		for _, im := range imgs {
			if err := is.Delete(ctx, im.Name); err == nil {
				removed = append(removed, "image "+im.Name)
			}
		}
		if err := cl.NamespaceService().Delete(ctx, cfg.Lab); err == nil {
			removed = append(removed, "containerd namespace "+cfg.Lab)
		}
	}
	return removed, nil
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
