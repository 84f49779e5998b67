// Package store keeps a lab's objects in bbolt and tells watchers about every change.
//
// Each kind has a bucket; keys are "<account>/<name>" (lab-wide kinds: "<name>"). Every write bumps one
// lab-wide resourceVersion, so a change is durable on disk before any controller acts on it: a kill -9 of
// the daemon at any moment loses no object.
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	bolt "go.etcd.io/bbolt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
)

var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrConflict      = errors.New("the object has been modified; please apply your changes to the latest version and try again")
)

// Error wraps one of the sentinel errors with the object it is about, in kubectl's words.
type Error struct {
	Err  error
	Kind api.Kind
	Name string
}

func (e *Error) Error() string {
	switch e.Err {
	case ErrNotFound:
		return fmt.Sprintf("%s %q not found", e.Kind.Singular, e.Name)
	case ErrAlreadyExists:
		return fmt.Sprintf("%s %q already exists", e.Kind.Singular, e.Name)
	}
	return fmt.Sprintf("%s %q: %v", e.Kind.Singular, e.Name, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

var metaBucket = []byte("_meta")
var usageBucket = []byte("_usage")

// tokensBucket holds the accounts' bearer tokens, as hashes (tokens.go).
var tokensBucket = []byte("_tokens")
var rvKey = []byte("resourceVersion")

// Store is a lab's object store.
type Store struct {
	db *bolt.DB

	// writeMu makes "commit, then tell watchers" one step, so watchers and the history hear of changes in
	// resourceVersion order (bolt serializes the commits, but the notifications after them could overtake
	// each other).
	writeMu sync.Mutex

	mu     sync.Mutex
	nextID int
	subs   map[int]*sub
	// history holds the most recent events with their resourceVersions (oldest first, at most
	// historySize), so a watch can resume from a resourceVersion a client saw; evictedRV is the newest
	// resourceVersion no longer in it (at Open: the store's resourceVersion then, as older events were
	// never kept).
	history     []Event
	historySize int
	evictedRV   uint64
	// Now is the clock used for timestamps; tests replace it.
	Now func() time.Time
}

type sub struct {
	kind    string
	account string
	ch      chan api.WatchEvent
	// rvch replaces ch for watchers that asked for resourceVersions (WatchFrom).
	rvch    chan Event
	dropped bool
}

// Event is a change with the resourceVersion the store gave it. For a deletion that is the
// resourceVersion of the deletion itself, not the one inside the deleted object.
type Event struct {
	api.WatchEvent
	ResourceVersion uint64
}

// DefaultHistory is how many recent events a store keeps for watches that resume from a resourceVersion.
const DefaultHistory = 8192

// ErrExpired says a resourceVersion is older than the history the store keeps; the client must list again
// (Kubernetes' 410 Gone, reason Expired).
var ErrExpired = errors.New("too old resource version")

// Open opens (creating if needed) the store at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: locked by another process; is a pi daemon for this lab already running?", path)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{metaBucket, usageBucket, tokensBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		for _, k := range api.Kinds() {
			if _, err := tx.CreateBucketIfNotExists([]byte(k.Plural)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state %s: %w", path, err)
	}
	var rv uint64
	db.View(func(tx *bolt.Tx) error {
		rv = currentRV(tx)
		return nil
	})
	return &Store{db: db, subs: map[int]*sub{}, Now: time.Now, historySize: DefaultHistory, evictedRV: rv}, nil
}

func (s *Store) Close() error {
	s.mu.Lock()
	for id, sb := range s.subs {
		sb.close()
		delete(s.subs, id)
	}
	s.mu.Unlock()
	return s.db.Close()
}

func key(k api.Kind, account, name string) []byte {
	if !k.Namespaced {
		return []byte(name)
	}
	return []byte(account + "/" + name)
}

func currentRV(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(metaBucket).Get(rvKey); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func nextRV(tx *bolt.Tx) string {
	b := tx.Bucket(metaBucket)
	rv := currentRV(tx)
	rv++
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], rv)
	b.Put(rvKey, buf[:])
	return strconv.FormatUint(rv, 10)
}

func accountFor(k api.Kind, o metav1.Object) string {
	if !k.Namespaced {
		return ""
	}
	return api.AccountOf(o)
}

// Create stores a new object, filling uid, creationTimestamp and resourceVersion.
func (s *Store) Create(o metav1.Object) error { return s.CreateAll([]metav1.Object{o}) }

