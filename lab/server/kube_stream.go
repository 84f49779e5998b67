package server

// The pod subresources that are streams: exec, attach, portforward and log. The protocol work is the
// kubelet's and the apiserver's own code: k8s.io/kubelet's streaming handlers speak SPDY (and WebSocket
// up to v4.channel.k8s.io) to the client, and, as kube-apiserver does, a WebSocket v5 exec or attach goes
// through k8s.io/apiserver's StreamTranslatorHandler (WebSocket to SPDY, here to an in-process kubelet
// handler) and a WebSocket port-forward through its TunnelingHandler (SPDY framed inside WebSocket). What
// is left here is what the apiserver checks before it proxies to a kubelet: the pod, the container, the
// options.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	utilproxy "k8s.io/apimachinery/pkg/util/proxy"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
	kubeletrc "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
)

// StreamBackend is what the pod streams need from the daemon: running a command in a container,
// attaching to one, reaching a port in the pod's network, and reading a container's log. The pod has
// been found in the requesting account and the container checked against its spec; the server has
// answered every protocol detail.
type StreamBackend interface {
	// ExecInContainer runs cmd in the container. A command that ran and exited non-zero is an error
	// that implements k8s.io/utils/exec.ExitError (exec.CodeExitError), so the client gets its code.
	ExecInContainer(ctx context.Context, pod *corev1.Pod, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	// AttachContainer copies the container's output (and input, where it has one) until ctx ends or
	// the container exits.
	AttachContainer(ctx context.Context, pod *corev1.Pod, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	// PortForward copies between stream and a connection to localhost:port in the pod's network
	// namespace.
	PortForward(ctx context.Context, pod *corev1.Pod, port int32, stream io.ReadWriteCloser) error
	// PodLogs writes the container's log as opts select (opts.Container is set).
	PodLogs(ctx context.Context, pod *corev1.Pod, opts *corev1.PodLogOptions, w io.Writer) error
}

// The kubelet's streaming defaults (k8s.io/kubelet/pkg/cri/streaming DefaultConfig).
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommandconsts.DefaultStreamCreationTimeout
)

var podStreams = map[string]func(k *kubeAPI, w http.ResponseWriter, r *http.Request, req *readRequest){
	"exec":        (*kubeAPI).podExec,
	"attach":      (*kubeAPI).podAttach,
	"portforward": (*kubeAPI).podPortForward,
	"log":         (*kubeAPI).podLog,
}

// The query parameters of the stream options, as k8s.io/kubernetes' generated conversions read them
// (Convert_url_Values_To_v1_PodExecOptions and its siblings, which live outside the published modules).
func queryFields(q url.Values, fields map[string]func(*[]string) error) error {
	for name, conv := range fields {
		if v, ok := q[name]; ok {
			if err := conv(&v); err != nil {
				return fmt.Errorf("query parameter %s=%q: %w", name, v, err)
			}
		}
	}
	return nil
}

func boolField(out *bool) func(*[]string) error {
	return func(v *[]string) error { return kruntime.Convert_Slice_string_To_bool(v, out, nil) }
}

func stringField(out *string) func(*[]string) error {
	return func(v *[]string) error { return kruntime.Convert_Slice_string_To_string(v, out, nil) }
}

func int64PtrField(out **int64) func(*[]string) error {
	return func(v *[]string) error { return kruntime.Convert_Slice_string_To_Pointer_int64(v, out, nil) }
}

func execOptions(q url.Values) (*corev1.PodExecOptions, error) {
	o := &corev1.PodExecOptions{}
	err := queryFields(q, map[string]func(*[]string) error{"stdin": boolField(&o.Stdin), "stdout": boolField(&o.Stdout),
		"stderr": boolField(&o.Stderr), "tty": boolField(&o.TTY), "container": stringField(&o.Container),
		"command": func(v *[]string) error { o.Command = append([]string(nil), *v...); return nil }})
	return o, err
}

func attachOptions(q url.Values) (*corev1.PodAttachOptions, error) {
	o := &corev1.PodAttachOptions{}
	err := queryFields(q, map[string]func(*[]string) error{"stdin": boolField(&o.Stdin), "stdout": boolField(&o.Stdout),
		"stderr": boolField(&o.Stderr), "tty": boolField(&o.TTY), "container": stringField(&o.Container)})
	return o, err
}

func logOptions(q url.Values) (*corev1.PodLogOptions, error) {
	o := &corev1.PodLogOptions{}
	err := queryFields(q, map[string]func(*[]string) error{"container": stringField(&o.Container), "follow": boolField(&o.Follow),
		"previous": boolField(&o.Previous), "timestamps": boolField(&o.Timestamps), "sinceSeconds": int64PtrField(&o.SinceSeconds),
		"tailLines": int64PtrField(&o.TailLines), "limitBytes": int64PtrField(&o.LimitBytes),
		"insecureSkipTLSVerifyBackend": boolField(&o.InsecureSkipTLSVerifyBackend),
		"sinceTime":                    func(v *[]string) error { return metav1.Convert_Slice_string_To_Pointer_v1_Time(v, &o.SinceTime, nil) },
		"stream": func(v *[]string) error {
			var s string
			err := kruntime.Convert_Slice_string_To_string(v, &s, nil)
			o.Stream = &s
			return err
		}})
	return o, err
}

// streamPod finds the request's pod in its account and the backend that serves streams.
func (k *kubeAPI) streamPod(r *http.Request, req *readRequest, verbs ...string) (*corev1.Pod, StreamBackend, error) {
	ok := false
	for _, v := range verbs {
		ok = ok || r.Method == v
	}
	if !ok {
		return nil, nil, apierrors.NewMethodNotSupported(req.res.groupResource(), strings.ToLower(r.Method))
	}
	if req.name == "" || req.watch {
		return nil, nil, apierrors.NewNotFound(req.res.groupResource(), r.URL.Path)
	}
	if !req.inNamespace() || req.namespace == "" {
		return nil, nil, apierrors.NewNotFound(req.res.groupResource(), req.name)
	}
	o, err := k.s.Store.Get(kindPod, req.account, req.name)
	if err != nil {
		return nil, nil, storeError(req.res, req.name, err)
	}
	sb, ok := k.s.Backend.(StreamBackend)
	if !ok {
		return nil, nil, apierrors.NewServiceUnavailable(fmt.Sprintf("pod %s: this lab serves no container streams (%T is not a StreamBackend)", req.name, k.s.Backend))
	}
	pod := o.(*corev1.Pod).DeepCopy()
	pod.Namespace = api.Namespace
	return pod, sb, nil
}

// podContainer picks the container a stream is for, as the apiserver does (ExecLocation, LogLocation):
// the named one, else the pod's only one, else the kubectl.kubernetes.io/default-container one.
func podContainer(pod *corev1.Pod, name string) (string, error) {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	if name == "" {
		switch {
		case len(names) == 1:
			return names[0], nil
		case pod.Annotations["kubectl.kubernetes.io/default-container"] != "":
			name = pod.Annotations["kubectl.kubernetes.io/default-container"]
		default:
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: [%s]", pod.Name, strings.Join(names, " ")))
		}
	}
	for _, n := range names {
		if n == name {
			return name, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
}

func containerStatus(pod *corev1.Pod, container string) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == container {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// checkRunning refuses an exec or attach into a container that is not running, before the upgrade, so
// the client gets the reason rather than a broken stream.
func checkRunning(pod *corev1.Pod, container string) error {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return apierrors.NewBadRequest(fmt.Sprintf("cannot exec into or attach to a container in a completed pod; current phase is %s", pod.Status.Phase))
	}
	st := containerStatus(pod, container)
	switch {
	case st == nil:
		return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start: ContainerCreating", container, pod.Name))
	case st.State.Running != nil:
		return nil
	case st.State.Waiting != nil:
		return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start: %s", container, pod.Name, st.State.Waiting.Reason))
	}
	return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is not running", container, pod.Name))
}

func (k *kubeAPI) podExec(w http.ResponseWriter, r *http.Request, req *readRequest) {
	pod, sb, err := k.streamPod(r, req, http.MethodGet, http.MethodPost)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	opts, err := execOptions(r.URL.Query())
	if err != nil {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("pod %s: exec options: %v", pod.Name, err)))
		return
	}
	if len(opts.Command) == 0 {
		k.writeStatus(w, r, apierrors.NewBadRequest("you must specify at least one command for the container"))
		return
	}
	container, err := podContainer(pod, opts.Container)
	if err == nil {
		err = checkRunning(pod, container)
	}
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	sopts, err := streamOptions(opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	ex := executor{sb: sb, pod: pod}
	spdy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kubeletrc.ServeExec(w, r, ex, pod.Name, pod.UID, container, opts.Command, sopts, streamIdleTimeout, streamCreationTimeout,
			remotecommandconsts.SupportedStreamingProtocols)
	})
	serveRemoteCommand(w, r, spdy, sopts)
}

