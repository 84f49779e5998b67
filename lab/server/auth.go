package server

// Authentication and the impersonation rule of the HTTPS listener. The unix socket is root's door and
// carries no credentials (file mode 0600 is its check); on TCP every request must prove who it is, by
// one of two proofs, as kube-apiserver takes them: a client certificate signed by the lab CA (its CN is
// the user, its O fields the groups: the admin's), or an account's bearer token (tokens.go: the user is
// the account). Failed proofs are rate-limited per client address, and the connections a token opened
// are closed when its account's tokens are revoked (Sessions).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// AdminGroup is Kubernetes' superuser group: its members may impersonate.
const AdminGroup = "system:masters"

// User is who a request comes from, once authenticated.
type User struct {
	Name   string
	Groups []string
	// Impersonator is the admin acting as Name (kubectl --as), "" if none.
	Impersonator string
}

// IsAdmin reports whether u is in system:masters.
func (u *User) IsAdmin() bool { return u != nil && slices.Contains(u.Groups, AdminGroup) }

type userKey struct{}

// WithUser returns ctx carrying u.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom is the authenticated user of a request on the HTTPS listener. ok is false for a request with no
// user: one that came over the unix socket, which only root can open.
func UserFrom(ctx context.Context) (u *User, ok bool) {
	u, ok = ctx.Value(userKey{}).(*User)
	return u, ok && u != nil
}

// AccountsGroup is the group of every user that is an account (a bearer token's).
const AccountsGroup = "pilab:accounts"

// Authenticator checks the credentials of requests on the HTTPS listener.
type Authenticator struct {
	// ClientCAs issue the client certificates accepted (the lab CA).
	ClientCAs *x509.CertPool
	// Tokens are the accounts' bearer tokens; nil accepts none.
	Tokens *Tokens
	// Sessions, if set, learns which account each connection authenticated as.
	Sessions *Sessions
	// Log hears of refused requests.
	Log *slog.Logger

	failures failureLimiter
}

// authenticateToken returns the user of the request's bearer token, or nil if it proves nobody.
func (a *Authenticator) authenticateToken(r *http.Request) *User {
	// kube-apiserver's bearer token authenticator: "Bearer" and one token, nothing else.
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return nil
	}
	if acct := a.Tokens.Authenticate(token); acct != "" {
		return &User{Name: acct, Groups: []string{AccountsGroup, "system:authenticated"}}
	}
	return nil
}

// authenticateCert returns the user of the request's client certificate, or nil if it has none the lab
// CA signed.
func (a *Authenticator) authenticateCert(r *http.Request) *User {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || a.ClientCAs == nil {
		return nil
	}
	// The TLS layer only requests a certificate (tls.RequestClientCert), as kube-apiserver does, so that a
	// wrong one is a 401 here, not a handshake failure that would hide the reason from kubectl.
	certs := r.TLS.PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: a.ClientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil
	}
	if certs[0].Subject.CommonName == "" {
		return nil
	}
	return &User{Name: certs[0].Subject.CommonName, Groups: slices.Clone(certs[0].Subject.Organization)}
}

// impersonationHeaders are the headers by which a client acts as someone else (kubectl --as, --as-group,
// --as-uid); only admins may send them.
func impersonating(r *http.Request) bool {
	for h := range r.Header {
		if h == "Impersonate-User" || h == "Impersonate-Group" || h == "Impersonate-Uid" || strings.HasPrefix(h, "Impersonate-Extra-") {
			return true
		}
	}
	return false
}

