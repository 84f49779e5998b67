package api

import "testing"

func TestAccountCeilings(t *testing.T) {
	for _, tc := range []struct {
		spec     AccountSpec
		cpu, mem int64
	}{
		{AccountSpec{}, 0, 4 << 30},
		{AccountSpec{CPUQuota: "1", MemoryQuota: "2Gi"}, 1000, 2 << 30},
		{AccountSpec{CPUQuota: "500m", MemoryQuota: "512Mi"}, 500, 512 << 20},
		{AccountSpec{CPUQuota: "1.5"}, 1500, 4 << 30},
	} {
		cpu, mem, err := AccountCeilings(tc.spec)
		if err != nil || cpu != tc.cpu || mem != tc.mem {
			t.Errorf("AccountCeilings(%+v) = %d, %d, %v; want %d, %d", tc.spec, cpu, mem, err, tc.cpu, tc.mem)
		}
	}
	if _, _, err := AccountCeilings(AccountSpec{MemoryQuota: "lots"}); err == nil {
		t.Error("AccountCeilings of memoryQuota \"lots\": no error")
	}
}
