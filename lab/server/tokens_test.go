package server

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/pki"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// tokenLab is authLab with bearer tokens and sessions, wired as the daemon's listener is (lab/daemon/
// listen.go): accounts default and alice with a pod each, and bob with none.
func tokenLab(t *testing.T) (*store.Store, *pki.PKI, *Tokens, *httptest.Server) {
	t.Helper()
	st, _ := kubeLab(t)
	if err := st.Create(&api.Account{ObjectMeta: metav1.ObjectMeta{Name: "bob"}}); err != nil {
		t.Fatal(err)
	}
	mkPod(t, st, "default", "web", nil, corev1.PodRunning)
	mkPod(t, st, "alice", "a1", nil, corev1.PodRunning)
	p, err := pki.Ensure(pki.Options{Dir: filepath.Join(t.TempDir(), "pki"), Lab: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	sessions := &Sessions{}
	tokens := &Tokens{Store: st, Revoked: func(a string) { sessions.End(a) }}
	s := &Server{Store: st, Tokens: tokens, Backend: storeDeleter{st}}
	srv := httptest.NewUnstartedServer((&Authenticator{ClientCAs: p.ClientCAs(), Tokens: tokens, Sessions: sessions}).Wrap(s.Handler()))
	srv.Listener = sessions.Listener(srv.Listener)
	srv.Config.ConnContext = sessions.ConnContext
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return st, p, tokens, srv
}

func tokenConfig(p *pki.PKI, url, token string) *rest.Config {
	return &rest.Config{Host: url, Timeout: 10 * time.Second, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: p.CAPEM}}
}

func tokenClient(t *testing.T, p *pki.PKI, url, token string) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(tokenConfig(p, url, token))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func issue(t *testing.T, tokens *Tokens, account string, rotate bool) string {
	t.Helper()
	is, err := tokens.Issue(account, rotate)
	if err != nil {
		t.Fatalf("issue a token for %s: %v", account, err)
	}
	if !strings.HasPrefix(is.Token, TokenPrefix) || len(is.Token) < len(TokenPrefix)+43 {
		t.Fatalf("token %q: want %s and 256 bits of base64url", is.Token, TokenPrefix)
	}
	return is.Token
}

// TestTokenAuth: a token acts for its account alone; rotation, revocation and deleting the account end it
// at once, and an account made again under the same name does not inherit it.
func TestTokenAuth(t *testing.T) {
	st, p, tokens, srv := tokenLab(t)
	ctx := t.Context()
	alice := issue(t, tokens, "alice", false)
	pods := func(token string) ([]string, error) {
		l, err := tokenClient(t, p, srv.URL, token).CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		return podNames(l), nil
	}
	if n, err := pods(alice); err != nil || len(n) != 1 || n[0] != "a1" {
		t.Fatalf("alice's token lists %v, %v; want [a1]", n, err)
	}
	// Across namespaces, and with any selector, still alice's alone.
	for _, opts := range []metav1.ListOptions{{}, {LabelSelector: "app!=x"}, {FieldSelector: "metadata.name=web"}} {
		l, err := tokenClient(t, p, srv.URL, alice).CoreV1().Pods("").List(ctx, opts)
		if err != nil {
			t.Fatalf("alice lists all namespaces (%+v): %v", opts, err)
		}
		for _, n := range podNames(l) {
			if n != "a1" {
				t.Errorf("alice's list across namespaces (%+v) shows %s", opts, n)
			}
		}
	}
	// default's pod by name: as if it did not exist.
	if _, err := tokenClient(t, p, srv.URL, alice).CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("alice gets default's pod web: %v, want NotFound", err)
	}
	// A token may not impersonate.
	cfg := tokenConfig(p, srv.URL, alice)
	cfg.Impersonate.UserName = "default"
	cs, _ := kubernetes.NewForConfig(cfg)
	if _, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("alice's token impersonating default: %v, want Forbidden", err)
	}

	// A second token works beside the first; a rotation leaves only the new one.
	second := issue(t, tokens, "alice", false)
	if _, err := pods(second); err != nil {
		t.Errorf("alice's second token: %v", err)
	}
	rotated := issue(t, tokens, "alice", true)
	for name, tok := range map[string]string{"first": alice, "second": second} {
		if _, err := pods(tok); !apierrors.IsUnauthorized(err) {
			t.Errorf("alice's %s token after rotation: %v, want Unauthorized", name, err)
		}
	}
	if _, err := pods(rotated); err != nil {
		t.Errorf("alice's rotated token: %v", err)
	}
	if n, err := tokens.Revoke("alice"); err != nil || n != 1 {
		t.Errorf("revoke alice: %d, %v; want 1 token revoked", n, err)
	}
	if _, err := pods(rotated); !apierrors.IsUnauthorized(err) {
		t.Errorf("alice's token after revocation: %v, want Unauthorized", err)
	}

	// Deleting the account ends its tokens even before the records go; a new bob does not get them.
	bob := issue(t, tokens, "bob", false)
	if _, err := pods(bob); err != nil {
		t.Fatalf("bob's token: %v", err)
	}
	if err := st.Delete(kindAccount, "", "bob"); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(&api.Account{ObjectMeta: metav1.ObjectMeta{Name: "bob"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods(bob); !apierrors.IsUnauthorized(err) {
		t.Errorf("the deleted bob's token, for a new bob: %v, want Unauthorized", err)
	}
	if _, err := tokens.Issue("nobody", false); !apierrors.IsNotFound(err) {
		t.Errorf("a token for an account that does not exist: %v, want NotFound", err)
	}
}

// TestTokenStoredAsHash: the lab's state holds no token, only its hash; a daemon started again on the
// same state (a new Tokens) accepts the token still.
func TestTokenStoredAsHash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Create(&api.Account{ObjectMeta: metav1.ObjectMeta{Name: "alice"}}); err != nil {
		t.Fatal(err)
	}
	tok := issue(t, &Tokens{Store: st}, "alice", false)
	st.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(tok, TokenPrefix)
	if bytes.Contains(data, []byte(secret)) {
		t.Errorf("state.db holds the token in clear")
	}
	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	again := &Tokens{Store: st}
	if got := again.Authenticate(tok); got != "alice" {
		t.Errorf("after a restart the token authenticates %q, want alice", got)
	}
	if got := again.Authenticate(tok[:len(tok)-1] + "x"); got != "" {
		t.Errorf("a token one character off authenticates %q", got)
	}
}

// TestTokenBadHeaders: each wrong way of presenting a token is a bare 401, even the right token.
func TestTokenBadHeaders(t *testing.T) {
	_, p, tokens, srv := tokenLab(t)
	tok := issue(t, tokens, "alice", false)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ClientCAs()}}}
	cases := []struct {
		name   string
		header http.Header
		query  string
	}{
		{"no credentials", nil, ""},
		{"a wrong token", http.Header{"Authorization": {"Bearer " + TokenPrefix + "wrong"}}, ""},
		{"basic auth", http.Header{"Authorization": {"Basic " + tok}}, ""},
		{"Bearer and nothing", http.Header{"Authorization": {"Bearer"}}, ""},
		{"two tokens", http.Header{"Authorization": {"Bearer " + tok + " " + tok}}, ""},
		{"the token in another header", http.Header{"X-Auth-Token": {tok}, "Token": {tok}}, ""},
		{"the token in the query", nil, "?access_token=" + tok},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/namespaces/default/pods"+c.query, nil)
		for k, v := range c.header {
			req.Header[k] = v
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || strings.Contains(string(body), "alice") {
			t.Errorf("%s: %d %s; want a bare 401", c.name, resp.StatusCode, body)
		}
	}
}

