package supervisor

import "time"

// Shorten the back-off so restart tests run fast.
func SetBackoffForTest(d time.Duration) func() {
	old := backoffInitial
	backoffInitial = d
	return func() { backoffInitial = old }
}

// FindProcess exposes the pid lookup used by adoption and Shutdown.
func FindProcess(runDir string) int { return findProcess(runDir) }

var ConfigFile = configFile
