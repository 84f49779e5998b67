// Package client talks to a lab's API socket; the CLI and the terminal UI use it.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/stream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Client is a connection to one lab daemon, acting for one account.
type Client struct {
	Socket  string
	Account string
	hc      *http.Client
}

// New returns a client of the daemon at socket.
func New(socket, account string) *Client {
	if account == "" {
		account = api.DefaultAccount
	}
	c := &Client{Socket: socket, Account: account}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
	}}
	return c
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "connection refused") {
			return nil, &DaemonDownError{Socket: c.Socket}
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("cannot reach the pi daemon at %s: permission denied (pi runs as root)", c.Socket)
		}
		return nil, err
	}
	return conn, nil
}

// DaemonDownError says the daemon does not answer.
type DaemonDownError struct{ Socket string }

func (e *DaemonDownError) Error() string {
	return fmt.Sprintf("the pi daemon is not running (no answer on %s); start it with `pi up`", e.Socket)
}

// APIError is an error answer of the daemon.
type APIError struct {
	Code   int
	Reason string
	Msg    string
	// Items are the refused objects of a set (CreateSet), by index.
	Items []server.ItemStatus
}

func (e *APIError) Error() string { return e.Msg }

// IsNotFound reports whether err is the daemon saying an object does not exist.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Reason == "NotFound"
}

// IsAlreadyExists reports whether err is the daemon saying an object exists already.
func IsAlreadyExists(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Reason == "AlreadyExists"
}

func (c *Client) url(path string, q url.Values) string {
	if q == nil {
		q = url.Values{}
	}
	if q.Get("account") == "" {
		q.Set("account", c.Account)
	}
	return "http://pi" + path + "?" + q.Encode()
}

// Do sends one request and decodes a JSON answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body any, out any) error {
	resp, err := c.Raw(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Raw sends one request and returns the answer if it is a success; the caller closes its body.
func (c *Client) Raw(ctx context.Context, method, path string, q url.Values, body any) (*http.Response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), r)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var dd *DaemonDownError
		if errors.As(err, &dd) {
			return nil, dd
		}
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var st server.Status
		data, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(data, &st) != nil || st.Error == "" {
			st.Error = strings.TrimSpace(string(data))
		}
		return nil, &APIError{Code: resp.StatusCode, Reason: st.Reason, Msg: st.Error, Items: st.Items}
	}
	return resp, nil
}

// ListOptions narrow a list.
type ListOptions struct {
	LabelSelector string
	AllAccounts   bool
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	if o.AllAccounts {
		q.Set("allAccounts", "true")
	}
	return q
}