// TestTokenAccountWrites: a token reads its own Account object; every write of any Account, its own
// included, is Forbidden alike; another account is NotFound; it cannot reach the private API.
func TestTokenAccountWrites(t *testing.T) {
	_, p, tokens, srv := tokenLab(t)
	ctx := t.Context()
	dc, err := dynamic.NewForConfig(tokenConfig(p, srv.URL, issue(t, tokens, "alice", false)))
	if err != nil {
		t.Fatal(err)
	}
	accounts := dc.Resource(PilabGroupVersion.WithResource("accounts"))
	l, err := accounts.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].GetName() != "alice" {
		t.Errorf("alice lists accounts: %d items, want alice's alone", len(l.Items))
	}
	if _, err := accounts.Get(ctx, "bob", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("alice gets account bob: %v, want NotFound", err)
	}
	patch := []byte(`{"spec":{"fipQuota":50}}`)
	for _, name := range []string{"alice", "bob", "nobody"} {
		if _, err := accounts.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("alice patches account %s: %v, want Forbidden", name, err)
		}
		if err := accounts.Delete(ctx, name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("alice deletes account %s: %v, want Forbidden", name, err)
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ClientCAs()}}}
	for _, path := range []string{"/x/accounts/alice/tokens", "/x/bill", "/x/images/build", "/x/shutdown"} {
		req, _ := http.NewRequest("POST", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+issue(t, tokens, "alice", false))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("alice's token POST %s: %d, want 403", path, resp.StatusCode)
		}
	}
}

