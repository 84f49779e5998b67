package network

import (
	"fmt"
	"os"
	"strings"

	"github.com/pilab/pi/net/netns"
)

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
