package server

import (
	"math/rand/v2"
	"syscall"
)

func umask(m int) int { return syscall.Umask(m) }

// randSuffix is Kubernetes' generateName suffix: 5 characters without vowels or look-alikes.
func randSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// RandSuffix is exported for controllers that name objects the same way.
func RandSuffix() string { return randSuffix() }
