package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
)

// piCmd runs this test binary as the pi command (testscript.Main dispatches on argv[0]).
func piCmd(lab string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"--lab", lab}, args...)...)
	cmd.Args[0] = "pi"
	return cmd
}

func mustPi(t testing.TB, lab string, args ...string) string {
	t.Helper()
	out, err := piCmd(lab, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pi %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startLab brings up a throwaway lab below its own "Internet" namespace and resets it when the test ends.
func startLab(t testing.TB) string {
	t.Helper()
	return startLabWith(t)
}

// TestExecInteractiveTTY drives `pi exec -it` through a real pseudo-terminal: the container sees a TTY of
// the terminal's size, follows a resize, Ctrl-C interrupts the container's foreground process (not pi),
// and the shell's exit code comes back as pi's.
func TestExecInteractiveTTY(t *testing.T) {
	lab := startLab(t)
	mustPi(t, lab, "image", "build", "busybox")
	mustPi(t, lab, "run", "box", "--image=busybox", "--", "sleep", "3600")
	mustPi(t, lab, "wait", "--for=condition=Ready", "pod/box", "--timeout=60s")

	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := master.Resize(console.WinSize{Height: 30, Width: 100}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := piCmd(lab, "exec", "-it", "box", "--", "sh")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(master)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("terminal closed while waiting for %q", want)
				}
				if strings.Contains(l, want) && !strings.Contains(l, "echo") {
					return
				}
			case <-deadline:
				t.Fatalf("no %q on the terminal", want)
			}
		}
	}
	send := func(s string) {
		if _, err := io.WriteString(master, s); err != nil {
			t.Fatal(err)
		}
	}
	// Let the shell start before typing, as a person would.
	time.Sleep(time.Second)
	send("tty; stty size\n")
	expect("/dev/pts/")
	expect("30 100")

	if err := master.Resize(console.WinSize{Height: 40, Width: 120}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	send("stty size\n")
	expect("40 120")

	// Ctrl-C stops the container's sleep (the shell would not read the next line for 100 s otherwise);
	// pi and the shell live on.
	send("sleep 100\n")
	time.Sleep(time.Second)
	send("\x03")
	send("echo still-$((6*7))\n")
	expect("still-42")

	send("exit 7\n")
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Fatalf("pi exec -it exit: %v, want exit status 7", err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pi exec -it did not end after the shell exited")
	}
}
