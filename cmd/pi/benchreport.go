package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"github.com/pilab/pi/lab/printers"
	"github.com/spf13/cobra"
)

// targets are the issues' goals for benchmark metrics, by metric name.
var targets = map[string]string{
	"ratio-p50":        "<= 2 (pilab vs bare containerd)",
	"ratio":            "<= 2",
	"p99-ms":           "<= 50 ms",
	"queries/s":        ">= 20000 (server and clients on one core)",
	"throughput-ratio": ">= 0.9",
	// pi up (images present) -> the walkthrough's nginx page through the FIP.
	"up-to-page-max-ms": "<= 5000 ms",
	// BenchmarkConcurrentClients: failed calls of 50 client-go clients over 60 s.
	"errors": "0",
}

// newBenchReportCmd turns `go test -bench` output into the report `make bench` prints: each figure with the
// baseline measured in the same run (a bare-* metric beside its pilab-* twin) and the target, if any.
func newBenchReportCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "bench-report",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t := printers.NewTable(os.Stdout)
			t.Row("BENCHMARK", "METRIC", "VALUE", "BASELINE (same run)", "TARGET")
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
					continue
				}
				metrics := map[string]string{}
				var order []string
				for i := 2; i+1 < len(f); i += 2 {
					if _, err := strconv.ParseFloat(f[i], 64); err == nil {
						metrics[f[i+1]] = f[i]
						order = append(order, f[i+1])
					}
				}
				for _, m := range order {
					if strings.HasPrefix(m, "bare-") || m == "ns/op" {
						continue
					}
					base := "-"
					if twin, ok := strings.CutPrefix(m, "pilab-"); ok {
						if v, ok := metrics["bare-"+twin]; ok {
							base = v + " bare-" + twin
						}
					}
					target := targets[m]
					if target == "" {
						target = "-"
					}
					t.Row(f[0], m, metrics[m], base, target)
				}
			}
			t.Flush()
			return sc.Err()
		},
	}
}
