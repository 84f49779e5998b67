package network

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pilab/pi/net/netns"
)

type sysctl struct {
	key      string // below /proc/sys
	value    string
	optional bool // absent when the feature is not built (IPv6, bridge netfilter)
}

// setSysctls writes the values inside the netns at path. /proc/sys/net shows
// the namespace of the thread that opens the file, hence netns.Do.
func setSysctls(path string, list []sysctl) error {
	return netns.Do(path, func() error {
		for _, s := range list {
			p := "/proc/sys/" + s.key
			cur, err := os.ReadFile(p)
			if err != nil {
				if s.optional && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return fmt.Errorf("read sysctl %s in %s: %w", s.key, path, err)
			}
			if strings.TrimSpace(string(cur)) == s.value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
				return fmt.Errorf("set sysctl %s=%s in %s: %w", s.key, s.value, path, err)
			}
		}
		return nil
	})
}

func getSysctl(path, key string) (string, error) {
	var v string
	err := netns.Do(path, func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		if err != nil {
			return fmt.Errorf("read sysctl %s in %s: %w", key, path, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}
