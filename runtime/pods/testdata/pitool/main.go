// pitool is the one static binary inside the pods test image: each
// subcommand is a behaviour a test needs from a container.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: pitool CMD [ARGS]")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "sleep": // blocks forever; SIGTERM is ignored, so stopping needs SIGKILL
		signal.Ignore(syscall.SIGTERM)
		sleepForever()
	case "graceful": // exits 0 on SIGTERM
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("waiting for SIGTERM")
		<-c
		fmt.Println("got SIGTERM")
		os.Exit(0)
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "stderr":
		fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	case "exit":
		fmt.Println("exiting with", args[0])
		n, _ := strconv.Atoi(args[0])
		os.Exit(n)
	case "hostname":
		h, _ := os.Hostname()
		fmt.Println(h)
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
	case "args":
		fmt.Printf("%q\n", os.Args[1:])
	case "pwd":
		d, _ := os.Getwd()
		fmt.Println(d)
	case "nsid": // the namespaces this process is in, to compare across containers
		for _, n := range []string{"net", "uts", "ipc", "pid"} {
			l, _ := os.Readlink("/proc/self/ns/" + n)
			fmt.Println(l)
		}
	case "cat":
		io.Copy(os.Stdout, os.Stdin)
	case "write": // write FILE CONTENT
		must(os.WriteFile(args[0], []byte(args[1]), 0o644))
	case "read":
		b, err := os.ReadFile(args[0])
		must(err)
		os.Stdout.Write(b)
	case "listen": // listen ADDR: answer every connection with a greeting
		l, err := net.Listen("tcp", args[0])
		must(err)
		fmt.Println("listening on", args[0])
		h, _ := os.Hostname()
		for {
			c, err := l.Accept()
			must(err)
			fmt.Fprintf(c, "hello from %s\n", h)
			c.Close()
		}
	case "dial": // dial ADDR: retry until it answers, print the greeting
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", args[0], time.Second)
			if err == nil {
				b, _ := io.ReadAll(c)
				fmt.Print(string(b))
				os.Exit(0)
			}
			if time.Now().After(deadline) {
				fmt.Println("dial:", err)
				os.Exit(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	case "ticker": // ticker PREFIX: print a numbered line every 50ms forever
		signal.Ignore(syscall.SIGTERM)
		for i := 0; ; i++ {
			fmt.Printf("%s %d\n", args[0], i)
			time.Sleep(50 * time.Millisecond)
		}
	case "lines": // lines N: print N numbered lines, then block
		n, _ := strconv.Atoi(args[0])
		for i := 1; i <= n; i++ {
			fmt.Printf("line %d\n", i)
		}
		signal.Ignore(syscall.SIGTERM)
		sleepForever()
	case "alloc": // alloc MB: touch MB MiB of memory, then block
		n, _ := strconv.Atoi(args[0])
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
		sleepForever()
	case "tty": // report whether stdin is a terminal; after one input line, report its size
		_, err := unix.IoctlGetTermios(0, unix.TCGETS)
		fmt.Printf("tty=%v\n", err == nil)
		if err != nil {
			os.Exit(4)
		}
		bufio.NewReader(os.Stdin).ReadString('\n')
		ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
		must(err)
		fmt.Printf("size=%dx%d\n", ws.Col, ws.Row)
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "pitool: unknown command", os.Args[1])
		os.Exit(2)
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pitool:", err)
		os.Exit(1)
	}
}

// sleepForever blocks without tripping the runtime's deadlock detector (a
// bare select{} in a program with no other goroutine is a fatal error).
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}
