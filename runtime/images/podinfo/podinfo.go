// Package podinfo is a small HTTP server compatible with the JSON API of
// stefanprodan/podinfo, the demo app of many Kubernetes workshops. The pi
// binary embeds it (run as "podinfo" or "pi podinfo") so that the lab can
// build a podinfo image without Internet access or the source tree.
package podinfo

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Version is the podinfo API version we mimic; workshops grep for the
// "greetings from podinfo v6." message.
const Version = "6.7.1"

// Revision identifies this implementation in /version.
var Revision = "pilab"

// Options configures the server.
type Options struct {
	Port      int
	UDPPort   int    // pilab's addition: a UDP echo that names the replica, for UDP Service labs; 0 is off
	Hostname  string // reported hostname; defaults to os.Hostname()
	Color     string
	Logo      string
	Message   string
	Unhealthy bool // start with /healthz failing
	Unready   bool // start with /readyz failing
}

// Server serves the podinfo API.
type Server struct {
	opts    Options
	healthy atomic.Bool
	ready   atomic.Bool
	mux     *http.ServeMux
}

// New returns a server; Hostname and Message get their defaults here.
func New(o Options) *Server {
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	if o.Message == "" {
		o.Message = "greetings from podinfo v" + Version
	}
	if o.Color == "" {
		o.Color = "#34577c"
	}
	if o.Logo == "" {
		o.Logo = "https://raw.githubusercontent.com/stefanprodan/podinfo/gh-pages/cuddle_clap.gif"
	}
	s := &Server{opts: o, mux: http.NewServeMux()}
	s.healthy.Store(!o.Unhealthy)
	s.ready.Store(!o.Unready)
	s.routes()
	return s
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /{$}", s.index)
	m.HandleFunc("GET /api/info", s.info)
	m.HandleFunc("GET /version", s.version)
	m.HandleFunc("GET /env", s.env)
	m.HandleFunc("POST /env", s.env)
	m.HandleFunc("GET /headers", s.headers)
	m.HandleFunc("POST /headers", s.headers)
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	m.HandleFunc("POST /readyz/enable", func(w http.ResponseWriter, r *http.Request) {
		s.ready.Store(true)
		w.WriteHeader(http.StatusAccepted)
	})
	m.HandleFunc("POST /readyz/disable", func(w http.ResponseWriter, r *http.Request) {
		s.ready.Store(false)
		w.WriteHeader(http.StatusAccepted)
	})
	m.HandleFunc("POST /healthz/enable", func(w http.ResponseWriter, r *http.Request) {
		s.healthy.Store(true)
		w.WriteHeader(http.StatusAccepted)
	})
	m.HandleFunc("POST /healthz/disable", func(w http.ResponseWriter, r *http.Request) {
		s.healthy.Store(false)
		w.WriteHeader(http.StatusAccepted)
	})
	for _, meth := range []string{"GET", "POST", "PUT"} {
		m.HandleFunc(meth+" /status/{code}", s.status)
	}
	m.HandleFunc("GET /delay/{wait}", s.delay)
	m.HandleFunc("/echo", s.echo)
	m.HandleFunc("/api/echo", s.echo)
}

// ServeHTTP adds podinfo's version headers to the request (so /headers shows
// them, as in the original) and to the response.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Header.Set("X-Api-Version", Version)
	r.Header.Set("X-Api-Revision", Revision)
	w.Header().Set("X-Api-Version", Version)
	s.mux.ServeHTTP(w, r)
}

// ServeUDP answers every datagram on pc with "<hostname>: <datagram>", so a UDP client sees which replica a
// Service sent it to. It returns when pc is closed.
func (s *Server) ServeUDP(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		msg := strings.TrimRight(string(buf[:n]), "\n")
		pc.WriteTo([]byte(s.opts.Hostname+": "+msg+"\n"), addr)
	}
}

// SetReady and SetHealthy flip the probe endpoints, e.g. on shutdown.
func (s *Server) SetReady(v bool)   { s.ready.Store(v) }
func (s *Server) SetHealthy(v bool) { s.healthy.Store(v) }

type runtimeResponse struct {
	Hostname     string `json:"hostname"`
	Version      string `json:"version"`
	Revision     string `json:"revision"`
	Color        string `json:"color"`
	Logo         string `json:"logo"`
	Message      string `json:"message"`
	GOOS         string `json:"goos"`
	GOARCH       string `json:"goarch"`
	Runtime      string `json:"runtime"`
	NumGoroutine string `json:"num_goroutine"`
	NumCPU       string `json:"num_cpu"`
}

func (s *Server) runtimeInfo() runtimeResponse {
	return runtimeResponse{
		Hostname:     s.opts.Hostname,
		Version:      Version,
		Revision:     Revision,
		Color:        s.opts.Color,
		Logo:         s.opts.Logo,
		Message:      s.opts.Message,
		GOOS:         runtime.GOOS,
		GOARCH:       runtime.GOARCH,
		Runtime:      runtime.Version(),
		NumGoroutine: strconv.Itoa(runtime.NumGoroutine()),
		NumCPU:       strconv.Itoa(runtime.NumCPU()),
	}
}

