// Package stream carries an interactive exec session (stdin, stdout, stderr, window size, exit code) over one
// hijacked connection of the API socket, as frames: 1 byte type, 4 bytes big-endian length, payload.
package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types.
const (
	Stdin    byte = 0
	Stdout   byte = 1
	Stderr   byte = 2
	Resize   byte = 3 // payload: width, height as two uint16
	StdinEOF byte = 4
	Exit     byte = 5 // payload: exit code as int32
	Error    byte = 6 // payload: message; the session ends
)

const maxFrame = 1 << 20

// Conn writes and reads frames; writes are safe from several goroutines.
type Conn struct {
	r  io.Reader
	w  io.Writer
	mu sync.Mutex
}

func New(r io.Reader, w io.Writer) *Conn { return &Conn{r: r, w: w} }

// Write sends one frame.
func (c *Conn) Write(t byte, p []byte) error {
	var h [5]byte
	h[0] = t
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.w.Write(h[:]); err != nil {
		return err
	}
	_, err := c.w.Write(p)
	return err
}

// Read receives one frame.
func (c *Conn) Read() (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("stream: frame of %d bytes is too large", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return 0, nil, err
	}
	return h[0], p, nil
}

// Writer returns an io.Writer that sends frames of type t.
func (c *Conn) Writer(t byte) io.Writer { return frameWriter{c, t} }

type frameWriter struct {
	c *Conn
	t byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += maxFrame {
		end := min(off+maxFrame, len(p))
		if err := f.c.Write(f.t, p[off:end]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// EncodeSize and DecodeSize carry a terminal size.
func EncodeSize(w, h uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], w)
	binary.BigEndian.PutUint16(b[2:], h)
	return b[:]
}

func DecodeSize(p []byte) (uint16, uint16, error) {
	if len(p) != 4 {
		return 0, 0, errors.New("stream: bad resize frame")
	}
	return binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:]), nil
}

func EncodeExit(code int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	return b[:]
}

func DecodeExit(p []byte) int {
	if len(p) != 4 {
		return 1
	}
	return int(int32(binary.BigEndian.Uint32(p)))
}