func (k *kubeAPI) podAttach(w http.ResponseWriter, r *http.Request, req *readRequest) {
	pod, sb, err := k.streamPod(r, req, http.MethodGet, http.MethodPost)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	opts, err := attachOptions(r.URL.Query())
	if err != nil {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("pod %s: attach options: %v", pod.Name, err)))
		return
	}
	container, err := podContainer(pod, opts.Container)
	if err == nil {
		err = checkRunning(pod, container)
	}
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	sopts, err := streamOptions(opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	at := attacher{sb: sb, pod: pod}
	spdy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kubeletrc.ServeAttach(w, r, at, pod.Name, pod.UID, container, sopts, streamIdleTimeout, streamCreationTimeout,
			remotecommandconsts.SupportedStreamingProtocols)
	})
	serveRemoteCommand(w, r, spdy, sopts)
}

// streamOptions checks the streams asked for, as the apiserver's validation of PodExecOptions does.
func streamOptions(stdin, stdout, stderr, tty bool) (*kubeletrc.Options, error) {
	if !stdin && !stdout && !stderr {
		return nil, apierrors.NewBadRequest("you must specify at least 1 of stdin, stdout, stderr")
	}
	// A terminal has no separate stderr (the kubelet drops it too).
	return &kubeletrc.Options{Stdin: stdin, Stdout: stdout, Stderr: stderr && !tty, TTY: tty}, nil
}