// CreateAll stores several new objects in one transaction: all of them, or none when any already exists.
// Each gets its uid, creationTimestamp and its own resourceVersion, and watchers hear of them in order.
func (s *Store) CreateAll(objs []metav1.Object) error {
	events := make([]api.WatchEvent, len(objs))
	now := metav1.NewTime(s.Now().UTC().Truncate(time.Second))
	for _, o := range objs {
		k := api.KindOf(o)
		api.SetTypeMeta(o)
		if k.Namespaced {
			account := api.AccountOf(o)
			o.SetNamespace(api.Namespace)
			api.SetAccount(o, account)
		}
		if o.GetUID() == "" {
			o.SetUID(types.UID(uuid.NewUUID()))
		}
		o.SetCreationTimestamp(now)
	}
	rvs := make([]uint64, len(objs))
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, o := range objs {
			k := api.KindOf(o)
			account := accountFor(k, o)
			b := tx.Bucket([]byte(k.Plural))
			kk := key(k, account, o.GetName())
			if b.Get(kk) != nil {
				return &Error{Err: ErrAlreadyExists, Kind: k, Name: o.GetName()}
			}
			o.SetResourceVersion(nextRV(tx))
			rvs[i], _ = strconv.ParseUint(o.GetResourceVersion(), 10, 64)
			data, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if err := b.Put(kk, data); err != nil {
				return err
			}
			events[i] = api.WatchEvent{Type: api.Added, Kind: k.Name, Account: account, Object: data}
		}
		return nil
	})
	if err != nil {
		for _, o := range objs {
			o.SetResourceVersion("")
		}
		return err
	}
	for i, ev := range events {
		s.notify(ev, rvs[i])
	}
	return nil
}

// Update replaces an object. The caller's resourceVersion must be the stored one (optimistic concurrency);
// an empty resourceVersion overwrites unconditionally.
func (s *Store) Update(o metav1.Object) error {
	k := api.KindOf(o)
	account := accountFor(k, o)
	api.SetTypeMeta(o)
	var data []byte
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(k.Plural))
		kk := key(k, account, o.GetName())
		old := b.Get(kk)
		if old == nil {
			return &Error{Err: ErrNotFound, Kind: k, Name: o.GetName()}
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(old, &meta); err != nil {
			return err
		}
		if rv := o.GetResourceVersion(); rv != "" && rv != meta.Metadata.ResourceVersion {
			return &Error{Err: ErrConflict, Kind: k, Name: o.GetName()}
		}
		// Identity fields never change through an update.
		o.SetUID(meta.Metadata.UID)
		o.SetCreationTimestamp(meta.Metadata.CreationTimestamp)
		if o.GetDeletionTimestamp() == nil && meta.Metadata.DeletionTimestamp != nil {
			o.SetDeletionTimestamp(meta.Metadata.DeletionTimestamp)
		}
		if k.Namespaced {
			o.SetNamespace(api.Namespace)
			api.SetAccount(o, account)
		}
		o.SetResourceVersion(nextRV(tx))
		var err error
		if data, err = json.Marshal(o); err != nil {
			return err
		}
		return b.Put(kk, data)
	})
	if err != nil {
		return err
	}
	rv, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	s.notify(api.WatchEvent{Type: api.Modified, Kind: k.Name, Account: account, Object: data}, rv)
	return nil
}

// Get reads one object.
func (s *Store) Get(k api.Kind, account, name string) (metav1.Object, error) {
	var out metav1.Object
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(k.Plural)).Get(key(k, account, name))
		if v == nil {
			return &Error{Err: ErrNotFound, Kind: k, Name: name}
		}
		var err error
		out, err = api.Decode(k, v)
		return err
	})
	return out, err
}

// List reads every object of a kind in an account ("" = every account).
func (s *Store) List(k api.Kind, account string) ([]metav1.Object, error) {
	out, _, err := s.ListAt(k, account)
	return out, err
}

// Delete removes an object for good. Graceful deletion (deletionTimestamp, then a controller's cleanup,
// then Delete) is the callers' protocol.
func (s *Store) Delete(k api.Kind, account, name string) error {
	var data []byte
	var rv uint64
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(k.Plural))
		kk := key(k, account, name)
		data = b.Get(kk)
		if data == nil {
			return &Error{Err: ErrNotFound, Kind: k, Name: name}
		}
		data = append([]byte(nil), data...)
		rv, _ = strconv.ParseUint(nextRV(tx), 10, 64)
		return b.Delete(kk)
	})
	if err != nil {
		return err
	}
	s.notify(api.WatchEvent{Type: api.Deleted, Kind: k.Name, Account: account, Object: data}, rv)
	return nil
}

// Mutate reads an object, applies fn and writes it back, retrying on conflicts with concurrent writers.
// fn returning ErrUnchanged skips the write.
func (s *Store) Mutate(k api.Kind, account, name string, fn func(o metav1.Object) error) (metav1.Object, error) {
	for {
		o, err := s.Get(k, account, name)
		if err != nil {
			return nil, err
		}
		if err := fn(o); err != nil {
			if errors.Is(err, ErrUnchanged) {
				return o, nil
			}
			return nil, err
		}
		err = s.Update(o)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return o, err
	}
}

// ErrUnchanged tells Mutate there is nothing to write.
var ErrUnchanged = errors.New("unchanged")

// Watch streams changes of one kind ("" = all kinds) in one account ("" = all) until ctx ends. A watcher
// that falls too far behind is dropped (its channel closes) rather than slowing every writer down;
// it should list again and re-watch, as Kubernetes clients do.
func (s *Store) Watch(ctx context.Context, kind, account string) <-chan api.WatchEvent {
	sb := &sub{kind: kind, account: account, ch: make(chan api.WatchEvent, 4096)}
	s.mu.Lock()
	s.subscribeLocked(ctx, sb)
	s.mu.Unlock()
	return sb.ch
}

