package server

// Authentication and the impersonation rule of the HTTPS listener. The unix socket is root's door and
// carries no credentials (file mode 0600 is its check); on TCP every request must prove who it is.
// Today a client certificate signed by the lab CA is the one proof, as kube-apiserver's x509 authenticator
// reads it: the certificate's CN is the user, its O fields the groups. Issue 11 adds bearer tokens in
// Authenticator.authenticate.

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strings"

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

// Authenticator checks the credentials of requests on the HTTPS listener.
type Authenticator struct {
	// ClientCAs issue the client certificates accepted (the lab CA).
	ClientCAs *x509.CertPool
}

// authenticate returns the request's user, or nil if it proves nobody.
func (a *Authenticator) authenticate(r *http.Request) *User {
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
// of its own name: the Kubernetes API reads the account from Impersonate-User, so Wrap sets it; the
// private /v1 and /x dialect takes the account from the query, so it stays the admin's.
func (a *Authenticator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := a.authenticate(r)
		if u == nil {
			encode(w, http.StatusUnauthorized, &apierrors.NewUnauthorized("Unauthorized").ErrStatus)
			return
		}
		if !u.IsAdmin() {
			if impersonating(r) {
				as := r.Header.Get("Impersonate-User")
				encode(w, http.StatusForbidden, &apierrors.NewForbidden(schema.GroupResource{Resource: "users"}, as,
					fmt.Errorf("User %q cannot impersonate resource \"users\" in API group \"\" at the cluster scope", u.Name)).ErrStatus)
				return
			}
			if p := r.URL.Path; p == "/v1" || strings.HasPrefix(p, "/v1/") || p == "/x" || strings.HasPrefix(p, "/x/") {
				encode(w, http.StatusForbidden, &apierrors.NewForbidden(schema.GroupResource{}, "",
					fmt.Errorf("User %q cannot use %s: the lab's private API is the admin's; use the Kubernetes API", u.Name, p)).ErrStatus)
				return
			}
			r = r.Clone(r.Context())
			r.Header.Set("Impersonate-User", u.Name)
		} else if as := r.Header.Get("Impersonate-User"); as != "" {
			u = &User{Name: as, Groups: r.Header.Values("Impersonate-Group"), Impersonator: u.Name}
		}
		next.ServeHTTP(w, r.WithContext(WithUser(r.Context(), u)))
	})
}