// serveRemoteCommand serves an exec or attach: a WebSocket v5 client (kubectl 1.30+) through the
// apiserver's translator into the kubelet handler over SPDY, everyone else (SPDY, older WebSocket
// protocols) by the kubelet handler itself — the apiserver's own split (TranslateStreamCloseWebsocketRequests).
func serveRemoteCommand(w http.ResponseWriter, r *http.Request, spdy http.Handler, o *kubeletrc.Options) {
	if !wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		spdy.ServeHTTP(w, r)
		return
	}
	tr := &inProcess{h: spdy}
	defer tr.close()
	loc := &url.URL{Scheme: "http", Host: "kubelet.pilab.invalid", Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	proxy.NewStreamTranslatorHandler(loc, &http.Transport{DialContext: tr.dial}, 0,
		proxy.Options{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, Tty: o.TTY}).ServeHTTP(w, r)
}

// inProcess is the translator's "kubelet": each dial is one end of a socket pair whose other end an
// http.Server serving h reads. A socket pair, not net.Pipe: SPDY writes from several goroutines and
// wants the kernel's buffering between them.
type inProcess struct {
	h     http.Handler
	mu    sync.Mutex
	srvs  []*http.Server
	conns []net.Conn
}

func (p *inProcess) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("stream translator: socket pair: %w", err)
	}
	ends := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("stream-translator-%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			for _, e := range ends {
				if e != nil {
					e.Close()
				}
			}
			return nil, fmt.Errorf("stream translator: socket pair: %w", err)
		}
		ends[i] = c
	}
	srv := &http.Server{Handler: p.h, ReadHeaderTimeout: streamCreationTimeout}
	p.mu.Lock()
	p.srvs = append(p.srvs, srv)
	p.conns = append(p.conns, ends[0])
	p.mu.Unlock()
	go srv.Serve(&oneConn{c: ends[1], done: make(chan struct{})})
	return ends[0], nil
}

func (p *inProcess) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	for _, s := range p.srvs {
		s.Close()
	}
}

// oneConn is a listener that accepts one connection, then waits for Close.
type oneConn struct {
	c    net.Conn
	once sync.Once
	mu   sync.Mutex
	used bool
	done chan struct{}
}

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.used {
		l.used = true
		l.mu.Unlock()
		return l.c, nil
	}
	l.mu.Unlock()
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }

type executor struct {
	sb  StreamBackend
	pod *corev1.Pod
}

func (e executor) ExecInContainer(ctx context.Context, _ string, _ types.UID, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	return e.sb.ExecInContainer(ctx, e.pod, container, cmd, in, out, errw, tty, resize)
}

type attacher struct {
	sb  StreamBackend
	pod *corev1.Pod
}

func (a attacher) AttachContainer(ctx context.Context, _ string, _ types.UID, container string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return a.sb.AttachContainer(ctx, a.pod, container, in, out, errw, tty, resize)
}

type portForwarder struct {
	sb  StreamBackend
	pod *corev1.Pod
}

func (p portForwarder) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	return p.sb.PortForward(ctx, p.pod, port, stream)
}

