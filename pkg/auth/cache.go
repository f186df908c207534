package auth

import (
	"container/list"
	"sync"
)

// verifiedCache remembers verified tokens by SHA-256 of the raw token, so a
// token presented on every connection is verified once. It is a bounded LRU;
// expiry is checked by the caller on every hit. A nil cache caches nothing.
type verifiedCache struct {
	max int

	mu    sync.Mutex
	order *list.List // front = most recently used
	byKey map[[32]byte]*list.Element
}

type cacheEntry struct {
	key     [32]byte
	claims  *Claims
	version uint64 // of the key set that verified it
}

func newVerifiedCache(max int) *verifiedCache {
	if max <= 0 {
		return nil
	}
	return &verifiedCache{max: max, order: list.New(), byKey: make(map[[32]byte]*list.Element)}
}

// get returns the claims cached under key if they were verified with the
// key set of this version; an entry from an older key set is dropped, so a
// key removed from the JWKS stops vouching for its tokens.
func (c *verifiedCache) get(key [32]byte, version uint64) *Claims {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[key]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if e.version != version {
		c.order.Remove(el)
		delete(c.byKey, key)
		return nil
	}
	c.order.MoveToFront(el)
	return e.claims
}

func (c *verifiedCache) put(key [32]byte, version uint64, claims *Claims) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		el.Value = &cacheEntry{key: key, claims: claims, version: version}
		c.order.MoveToFront(el)
		return
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, claims: claims, version: version})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cacheEntry).key)
	}
}

func (c *verifiedCache) remove(key [32]byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.order.Remove(el)
		delete(c.byKey, key)
	}
}

func (c *verifiedCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