// Wrap authenticates every request before next sees it: no proof is a 401 Unauthorized Status that says
// nothing more (not which accounts exist, not why the certificate was refused); impersonation by a
// non-admin is a 403. The user is put in the request's context (UserFrom). A non-admin acts for the account
// of its own name: the Kubernetes API reads the account from Impersonate-User, so Wrap sets it; pilab's own
// paths take it from the query, so Wrap sets that too, and refuses those that are the admin's.
func (a *Authenticator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A request with an Authorization header is judged by it alone: a malformed one proves nobody,
		// even with a certificate beside it.
		if r.Header.Get("Authorization") == "" {
			if u := a.authenticateCert(r); u != nil {
				a.serve(w, r, u, next)
				return
			}
		}
		// Tokens can be guessed, certificates cannot: only what is not a valid certificate counts
		// against, and is held back by, its address's failures.
		client := clientAddr(r)
		if wait := a.failures.blocked(client); wait > 0 {
			// Too many failed proofs from this address: refused before any check, so guessing gets no
			// faster by trying harder, and the checks of everyone else's requests are not slowed.
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+0.999)))
			encode(w, http.StatusTooManyRequests, &apierrors.NewTooManyRequests("too many failed authentication attempts from this address", int(wait.Seconds()+0.999)).ErrStatus)
			return
		}
		u := a.authenticateToken(r)
		if u == nil {
			if n := a.failures.fail(client); a.Log != nil && (n <= failureBurst || n%100 == 0) {
				a.Log.Info("refused a request: no valid credentials", "client", client, "method", r.Method, "path", r.URL.Path, "failures", n)
			}
			encode(w, http.StatusUnauthorized, &apierrors.NewUnauthorized("Unauthorized").ErrStatus)
			return
		}
		if a.Sessions != nil {
			a.Sessions.bind(r.Context(), u.Name)
		}
		a.serve(w, r, u, next)
	})
}

// serve hands an authenticated request on, with the impersonation rule applied.
func (a *Authenticator) serve(w http.ResponseWriter, r *http.Request, u *User, next http.Handler) {
	if !u.IsAdmin() {
		if impersonating(r) {
			as := r.Header.Get("Impersonate-User")
			encode(w, http.StatusForbidden, &apierrors.NewForbidden(schema.GroupResource{Resource: "users"}, as,
				fmt.Errorf("User %q cannot impersonate resource \"users\" in API group \"\" at the cluster scope", u.Name)).ErrStatus)
			return
		}
		r = r.Clone(r.Context())
		r.Header.Set("Impersonate-User", u.Name)
		if p := r.URL.Path; p == "/x" || strings.HasPrefix(p, "/x/") {
			if !accountPath(r.Method, p) {
				encode(w, http.StatusForbidden, &apierrors.NewForbidden(schema.GroupResource{}, "",
					fmt.Errorf("User %q cannot use %s %s: it is the lab admin's", u.Name, r.Method, p)).ErrStatus)
				return
			}
			// pilab's own paths take the account from the query: an account's is always its own.
			q := r.URL.Query()
			q.Set("account", u.Name)
			q.Del("allAccounts")
			r.URL.RawQuery = q.Encode()
		}
	} else if as := r.Header.Get("Impersonate-User"); as != "" {
		u = &User{Name: as, Groups: r.Header.Values("Impersonate-Group"), Impersonator: u.Name}
	}
	next.ServeHTTP(w, r.WithContext(WithUser(r.Context(), u)))
}

// accountPath reports whether pilab's own path p (method m) is one an account may use, for itself: what
// `pi` needs as a remote client besides the Kubernetes API. The machine's (info, images, shutdown) and the
// accounts' tokens are the admin's.
func accountPath(m, p string) bool {
	switch {
	case m == http.MethodPost && (p == "/x/batch" || p == "/x/fips" || p == "/x/trace" || p == "/x/fetch" || p == "/x/progress"):
		return true
	case m == http.MethodPost && strings.HasPrefix(p, "/x/fips/") && strings.HasSuffix(p, "/name"):
		return true
	case m == http.MethodGet && (p == "/x/bill" || p == "/x/network" || p == "/x/rules" || p == "/x/images" || p == "/x/usage"):
		return true
	}
	return false
}

