package server

// Paginated lists: `limit` and `continue`, as kube-apiserver serves them (kubectl get asks in chunks of 500,
// client-go's pager and informers' initial lists may ask for less). kube-apiserver serves every page of a
// list from the etcd revision of its first page; the lab's store keeps no old revisions, so the daemon keeps
// the first page's whole (filtered) result instead, under an opaque token, for as long as etcd keeps a
// revision by default (5 minutes), and serves the next pages from it: a paginated list is as consistent as
// an unpaginated one. A token that is gone (older than that, or the daemon restarted) gets kube-apiserver's
// 410 Expired, and clients start the list again (client-go's pager does so by itself).

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// pageTTL is how long the rest of a paginated list is kept: etcd's default compaction interval.
	pageTTL = 5 * time.Minute
	// maxCursors bounds the lists kept at once; the oldest goes first.
	maxCursors = 64
)

// cursor is the rest of a paginated list.
type cursor struct {
	// list names what was listed (resource, namespace, selectors): a token is only good for the same list.
	list    string
	items   []metav1.Object
	rv      uint64
	created time.Time
}

// pages keeps the cursors of the paginated lists in progress.
type pages struct {
	mu      sync.Mutex
	cursors map[string]*cursor
}

// pageToken is what a continue token carries (base64 of its JSON): the cursor and where the next page starts.
type pageToken struct {
	ID     string `json:"id"`
	Offset int    `json:"offset"`
}

// parseLimit reads the limit parameter: 0 (every item) when absent.
func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("limit must be a non-negative integer, not %q", s))
	}
	return int(min(n, 1<<30)), nil
}

// page cuts items (a list at resourceVersion rv) to at most limit items, keeping the rest for a continue
// token, which it returns ("" when nothing is left) with how many items are left after the page.
func (p *pages) page(list string, items []metav1.Object, rv uint64, limit int) ([]metav1.Object, string, int, error) {
	if limit == 0 || len(items) <= limit {
		return items, "", 0, nil
	}
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return nil, "", 0, apierrors.NewInternalError(fmt.Errorf("make a continue token: %w", err))
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	p.mu.Lock()
	p.expireLocked()
	if p.cursors == nil {
		p.cursors = map[string]*cursor{}
	}
	p.cursors[id] = &cursor{list: list, items: items, rv: rv, created: time.Now()}
	p.mu.Unlock()
	return items[:limit], encodeToken(pageToken{ID: id, Offset: limit}), len(items) - limit, nil
}

// next serves the page a continue token points at, the list's resourceVersion, the token of the page after
// it ("" at the end) and how many items are left after this page.
func (p *pages) next(list, token string, limit int) ([]metav1.Object, uint64, string, int, error) {
	var t pageToken
	data, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(data, &t)
	}
	if err != nil || t.ID == "" || t.Offset <= 0 {
		return nil, 0, "", 0, apierrors.NewBadRequest(fmt.Sprintf("continue key is not valid: %q is not a continue token of this server", token))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked()
	c := p.cursors[t.ID]
	if c == nil || t.Offset > len(c.items) {
		return nil, 0, "", 0, apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
	}
	if c.list != list {
		return nil, 0, "", 0, apierrors.NewBadRequest(fmt.Sprintf("continue key is not valid: it continues the list of %s, not of %s; send the same list request with it", c.list, list))
	}
	end := len(c.items)
	if limit > 0 {
		end = min(t.Offset+limit, end)
	}
	items := c.items[t.Offset:end]
	if end == len(c.items) {
		delete(p.cursors, t.ID) // the last page: nothing is left to continue
		return items, c.rv, "", 0, nil
	}
	return items, c.rv, encodeToken(pageToken{ID: t.ID, Offset: end}), len(c.items) - end, nil
}

// expireLocked drops cursors older than pageTTL, and the oldest beyond maxCursors.
func (p *pages) expireLocked() {
	var oldest string
	for id, c := range p.cursors {
		if time.Since(c.created) > pageTTL {
			delete(p.cursors, id)
			continue
		}
		if oldest == "" || c.created.Before(p.cursors[oldest].created) {
			oldest = id
		}
	}
	if len(p.cursors) >= maxCursors {
		delete(p.cursors, oldest)
	}
}

func encodeToken(t pageToken) string {
	data, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(data)
}
