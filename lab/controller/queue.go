package controller

import (
	"sync"
	"time"
)

// queue is a work queue of keys, as client-go's: a key is handled by one worker at a time, a key added while
// it is being handled is handled again afterwards, and adding a queued key again does nothing. A key waits
// for at most one timer (the earliest asked for), so retries of a failing key do not multiply, and failures
// in a row back off exponentially (Failed/Forget, as client-go's per-item rate limiter).
type queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	order      []string
	dirty      map[string]bool
	processing map[string]bool
	waiting    map[string]time.Time // when a key's one timer fires
	failures   map[string]int
	closed     bool
}

// Retry back-off of a failing key: 1 s, doubling, at most 2 min.
const (
	retryBase = time.Second
	retryMax  = 2 * time.Minute
)

func newQueue() *queue {
	q := &queue{dirty: map[string]bool{}, processing: map[string]bool{}, waiting: map[string]time.Time{}, failures: map[string]int{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if !q.processing[key] {
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

// AddAfter adds key once d has passed, unless it is already due to be added sooner.
func (q *queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	when := time.Now().Add(d)
	q.mu.Lock()
	if t, ok := q.waiting[key]; ok && !when.Before(t) {
		q.mu.Unlock()
		return
	}
	q.waiting[key] = when
	q.mu.Unlock()
	time.AfterFunc(d, func() {
		q.mu.Lock()
		if q.waiting[key].Equal(when) {
			delete(q.waiting, key)
		}
		q.mu.Unlock()
		q.Add(key)
	})
}

// Failed counts one more failure of key in a row and returns how long to wait before retrying it.
func (q *queue) Failed(key string) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.failures[key]
	q.failures[key] = n + 1
	if n >= 7 { // 1 s << 7 = 128 s > retryMax
		return retryMax
	}
	return min(retryBase<<n, retryMax)
}

// Forget clears key's failures after it was handled without error.
func (q *queue) Forget(key string) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// Get blocks until a key is ready; ok is false once the queue is closed.
func (q *queue) Get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key := q.order[0]
	q.order = q.order[1:]
	delete(q.dirty, key)
	q.processing[key] = true
	return key, true
}

// Done marks key handled; if it was added meanwhile, it is queued again.
func (q *queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] {
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

func (q *queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