func (k *kubeAPI) podPortForward(w http.ResponseWriter, r *http.Request, req *readRequest) {
	pod, sb, err := k.streamPod(r, req, http.MethodGet, http.MethodPost)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if pod.Status.Phase != corev1.PodRunning {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("unable to forward port because pod is not running. Current status=%s", pod.Status.Phase)))
		return
	}
	pf := portForwarder{sb: sb, pod: pod}
	// The ports: from the query for the old WebSocket v4 protocol; SPDY clients name them per stream.
	var v4 *portforward.V4Options
	if wsstream.IsWebSocketRequest(r) && !wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
		if v4, err = portforward.NewV4Options(r); err != nil {
			k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("pod %s: port-forward options: %v", pod.Name, err)))
			return
		}
	}
	spdy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		portforward.ServePortForward(w, r, pf, pod.Name, pod.UID, v4, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
	})
	if wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
		// kubectl 1.31+: SPDY framed inside WebSocket. kube-apiserver unwraps it and proxies the SPDY
		// upgrade to the kubelet with its upgrade-aware proxy, which hijacks before it relays the kubelet's
		// 101; the kubelet handler answers 101 before it hijacks, so it sits behind the same proxy here.
		tr := &inProcess{h: spdy}
		defer tr.close()
		loc := &url.URL{Scheme: "http", Host: "kubelet.pilab.invalid", Path: r.URL.Path, RawQuery: r.URL.RawQuery}
		upstream := utilproxy.NewUpgradeAwareHandler(loc, &http.Transport{DialContext: tr.dial}, false, true, proxyResponder{k: k})
		proxy.NewTunnelingHandler(upstream).ServeHTTP(w, r)
		return
	}
	spdy.ServeHTTP(w, r)
}

// proxyResponder answers a failed upgrade through the in-process proxy with a Status.
type proxyResponder struct{ k *kubeAPI }

func (p proxyResponder) Error(w http.ResponseWriter, r *http.Request, err error) {
	p.k.writeStatus(w, r, apierrors.NewInternalError(fmt.Errorf("port-forward: %w", err)))
}

func (k *kubeAPI) podLog(w http.ResponseWriter, r *http.Request, req *readRequest) {
	pod, sb, err := k.streamPod(r, req, http.MethodGet)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	opts, err := logOptions(r.URL.Query())
	if err != nil {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("pod %s: log options: %v", pod.Name, err)))
		return
	}
	if err := validateLogOptions(opts); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if opts.Container, err = podContainer(pod, opts.Container); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if err := logStatus(pod, opts.Container, opts.Previous); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	// Headers go out with the first byte of the log, so a failure before it is still a Status.
	fw := &flushWriter{w: w}
	if err := sb.PodLogs(r.Context(), pod, opts, fw); err != nil && !fw.started {
		if !apierrors.IsBadRequest(err) && !apierrors.IsNotFound(err) {
			err = apierrors.NewInternalError(err)
		}
		k.writeStatus(w, r, err)
	} else if !fw.started {
		fw.Write(nil) // an empty log is a 200 with an empty body
	}
}

// validateLogOptions checks PodLogOptions as the apiserver's validation does.
func validateLogOptions(o *corev1.PodLogOptions) error {
	var msgs []string
	if o.TailLines != nil && *o.TailLines < 0 {
		msgs = append(msgs, "tailLines: must be greater than or equal to 0")
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		msgs = append(msgs, "limitBytes: must be greater than 0")
	}
	if o.SinceSeconds != nil && o.SinceTime != nil {
		msgs = append(msgs, "at most one of `sinceTime` or `sinceSeconds` may be specified")
	}
	if o.SinceSeconds != nil && *o.SinceSeconds < 1 {
		msgs = append(msgs, "sinceSeconds: must be greater than 0")
	}
	if o.Stream != nil && *o.Stream != corev1.LogStreamAll {
		msgs = append(msgs, fmt.Sprintf("stream: %q: this lab's logs interleave stdout and stderr; only %q is supported", *o.Stream, corev1.LogStreamAll))
	}
	if len(msgs) > 0 {
		return apierrors.NewBadRequest("PodLogOptions is invalid: " + strings.Join(msgs, ", "))
	}
	return nil
}

// logStatus refuses the log of a container that has none to give, with the kubelet's words
// (validateContainerLogStatus).
func logStatus(pod *corev1.Pod, container string, previous bool) error {
	st := containerStatus(pod, container)
	if st == nil {
		return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start: ContainerCreating", container, pod.Name))
	}
	switch {
	case previous:
		if st.LastTerminationState.Terminated == nil {
			return apierrors.NewBadRequest(fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod.Name))
		}
	case st.State.Running != nil, st.State.Terminated != nil, st.LastTerminationState.Terminated != nil:
	case st.State.Waiting != nil:
		return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start: %s", container, pod.Name, st.State.Waiting.Reason))
	default:
		return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start - no logs yet", container, pod.Name))
	}
	return nil
}

type flushWriter struct {
	w       http.ResponseWriter
	started bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	if !f.started {
		f.started = true
		f.w.Header().Set("Content-Type", "text/plain")
		f.w.WriteHeader(http.StatusOK)
	}
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