// List returns the objects of kind k.
func (c *Client) List(ctx context.Context, k api.Kind, o ListOptions) ([]metav1.Object, error) {
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := c.Do(ctx, "GET", "/v1/"+k.Plural, o.query(), nil, &list); err != nil {
		return nil, err
	}
	out := make([]metav1.Object, 0, len(list.Items))
	for _, raw := range list.Items {
		obj, err := api.Decode(k, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, k api.Kind, name string) (metav1.Object, error) {
	o := k.New()
	if err := c.Do(ctx, "GET", "/v1/"+k.Plural+"/"+url.PathEscape(name), nil, nil, o); err != nil {
		return nil, err
	}
	return o, nil
}

// Create creates o and returns it as stored.
func (c *Client) Create(ctx context.Context, o metav1.Object) (metav1.Object, error) {
	k := api.KindOf(o)
	out := k.New()
	if err := c.Do(ctx, "POST", "/v1/"+k.Plural, nil, o, out); err != nil {
		return nil, err
	}
	return out, nil
}

// CreateSet creates objects of any kinds as one set: all of them, or none. With dryRun it only asks whether
// the set would be accepted. A refusal is an *APIError whose Items say which objects failed and why.
func (c *Client) CreateSet(ctx context.Context, objs []metav1.Object, dryRun bool) error {
	q := url.Values{}
	if dryRun {
		q.Set("dryRun", "All")
	}
	for _, o := range objs {
		api.SetTypeMeta(o)
	}
	return c.Do(ctx, "POST", "/v1/batch", q, map[string]any{"items": objs}, nil)
}

// Replace replaces o (apply); status fields are the daemon's.
func (c *Client) Replace(ctx context.Context, o metav1.Object) (metav1.Object, error) {
	k := api.KindOf(o)
	out := k.New()
	if err := c.Do(ctx, "PUT", "/v1/"+k.Plural+"/"+url.PathEscape(o.GetName()), nil, o, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Delete starts deleting an object.
func (c *Client) Delete(ctx context.Context, k api.Kind, name string, cascade bool) error {
	q := url.Values{}
	if cascade {
		q.Set("cascade", "true")
	}
	return c.Do(ctx, "DELETE", "/v1/"+k.Plural+"/"+url.PathEscape(name), q, nil, nil)
}

// Watch streams changes of kind k, starting with ADDED events for the objects there are, until ctx ends.
func (c *Client) Watch(ctx context.Context, k api.Kind, o ListOptions) (<-chan api.WatchEvent, error) {
	resp, err := c.Raw(ctx, "GET", "/v1/watch/"+k.Plural, o.query(), nil)
	if err != nil {
		return nil, err
	}
	ch := make(chan api.WatchEvent)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var ev api.WatchEvent
			if err := dec.Decode(&ev); err != nil {
				return
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// LogOptions select a container's output.
type LogOptions struct {
	Container string
	Follow    bool
	Previous  bool
	Tail      int // -1: all
}

// Logs copies a container's output to w.
func (c *Client) Logs(ctx context.Context, pod string, o LogOptions, w io.Writer) error {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	if o.Previous {
		q.Set("previous", "true")
	}
	if o.Tail >= 0 {
		q.Set("tail", fmt.Sprint(o.Tail))
	}
	resp, err := c.Raw(ctx, "GET", "/v1/pods/"+url.PathEscape(pod)+"/log", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ExecOptions describe an exec session.
type ExecOptions struct {
	Container string
	Command   []string
	TTY       bool
	Stdin     io.Reader // nil: no stdin
	Stdout    io.Writer
	Stderr    io.Writer
	// Resize delivers terminal sizes (width, height) for a TTY session; the first one should come at once.
	Resize <-chan [2]uint16
}

// Exec runs a command in a container and returns its exit code.
func (c *Client) Exec(ctx context.Context, pod string, o ExecOptions) (int, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	body, _ := json.Marshal(server.ExecRequest{Container: o.Container, Command: o.Command, TTY: o.TTY, Stdin: o.Stdin != nil})
	req, _ := http.NewRequest("POST", c.url("/v1/pods/"+url.PathEscape(pod)+"/exec", nil), bytes.NewReader(body))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "pi-stream")
	if err := req.Write(conn); err != nil {
		return 0, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		var st server.Status
		data, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(data, &st) != nil || st.Error == "" {
			st.Error = strings.TrimSpace(string(data))
		}
		return 0, &APIError{Code: resp.StatusCode, Reason: st.Reason, Msg: st.Error}
	}
	sc := stream.New(br, conn)
	// The terminal's size goes out before any input, so the first command typed already sees it.
	if o.Resize != nil {
		select {
		case sz := <-o.Resize:
			if err := sc.Write(stream.Resize, stream.EncodeSize(sz[0], sz[1])); err != nil {
				return 0, err
			}
		default:
		}
	}
	if o.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := o.Stdin.Read(buf)
				if n > 0 {
					if sc.Write(stream.Stdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					sc.Write(stream.StdinEOF, nil)
					return
				}
			}
		}()
	}
	if o.Resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-o.Resize:
					if !ok {
						return
					}
					if sc.Write(stream.Resize, stream.EncodeSize(sz[0], sz[1])) != nil {
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	for {
		t, p, err := sc.Read()
		if err != nil {
			if ctx.Err() != nil {
				return 130, ctx.Err()
			}
			return 0, fmt.Errorf("exec in pod %q: connection to the daemon lost: %w", pod, err)
		}
		switch t {
		case stream.Stdout:
			o.Stdout.Write(p)
		case stream.Stderr:
			if o.Stderr != nil {
				o.Stderr.Write(p)
			}
		case stream.Exit:
			return stream.DecodeExit(p), nil
		case stream.Error:
			return 0, errors.New(string(p))
		}
	}
}
