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
