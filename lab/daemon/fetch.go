package daemon

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/net/netns"
)

// FetchRequest asks the lab to GET a URL from its Internet side, as a browser on the laptop would. It is
// how a scenario played from another machine (pi scenario run --kubeconfig) checks a Floating IP: the
// learner's laptop is not on the lab's Internet side, so the lab fetches it where it is.
type FetchRequest struct {
	URL string `json:"url"`
}

// FetchResult is what the GET answered.
type FetchResult struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
}

// fetchTimeout bounds the whole GET; fetchMaxBody is the most of the body kept.
const (
	fetchTimeout = 10 * time.Second
	fetchMaxBody = 1 << 20
)

// fetch answers POST /x/fetch: a GET of http://FIP[:port]/... from the Internet side. Only the lab's
// Floating IPs are fetched: they are what the Internet side reaches of the lab, and nothing else (the
// host's own services, the outside world) is a learner's to reach through the lab.
func (d *Daemon) fetch(w http.ResponseWriter, r *http.Request) {
	var req FetchRequest
	if err := server.DecodeJSON(w, r, &req); err != nil {
		server.WriteError(w, server.Invalid("fetch request: %v; send {\"url\": \"http://FIP:PORT/\"}", err))
		return
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "http" || u.Hostname() == "" {
		server.WriteError(w, server.Invalid("%q is not an http:// URL", req.URL))
		return
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || d.fipPool == nil || !d.fipPool.Contains(ip) {
		server.WriteError(w, server.Invalid("the lab fetches only its Floating IPs (pool %s), not %q", d.fipPool, u.Host))
		return
	}
	hc := &http.Client{Timeout: fetchTimeout, Transport: &http.Transport{
		DialContext: netns.DialContext(d.hostNetnsPath()), DisableKeepAlives: true, Proxy: nil}}
	// The URL is rebuilt from its parts, so nothing but the checked host is dialled.
	target := url.URL{Scheme: "http", Host: u.Host, Path: u.Path, RawQuery: u.RawQuery}
	hreq, err := http.NewRequestWithContext(r.Context(), http.MethodGet, target.String(), nil)
	if err != nil {
		server.WriteError(w, server.Invalid("%q: %v", req.URL, err))
		return
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		// The GET failing is the answer, not the lab failing: the Floating IP does not answer (yet).
		server.WriteError(w, server.Invalid("GET %s from the Internet side: %v", target.String(), unwrapURLError(err)))
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, fetchMaxBody))
	if err != nil {
		server.WriteError(w, server.Invalid("GET %s from the Internet side: reading the body: %v", target.String(), err))
		return
	}
	server.WriteJSON(w, http.StatusOK, FetchResult{Status: resp.StatusCode, Body: string(body)})
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return fmt.Errorf("%w", ue.Err)
	}
	return err
}
