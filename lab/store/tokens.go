package store

import (
	"encoding/json"

	bolt "go.etcd.io/bbolt"
)

// Token records live beside the objects, in their own bucket, so that issuing, rotating and revoking an
// account's credentials commits with bolt's guarantees (a crash never leaves a rotation half done) and no
// watch or list of the API ever carries them. The store keeps them opaque: lab/server/tokens.go decides
// what a record holds (a hash, never the token).

// PutTokens replaces the token records of an account with recs (keyed by each one's id): with replace
// the account's other records go in the same commit (a rotation); without, recs are added.
func (s *Store) PutTokens(account string, replace bool, recs map[string]any, accountOf func([]byte) string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(tokensBucket)
		if replace {
			if _, err := deleteTokensOf(b, account, accountOf); err != nil {
				return err
			}
		}
		for id, v := range recs {
			data, err := json.Marshal(v)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), data); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteTokens removes every token record of an account and says how many there were.
func (s *Store) DeleteTokens(account string, accountOf func([]byte) string) (n int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		n, err = deleteTokensOf(tx.Bucket(tokensBucket), account, accountOf)
		return err
	})
	return n, err
}

// Tokens calls fn with every token record.
func (s *Store) Tokens(fn func(id string, data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(tokensBucket).ForEach(func(k, v []byte) error { return fn(string(k), v) })
	})
}

func deleteTokensOf(b *bolt.Bucket, account string, accountOf func([]byte) string) (int, error) {
	var ids [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		if accountOf(v) == account {
			ids = append(ids, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := b.Delete(id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}
