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
	case "spin": // spin: keep one CPU busy forever
		for {
		}
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
	case "ping": // ping ADDR: one ICMP echo over an unprivileged ICMP socket (no CAP_NET_RAW)
		must(ping(args[0]))
		fmt.Println("reply from", args[0])
	case "rawsock": // open a raw ICMP socket, which needs CAP_NET_RAW
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		must(err)
		unix.Close(fd)
		fmt.Println("raw socket opened")
	case "forkbomb": // forkbomb N: fork up to N children that pause; report how many forks worked
		n, _ := strconv.Atoi(args[0])
		forked := 0
		for ; forked < n; forked++ {
			pid, _, errno := syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
			if errno != 0 {
				fmt.Printf("forked %d: %v\n", forked, errno)
				sleepForever()
			}
			if pid == 0 { // the child: no Go runtime calls, only pause
				for {
					syscall.RawSyscall(syscall.SYS_PAUSE, 0, 0, 0)
				}
			}
		}
		fmt.Printf("forked %d: no error\n", forked)
		sleepForever()
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

// ping sends one ICMP echo request to addr (IPv4) over a datagram ICMP
// socket, which the kernel allows without CAP_NET_RAW to the groups in
// net.ipv4.ping_group_range, and waits up to 2 s for the reply.
func ping(addr string) error {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		return fmt.Errorf("ping: %q is not an IPv4 address", addr)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
	if err != nil {
		return fmt.Errorf("ping: open ICMP socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	// Type 8 (echo request), code 0; the kernel fills in the identifier and
	// the checksum of a ping socket's messages.
	msg := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'p', 'i'}
	to := &unix.SockaddrInet4{}
	copy(to.Addr[:], ip)
	if err := unix.Sendto(fd, msg, 0, to); err != nil {
		return fmt.Errorf("ping: send to %s: %w", addr, err)
	}
	buf := make([]byte, 1500)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("ping: no reply from %s: %w", addr, err)
	}
	if n < 8 || buf[0] != 0 {
		return fmt.Errorf("ping: unexpected reply from %s: % x", addr, buf[:n])
	}
	return nil
}