// TestAuthFailureLimit: 1,000 bad tokens in a row from one address are refused, most without being
// looked at (429); meanwhile a learner on another address and the admin's certificate are served.
func TestAuthFailureLimit(t *testing.T) {
	_, p, tokens, srv := tokenLab(t)
	good := issue(t, tokens, "alice", false)
	from := func(local string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{RootCAs: p.ClientCAs()}}}
	}
	get := func(hc *http.Client, token string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/namespaces/default/pods", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	attacker, learner := from("127.0.0.1"), from("127.0.0.2")
	codes := map[int]int{}
	for i := range 1000 {
		codes[get(attacker, TokenPrefix+"guess"+string(rune('a'+i%26)))]++
	}
	if codes[401] < failureBurst || codes[401] > failureBurst+5 || codes[429] < 990-5 || codes[200] != 0 {
		t.Errorf("1000 bad tokens: %v, want about %d 401s then 429s", codes, failureBurst)
	}
	start := time.Now()
	if c := get(learner, good); c != 200 {
		t.Errorf("a learner on another address, during the attack: %d, want 200", c)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the learner's request took %s during the attack", d)
	}
	if _, err := tlsClient(t, p, srv.URL, p.AdminPEM, p.AdminKey, "").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{}); err != nil {
		t.Errorf("the admin's certificate from the attacker's address: %v", err)
	}
	// The attacker's own good token waits for the bucket like any guess would.
	if c := get(attacker, good); c != 429 {
		t.Errorf("a good token from the blocked address: %d, want 429 until the bucket refills", c)
	}
}

// TestTokenRevokeEndsSessions: rotating an account's token ends the watch its old token opened.
func TestTokenRevokeEndsSessions(t *testing.T) {
	_, p, tokens, srv := tokenLab(t)
	tok := issue(t, tokens, "alice", false)
	// No client timeout: a watch must end by the rotation, not by the client giving up.
	watcher := func(token string) *kubernetes.Clientset {
		cfg := tokenConfig(p, srv.URL, token)
		cfg.Timeout = 0
		return kubernetes.NewForConfigOrDie(cfg)
	}
	w, err := watcher(tok).CoreV1().Pods("default").Watch(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	bobs := issue(t, tokens, "bob", false)
	wb, err := watcher(bobs).CoreV1().Pods("default").Watch(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Stop()
	issue(t, tokens, "alice", true)
	// The watch first replays alice's pod (a watch without a resourceVersion starts with ADDED events);
	// then it must end.
	deadline := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-w.ResultChan():
		case <-deadline:
			srv.CloseClientConnections() // so that the cleanup's Close does not wait on the watches
			t.Fatal("alice's watch still open 5s after her token was rotated")
		}
	}
	// bob's watch is not touched (bob has no pods: nothing to replay).
	select {
	case ev, open := <-wb.ResultChan():
		if !open {
			t.Errorf("bob's watch ended with alice's rotation")
		} else {
			b, _ := json.Marshal(ev)
			t.Errorf("bob's watch got %s", b)
		}
	case <-time.After(300 * time.Millisecond):
	}
}
