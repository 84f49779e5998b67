package pods

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReadUsage reads an account's usage from v1 and v2 trees laid out as the kernel does.
func TestReadUsage(t *testing.T) {
	write := func(root, rel, text string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	level := "lab/a-1234"
	v1 := t.TempDir()
	write(v1, "cpuacct/"+level+"/cpuacct.usage", "1500000000\n")
	write(v1, "memory/"+level+"/memory.usage_in_bytes", "104857600\n")
	write(v1, "memory/"+level+"/memory.stat", "cache 0\ntotal_cache 40000000\ntotal_inactive_file 20971520\n")
	v2 := t.TempDir()
	write(v2, level+"/cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n")
	write(v2, level+"/memory.current", "52428800\n")
	write(v2, level+"/memory.stat", "anon 40000000\ninactive_file 10485760\n")
	for _, c := range []struct {
		name string
		root string
		mode cgroupMode
		want Usage
	}{
		{"v1", v1, cgroupV1, Usage{CPUNanos: 1500000000, MemoryBytes: 80 << 20}},
		{"v2", v2, cgroupV2, Usage{CPUNanos: 2500000000, MemoryBytes: 40 << 20}},
		{"no cgroup yet", t.TempDir(), cgroupV1, Usage{}},
	} {
		got, err := readUsage(c.root, c.mode, level)
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	write(v1, "memory/"+level+"/memory.usage_in_bytes", "lots\n")
	if _, err := readUsage(v1, cgroupV1, level); err == nil {
		t.Error("a damaged memory.usage_in_bytes read as a number")
	}
}