// clientAddr is the address a request came from, without its port.
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// Failed authentication per client address: a token bucket of failureBurst failures that refills one a
// second. While it is empty the address is refused (429) before its credentials are looked at.
const (
	failureBurst  = 10
	failureRefill = time.Second
	// failureAddrs bounds the addresses remembered; the ones whose bucket refilled are forgotten first.
	failureAddrs = 4096
)

type failureLimiter struct {
	mu    sync.Mutex
	addrs map[string]*failureBucket
}

type failureBucket struct {
	spent float64 // failures not yet refilled
	at    time.Time
	total int
}

func (b *failureBucket) refill(now time.Time) {
	b.spent -= float64(now.Sub(b.at)) / float64(failureRefill)
	if b.spent < 0 {
		b.spent = 0
	}
	b.at = now
}

// blocked says how long addr must wait before its next try, 0 if it may try now.
func (f *failureLimiter) blocked(addr string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.addrs[addr]
	if b == nil {
		return 0
	}
	b.refill(time.Now())
	if b.spent < failureBurst {
		return 0
	}
	return time.Duration((b.spent - failureBurst + 1) * float64(failureRefill))
}

// fail counts a failed proof from addr and returns how many it has made in a row.
func (f *failureLimiter) fail(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.addrs == nil {
		f.addrs = map[string]*failureBucket{}
	}
	b := f.addrs[addr]
	if b == nil {
		if len(f.addrs) >= failureAddrs {
			for a, o := range f.addrs {
				if o.refill(now); o.spent == 0 {
					delete(f.addrs, a)
				}
			}
		}
		b = &failureBucket{at: now}
		f.addrs[addr] = b
	}
	b.refill(now)
	b.spent++
	b.total++
	return b.total
}

// Sessions remembers which account each connection of the listener authenticated as, so that revoking
// an account's tokens (a rotation, `pi account token --revoke`, deleting the account) also ends what
// they opened: watches, logs -f, exec and attach, port-forwards.
type Sessions struct {
	mu        sync.Mutex
	byAccount map[string]map[*sessionConn]bool
}

type connKey struct{}

// sessionConn is an accepted connection; closing it forgets it.
type sessionConn struct {
	net.Conn
	s       *Sessions
	mu      sync.Mutex
	account string
}

func (c *sessionConn) Close() error {
	c.s.forget(c)
	return c.Conn.Close()
}

// Listener wraps l so that its connections can be found and closed by account.
func (s *Sessions) Listener(l net.Listener) net.Listener { return sessionListener{l, s} }

type sessionListener struct {
	net.Listener
	s *Sessions
}

func (l sessionListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sessionConn{Conn: c, s: l.s}, nil
}

// ConnContext is the http.Server's ConnContext: it puts the connection in its requests' contexts.
func (s *Sessions) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if sc, ok := c.(*sessionConn); ok {
		return context.WithValue(ctx, connKey{}, sc)
	}
	return ctx
}

func (s *Sessions) bind(ctx context.Context, account string) {
	c, ok := ctx.Value(connKey{}).(*sessionConn)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAccount == nil {
		s.byAccount = map[string]map[*sessionConn]bool{}
	}
	if s.byAccount[account] == nil {
		s.byAccount[account] = map[*sessionConn]bool{}
	}
	s.byAccount[account][c] = true
	c.mu.Lock()
	c.account = account
	c.mu.Unlock()
}

func (s *Sessions) forget(c *sessionConn) {
	c.mu.Lock()
	account := c.account
	c.mu.Unlock()
	if account == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byAccount[account], c)
	if len(s.byAccount[account]) == 0 {
		delete(s.byAccount, account)
	}
}

// End closes every connection an account's token opened and says how many.
func (s *Sessions) End(account string) int {
	s.mu.Lock()
	conns := s.byAccount[account]
	delete(s.byAccount, account)
	s.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	return len(conns)
}