// subscribeLocked adds a watcher until ctx ends (or it is dropped for falling behind). The caller holds s.mu.
func (s *Store) subscribeLocked(ctx context.Context, sb *sub) {
	id := s.nextID
	s.nextID++
	s.subs[id] = sb
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		if _, ok := s.subs[id]; ok {
			delete(s.subs, id)
			sb.close()
		}
		s.mu.Unlock()
	}()
}

func (sb *sub) close() {
	if sb.rvch != nil {
		close(sb.rvch)
		return
	}
	close(sb.ch)
}

func (sb *sub) matches(ev api.WatchEvent) bool {
	if sb.kind != "" && sb.kind != ev.Kind {
		return false
	}
	return sb.account == "" || ev.Account == "" || sb.account == ev.Account
}

// WatchFrom streams the changes of one kind ("" = all kinds) in one account ("" = all) that come after
// resourceVersion rv, until ctx ends: first the ones the store still remembers, then the new ones, each
// once and in resourceVersion order. An rv older than the history the store keeps is ErrExpired (list
// again, then watch from the list's resourceVersion); an rv newer than the store's streams from now. A
// watcher that falls too far behind is dropped (its channel closes), as with Watch.
func (s *Store) WatchFrom(ctx context.Context, kind, account string, rv uint64) (<-chan Event, error) {
	s.mu.Lock()
	if rv < s.evictedRV {
		oldest := s.evictedRV
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d (the oldest the lab still has is %d)", ErrExpired, rv, oldest)
	}
	var replay []Event
	for _, ev := range s.history {
		if ev.ResourceVersion > rv && (&sub{kind: kind, account: account}).matches(ev.WatchEvent) {
			replay = append(replay, ev)
		}
	}
	size := 4096
	if len(replay)+1024 > size {
		size = len(replay) + 1024
	}
	sb := &sub{kind: kind, account: account, rvch: make(chan Event, size)}
	for _, ev := range replay {
		sb.rvch <- ev
	}
	s.subscribeLocked(ctx, sb)
	s.mu.Unlock()
	return sb.rvch, nil
}

// ResourceVersion is the store's current resourceVersion: that of the latest change.
func (s *Store) ResourceVersion() (uint64, error) {
	var rv uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		rv = currentRV(tx)
		return nil
	})
	return rv, err
}

// ListAt is List together with the resourceVersion the list is consistent with (read in the same
// transaction): a watch from it misses nothing and repeats nothing.
func (s *Store) ListAt(k api.Kind, account string) ([]metav1.Object, uint64, error) {
	var out []metav1.Object
	var rv uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		rv = currentRV(tx)
		c := tx.Bucket([]byte(k.Plural)).Cursor()
		var prefix []byte
		if k.Namespaced && account != "" {
			prefix = []byte(account + "/")
		}
		for kk, v := c.Seek(prefix); kk != nil && bytes.HasPrefix(kk, prefix); kk, v = c.Next() {
			o, err := api.Decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, o)
		}
		return nil
	})
	return out, rv, err
}

// SetHistorySize changes how many recent events the store keeps for WatchFrom (tests make it small).
func (s *Store) SetHistorySize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.historySize = n
	s.trimHistory()
}

func (s *Store) trimHistory() {
	if over := len(s.history) - s.historySize; over > 0 {
		s.evictedRV = s.history[over-1].ResourceVersion
		s.history = append(s.history[:0:0], s.history[over:]...)
	}
}

func (s *Store) notify(ev api.WatchEvent, rv uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := Event{WatchEvent: ev, ResourceVersion: rv}
	s.history = append(s.history, rev)
	// Trim in batches, so appending stays cheap: the history holds between historySize and 1.25x of it.
	if len(s.history) > s.historySize+s.historySize/4 {
		s.trimHistory()
	}
	for id, sb := range s.subs {
		if !sb.matches(ev) {
			continue
		}
		if sb.rvch != nil {
			select {
			case sb.rvch <- rev:
			default:
				delete(s.subs, id)
				sb.close()
			}
			continue
		}
		select {
		case sb.ch <- ev:
		default:
			delete(s.subs, id)
			sb.close()
		}
	}
}

// PutUsage stores one usage record (billing), keyed by id; a later Put with the same id replaces it.
func (s *Store) PutUsage(id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(usageBucket).Put([]byte(id), data) })
}

// Usage returns every usage record, decoded by fn.
func (s *Store) Usage(fn func(id string, data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(usageBucket).ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

// GetUsage reads one usage record; ok is false when there is none.
func (s *Store) GetUsage(id string, v any) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(usageBucket).Get([]byte(id))
		if data == nil {
			return nil
		}
		found = true
		return json.Unmarshal(data, v)
	})
	return found, err
}

// IsNotFound reports whether err says an object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err says an object exists already.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// DeleteUsage removes one usage record.
func (s *Store) DeleteUsage(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(usageBucket).Delete([]byte(id)) })
}