var page = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html><head><title>{{.Hostname}}</title></head>
<body style="background:{{.Color}};color:#fff;font-family:sans-serif;text-align:center;padding-top:4em">
<h1>{{.Message}}</h1><p>hostname: <b>{{.Hostname}}</b></p><p>podinfo v{{.Version}} ({{.Runtime}})</p>
</body></html>
`))

// index serves the JSON info to API clients and a small page to browsers,
// like the original which routes on a "Mozilla" user agent.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.UserAgent(), "Mozilla") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, s.runtimeInfo())
		return
	}
	s.info(w, r)
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.runtimeInfo())
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": Version, "commit": Revision})
}

// env answers the server's environment, which in a container is the container's (podinfo is its process),
// as podinfo does: a JSON array of "K=V" strings in os.Environ's order.
func (s *Server) env(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, os.Environ())
}

func (s *Server) headers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, r.Header)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if !s.healthy.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "OK"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "OK"})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	// WriteHeader panics outside 100..999; podinfo's router only admits digits.
	if err != nil || code < 100 || code > 599 {
		writeError(w, fmt.Sprintf("invalid status code %q", r.PathValue("code")), http.StatusBadRequest)
		return
	}
	writeJSON(w, code, map[string]int{"status": code})
}

func (s *Server) delay(w http.ResponseWriter, r *http.Request) {
	wait, err := strconv.Atoi(r.PathValue("wait"))
	if err != nil || wait < 0 {
		writeError(w, fmt.Sprintf("invalid delay %q", r.PathValue("wait")), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(time.Duration(wait) * time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"delay": wait})
}

// echo returns the request body, as podinfo's /echo does.
func (s *Server) echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	w.Write(body)
}

// writeJSON answers v indented with two spaces as podinfo does, and ends the body with a newline so that
// `curl` or `wget -qO-` in a shell leaves the prompt on a line of its own.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(b)
}

// writeError mirrors podinfo's ErrorResponse, which answers 200 with the
// intended code in the body; we send the code as the status too, which is
// what clients actually check.
func writeError(w http.ResponseWriter, msg string, code int) {
	writeJSON(w, code, struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, msg})
}

// Main runs the podinfo server with podinfo-style flags (and PODINFO_*
// environment variables) until SIGINT/SIGTERM; it returns the exit code.
func Main(args []string) int {
	fs := flag.NewFlagSet("podinfo", flag.ContinueOnError)
	o := Options{}
	fs.IntVar(&o.Port, "port", envInt("PODINFO_PORT", 9898), "HTTP port")
	fs.IntVar(&o.UDPPort, "udp-port", envInt("PODINFO_UDP_PORT", 0), "UDP echo port, answering \"<hostname>: <datagram>\" (0: off)")
	fs.StringVar(&o.Color, "ui-color", os.Getenv("PODINFO_UI_COLOR"), "UI color")
	fs.StringVar(&o.Logo, "ui-logo", os.Getenv("PODINFO_UI_LOGO"), "UI logo")
	fs.StringVar(&o.Message, "ui-message", os.Getenv("PODINFO_UI_MESSAGE"), "UI message")
	fs.BoolVar(&o.Unhealthy, "unhealthy", os.Getenv("PODINFO_UNHEALTHY") == "true", "start with /healthz failing")
	fs.BoolVar(&o.Unready, "unready", os.Getenv("PODINFO_UNREADY") == "true", "start with /readyz failing")
	fs.String("level", "info", "log level (accepted for compatibility)")
	grace := fs.Duration("server-shutdown-timeout", 5*time.Second, "graceful shutdown timeout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	logger := log.New(os.Stdout, "", 0)
	s := New(o)

	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", o.Port))
	if err != nil {
		logger.Printf(`{"level":"fatal","msg":"HTTP server failed to listen","error":%q}`, err.Error())
		return 1
	}
	if o.UDPPort != 0 {
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", o.UDPPort))
		if err != nil {
			logger.Printf(`{"level":"fatal","msg":"UDP echo failed to listen","error":%q}`, err.Error())
			return 1
		}
		defer pc.Close()
		go s.ServeUDP(pc)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	logger.Printf(`{"level":"info","msg":"Starting podinfo","version":%q,"revision":%q,"port":"%d","hostname":%q}`, Version, Revision, o.Port, s.opts.Hostname)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		logger.Printf(`{"level":"fatal","msg":"HTTP server crashed","error":%q}`, err.Error())
		return 1
	case <-ctx.Done():
	}
	logger.Printf(`{"level":"info","msg":"Shutting down HTTP server","timeout":%q}`, grace.String())
	s.SetReady(false)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
