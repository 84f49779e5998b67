package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
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

	interactiveShell(t, "pi", piCmd(lab, "exec", "-it", "box", "--", "sh"))
}

// interactiveShell runs cmd (`pi exec -it ... sh`, `kubectl exec -it ... sh`) on a pty as a person's
// terminal and checks what they would: the shell has a tty of the terminal's size and follows a resize,
// Ctrl-C interrupts the container's foreground process (not the client), and the shell's exit code
// becomes the client's.
func interactiveShell(t *testing.T, client string, cmd *exec.Cmd) {
	t.Helper()
	master, done := startOnPty(t, cmd)
	defer master.Close()

	lines := terminalLines(master)
	var seen []string
	expect := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s: terminal closed while waiting for %q; it showed %q", client, want, seen)
				}
				seen = append(seen, l)
				// The terminal echoes what is typed; the answer is a line without the command.
				if strings.Contains(l, want) && !strings.Contains(l, "echo") && !strings.Contains(l, "stty") {
					return
				}
			case <-deadline:
				cmd.Process.Kill()
				t.Fatalf("%s: no %q on the terminal; it showed %q", client, want, seen)
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
	// the client and the shell live on.
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
			t.Fatalf("%s exec -it exit: %v, want exit status 7", client, err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s exec -it did not end after the shell exited", client)
	}
}

// terminalLines reads what a program writes to the terminal master, line by line, and answers the
// status queries a real xterm answers: the background colour (OSC 11) and the cursor position (DSR).
// Unanswered, termenv waits 5 s for each and reads the keys typed meanwhile as the answer.
func terminalLines(master io.ReadWriter) <-chan string {
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		var pending []byte
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			chunk := buf[:n]
			for _, q := range []struct{ ask, answer string }{
				{"\x1b]11;?", "\x1b]11;rgb:0000/0000/0000\x1b\\"},
				{"\x1b[6n", "\x1b[1;1R"},
			} {
				for i := bytes.Count(chunk, []byte(q.ask)); i > 0; i-- {
					io.WriteString(master, q.answer)
				}
			}
			pending = append(pending, chunk...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				lines <- strings.TrimRight(string(pending[:i]), "\r")
				pending = pending[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	return lines
}

// ptyScreen runs cmd on a new terminal (100x30, TERM=xterm) and returns what to type into it and a wait
// for text to appear on it: everything the program wrote, its escape sequences taken out, searched as
// one text (a full-screen program redraws parts of lines, without newlines).
func ptyScreen(t *testing.T, cmd *exec.Cmd) (send func(string), waitFor func(string), done <-chan error) {
	t.Helper()
	master, exited := startOnPty(t, cmd)
	t.Cleanup(func() {
		cmd.Process.Kill()
		master.Close()
	})

	var mu sync.Mutex
	var screen strings.Builder
	lines := terminalLines(rawTee{master, func(p []byte) {
		mu.Lock()
		screen.WriteString(ansiSeq.ReplaceAllString(string(p), ""))
		mu.Unlock()
	}})
	go func() {
		for range lines {
		}
	}()
	waitFor = func(want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := screen.String()
			mu.Unlock()
			if strings.Contains(got, want) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("no %q on the terminal in 60 s; it showed (escapes taken out):\n%s", want, screen.String())
	}
	send = func(s string) {
		if _, err := io.WriteString(master, s); err != nil {
			t.Fatal(err)
		}
	}
	return send, waitFor, exited
}

// ansiSeq matches terminal escape sequences: CSI (colours, cursor moves), OSC (titles, colour queries).
var ansiSeq = regexp.MustCompile(`\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMc]`)

// rawTee is a terminal master whose reads are also handed to see.
type rawTee struct {
	rw  io.ReadWriter
	see func([]byte)
}

func (r rawTee) Read(p []byte) (int, error) {
	n, err := r.rw.Read(p)
	if n > 0 {
		r.see(p[:n])
	}
	return n, err
}
func (r rawTee) Write(p []byte) (int, error) { return r.rw.Write(p) }

// startOnPty starts cmd on a new terminal of 100x30 as its controlling terminal, as a person's shell
// would run it (TERM=xterm), and returns the terminal's master side and cmd's end.
func startOnPty(t *testing.T, cmd *exec.Cmd) (console.Console, <-chan error) {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	if err := master.Resize(console.WinSize{Height: 30, Width: 100}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	// A terminal as people have: TERM=xterm, so the client's libraries may ask it questions (bubbletea, in
	// pi, asks for the background colour at start), which terminalLines answers as xterm does.
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "TERM=xterm")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return master, done
}
