package server

// Bearer tokens: an account's own credentials on the HTTPS listener (issue 11), what a learner's kubeconfig
// carries as `token:`. A token is 256 random bits, shown once when issued and stored only as its SHA-256
// (a hash of a random secret needs no salt or slow KDF: nothing can be guessed from it). A record is bound
// to the account's UID, so deleting an account ends its tokens at once and an account made again under the
// same name does not inherit them.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenPrefix starts every token, so that a leaked one is recognisable as a pilab credential (and secret
// scanners can be taught it).
const TokenPrefix = "pilab_"

// tokenRecord is what the store keeps of a token.
type tokenRecord struct {
	Account    string    `json:"account"`
	AccountUID string    `json:"accountUID"`
	SHA256     []byte    `json:"sha256"`
	Created    time.Time `json:"created"`
}

func recordAccount(data []byte) string {
	var r tokenRecord
	json.Unmarshal(data, &r)
	return r.Account
}

// Tokens issues, checks and revokes the accounts' bearer tokens. Every change goes through it, so its
// in-memory copy of the records is the store's.
type Tokens struct {
	Store *store.Store
	// Revoked, if set, hears of every account whose tokens were revoked or rotated (Sessions.End: the
	// listener closes the connections they opened).
	Revoked func(account string)

	mu     sync.Mutex
	loaded bool
	recs   map[string]tokenRecord // by id
}

// Issued is the answer to an issue: the token itself, shown this once.
type Issued struct {
	Account string    `json:"account"`
	ID      string    `json:"id"`
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
}

func (t *Tokens) load() error {
	if t.loaded {
		return nil
	}
	recs := map[string]tokenRecord{}
	err := t.Store.Tokens(func(id string, data []byte) error {
		var r tokenRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("token record %s: %w", id, err)
		}
		recs[id] = r
		return nil
	})
	if err != nil {
		return err
	}
	t.recs, t.loaded = recs, true
	return nil
}

// Issue makes a new token for an existing account; with rotate the account's other tokens stop working
// in the same step.
func (t *Tokens) Issue(account string, rotate bool) (*Issued, error) {
	o, err := t.Store.Get(kindAccount, "", account)
	if err != nil {
		if store.IsNotFound(err) {
			return nil, apierrors.NewNotFound(accountsResource, account)
		}
		return nil, apierrors.NewInternalError(fmt.Errorf("read account %q: %w", account, err))
	}
	secret := make([]byte, 32)
	idb := make([]byte, 8)
	if _, err := rand.Read(secret); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if _, err := rand.Read(idb); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(token))
	id := hex.EncodeToString(idb)
	rec := tokenRecord{Account: account, AccountUID: string(o.GetUID()), SHA256: sum[:], Created: time.Now().UTC().Truncate(time.Second)}

	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if err := t.Store.PutTokens(account, rotate, map[string]any{id: rec}, recordAccount); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("store a token of account %q: %w", account, err))
	}
	if rotate {
		t.dropLocked(account)
	}
	t.recs[id] = rec
	if rotate && t.Revoked != nil {
		t.Revoked(account)
	}
	return &Issued{Account: account, ID: id, Token: token, Created: rec.Created}, nil
}

// Revoke removes every token of an account (it may be gone already) and says how many there were.
func (t *Tokens) Revoke(account string) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(); err != nil {
		return 0, err
	}
	n, err := t.Store.DeleteTokens(account, recordAccount)
	if err != nil {
		return 0, fmt.Errorf("revoke the tokens of account %q: %w", account, err)
	}
	t.dropLocked(account)
	if t.Revoked != nil {
		t.Revoked(account)
	}
	return n, nil
}

func (t *Tokens) dropLocked(account string) {
	for id, r := range t.recs {
		if r.Account == account {
			delete(t.recs, id)
		}
	}
}

// Count is how many tokens an account holds.
func (t *Tokens) Count(account string) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range t.recs {
		if r.Account == account {
			n++
		}
	}
	return n, nil
}

// Authenticate returns the account a token belongs to, or "" for a token of nobody. Every record's hash
// is compared, in constant time, whatever matched before, so the time taken says nothing of which
// tokens exist or how close a guess came.
func (t *Tokens) Authenticate(token string) string {
	if t == nil || token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	t.mu.Lock()
	if err := t.load(); err != nil {
		t.mu.Unlock()
		return ""
	}
	var match tokenRecord
	found := 0
	for _, r := range t.recs {
		if subtle.ConstantTimeCompare(sum[:], r.SHA256) == 1 {
			match, found = r, 1
		}
	}
	t.mu.Unlock()
	if found == 0 {
		return ""
	}
	// The account must still be the one the token was issued to.
	o, err := t.Store.Get(kindAccount, "", match.Account)
	if err != nil || string(o.GetUID()) != match.AccountUID || o.GetDeletionTimestamp() != nil {
		return ""
	}
	return match.Account
}

var accountsResource = PilabGroupVersion.WithResource("accounts").GroupResource()

// serveTokens is the admin's door to an account's tokens, under /x (admin only on the HTTPS listener):
//
//	POST   /x/accounts/{name}/tokens[?rotate=true]  → Issued (the token, shown once)
//	DELETE /x/accounts/{name}/tokens                → {"revoked": N}
//	GET    /x/accounts/{name}/tokens                → {"tokens": N}
func (s *Server) serveTokens(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.Tokens == nil {
		WriteJSON(w, http.StatusNotFound, Status{Error: "this lab serves no tokens", Reason: "NotFound"})
		return
	}
	// The /x dialect's errors (Status), as pi's client reads them.
	fail := func(err error) {
		st, ok := err.(apierrors.APIStatus)
		if !ok {
			st = apierrors.NewInternalError(err)
		}
		WriteJSON(w, int(st.Status().Code), Status{Error: st.Status().Message, Reason: string(st.Status().Reason)})
	}
	switch r.Method {
	case http.MethodPost:
		is, err := s.Tokens.Issue(name, isTrue(r.URL.Query().Get("rotate")))
		if err != nil {
			fail(err)
			return
		}
		WriteJSON(w, http.StatusCreated, is)
	case http.MethodDelete:
		n, err := s.Tokens.Revoke(name)
		if err != nil {
			fail(err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]int{"revoked": n})
	default:
		if _, err := s.Store.Get(kindAccount, "", name); err != nil {
			fail(apierrors.NewNotFound(accountsResource, name))
			return
		}
		n, err := s.Tokens.Count(name)
		if err != nil {
			fail(err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]int{"tokens": n})
	}
}

// Run revokes the tokens of each account deleted from the store, until ctx ends: Authenticate's UID check
// already refuses them; this drops the records and ends the sessions they opened (Revoked). After each
// (re)subscription it sweeps the records of accounts that went while nobody watched.
func (t *Tokens) Run(ctx context.Context) {
	for ctx.Err() == nil {
		events := t.Store.Watch(ctx, kindAccount.Name, "")
		t.sweep()
		for ev := range events {
			var m metav1.PartialObjectMetadata
			if ev.Type == api.Deleted && json.Unmarshal(ev.Object, &m) == nil && m.Name != "" {
				t.Revoke(m.Name)
			}
		}
	}
}

func (t *Tokens) sweep() {
	t.mu.Lock()
	if t.load() != nil {
		t.mu.Unlock()
		return
	}
	accounts := map[string]bool{}
	for _, r := range t.recs {
		accounts[r.Account] = true
	}
	t.mu.Unlock()
	for a := range accounts {
		if _, err := t.Store.Get(kindAccount, "", a); store.IsNotFound(err) {
			t.Revoke(a)
		}
	}
}
