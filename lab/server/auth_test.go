package server

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/pilab/pi/lab/pki"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// authLab is kubeLab's store (accounts default and alice, a pod in each) behind the Kubernetes API on a TLS
// server that authenticates as the daemon's listener does.
func authLab(t *testing.T) (*pki.PKI, *httptest.Server) {
	t.Helper()
	st, _ := kubeLab(t)
	mkPod(t, st, "default", "web", nil, corev1.PodRunning)
	mkPod(t, st, "alice", "a1", nil, corev1.PodRunning)
	p, err := pki.Ensure(pki.Options{Dir: filepath.Join(t.TempDir(), "pki"), Lab: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer((&Authenticator{ClientCAs: p.ClientCAs()}).Wrap((&Server{Store: st}).KubeHandler()))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return p, srv
}

// tlsClient is what kubectl builds from a kubeconfig: the lab CA, and a client certificate if given.
func tlsClient(t *testing.T, p *pki.PKI, url string, cert, key []byte, as string) *kubernetes.Clientset {
	t.Helper()
	cfg := &rest.Config{Host: url, Timeout: 10 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.CAPEM, CertData: cert, KeyData: key}}
	cfg.Impersonate.UserName = as
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func podNames(l *corev1.PodList) []string {
	var n []string
	for _, p := range l.Items {
		n = append(n, p.Name)
	}
	return n
}

// TestAuthNoCertificate: without a certificate, a 401 Status "Unauthorized" and nothing else, as
// kube-apiserver answers (kubectl prints "You must be logged in to the server (Unauthorized)").
func TestAuthNoCertificate(t *testing.T) {
	p, srv := authLab(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ClientCAs()}}}
	for _, path := range []string{"/api/v1/namespaces/default/pods", "/version", "/v1/pods", "/x/info", "/nothing"} {
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var st metav1.Status
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("%s: body %q is not a Status: %v", path, body, err)
		}
		if resp.StatusCode != 401 || st.Kind != "Status" || st.Reason != metav1.StatusReasonUnauthorized || st.Message != "Unauthorized" || st.Code != 401 || st.Details != nil {
			t.Errorf("%s: %d %s, want 401 and a bare Unauthorized Status", path, resp.StatusCode, body)
		}
	}
	_, err := tlsClient(t, p, srv.URL, nil, nil, "").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Errorf("client-go without a certificate: %v, want Unauthorized", err)
	}
}

// TestAuthOtherCA: a certificate from another lab's CA (even one naming the admin) is a 401, not a
// handshake failure: the listener only requests certificates and checks them itself.
func TestAuthOtherCA(t *testing.T) {
	p, srv := authLab(t)
	other, err := pki.Ensure(pki.Options{Dir: filepath.Join(t.TempDir(), "other"), Lab: "other"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tlsClient(t, p, srv.URL, other.AdminPEM, other.AdminKey, "").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Errorf("admin certificate of another CA: %v, want Unauthorized", err)
	}
	// A lab-CA certificate that has expired is refused alike.
	cert, key, err := pki.Issue(p.Dir, "pilab-admin", []string{AdminGroup}, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	_, err = tlsClient(t, p, srv.URL, cert, key, "").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Errorf("expired admin certificate: %v, want Unauthorized", err)
	}
}

// TestAuthAdmin: the admin certificate acts for account default, and may impersonate: --as=alice sees
// alice's pod only.
func TestAuthAdmin(t *testing.T) {
	p, srv := authLab(t)
	l, err := tlsClient(t, p, srv.URL, p.AdminPEM, p.AdminKey, "").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("admin list: %v", err)
	}
	if n := podNames(l); len(n) != 1 || n[0] != "web" {
		t.Errorf("admin sees %v, want [web]", n)
	}
	l, err = tlsClient(t, p, srv.URL, p.AdminPEM, p.AdminKey, "alice").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("admin as alice: %v", err)
	}
	if n := podNames(l); len(n) != 1 || n[0] != "a1" {
		t.Errorf("admin as alice sees %v, want [a1]", n)
	}
}

// TestAuthImpersonationNonAdmin: a lab-CA certificate of a user outside system:masters acts for its own
// account, and may not impersonate (403) nor use the private /v1 and /x API (403).
func TestAuthImpersonationNonAdmin(t *testing.T) {
	p, srv := authLab(t)
	cert, key, err := pki.Issue(p.Dir, "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tlsClient(t, p, srv.URL, cert, key, "").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("alice's own list: %v", err)
	}
	if n := podNames(l); len(n) != 1 || n[0] != "a1" {
		t.Errorf("alice sees %v, want [a1]", n)
	}
	_, err = tlsClient(t, p, srv.URL, cert, key, "default").CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("alice impersonating default: %v, want Forbidden", err)
	}
	c, _ := tls.X509KeyPair(cert, key)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ClientCAs(), Certificates: []tls.Certificate{c}}}}
	resp, err := hc.Get(srv.URL + "/x/info?account=default")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("alice on /x/info: %d, want 403", resp.StatusCode)
	}
}
