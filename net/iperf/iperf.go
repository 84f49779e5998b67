// Package iperf measures TCP throughput between network namespaces with iperf3 (Debian's iperf3), the tool
// the field reads single-stream throughput with, for the benchmarks that compare pilab's paths (Service IP,
// Floating IP) against the direct one.
package iperf

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Stream sends one TCP stream for d (whole seconds, at least 1) from a client in clientNS to addr:port,
// which must lead to an iperf3 server this call starts in serverNS on serverPort (addr:port may be a
// translated address, such as a Service IP). It returns what the receiver got, in MB/s.
func Stream(ctx context.Context, serverNS, clientNS, addr string, port, serverPort int, d time.Duration) (float64, error) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return 0, fmt.Errorf("iperf3 is not installed (apt-get install iperf3; make bench does)")
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	// -1: one client, then exit, so nothing is left behind.
	srv := exec.CommandContext(ctx, "nsenter", "--net="+serverNS, "iperf3", "-s", "-1", "--forceflush", "-p", strconv.Itoa(serverPort))
	out, err := srv.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start iperf3 server in %s: %w", serverNS, err)
	}
	defer srv.Wait()
	defer srv.Process.Kill()
	sc := bufio.NewScanner(out)
	for !strings.Contains(sc.Text(), "Server listening") {
		if !sc.Scan() {
			return 0, fmt.Errorf("iperf3 server in %s exited before listening", serverNS)
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	secs := max(int(d/time.Second), 1)
	cli := exec.CommandContext(ctx, "nsenter", "--net="+clientNS, "iperf3", "-c", addr, "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-J")
	data, err := cli.Output()
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(data, &res); jerr != nil {
		return 0, fmt.Errorf("iperf3 client to %s:%d: %v, %v", addr, port, err, jerr)
	}
	if res.Error != "" || err != nil {
		return 0, fmt.Errorf("iperf3 client to %s:%d: %s %v", addr, port, res.Error, err)
	}
	return res.End.SumReceived.BitsPerSecond / 8 / 1e6, nil
}

// Compare measures two paths in n alternating pairs (first, then second), so that drift over the run (CPU
// frequency, other load) falls on both alike, and returns each path's median in MB/s.
func Compare(n int, first, second func() (float64, error)) (float64, float64, error) {
	var a, b []float64
	for i := 0; i < n; i++ {
		x, err := first()
		if err != nil {
			return 0, 0, fmt.Errorf("pair %d, first path: %w", i+1, err)
		}
		y, err := second()
		if err != nil {
			return 0, 0, fmt.Errorf("pair %d, second path: %w", i+1, err)
		}
		a, b = append(a, x), append(b, y)
	}
	return median(a), median(b), nil
}

// median is the upper middle of an even count, as the benchmarks have always reported it.
func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}
