package pluginhost

import "sync"

// Process-wide bookkeeping, for CleanupAll: every started Manager and every
// plugin process not yet reaped.
var (
	managers = &registry[*Manager]{}
	live     = &registry[*instance]{}
)

// registry is a concurrency-safe set.
type registry[T comparable] struct {
	mu sync.Mutex
	m  map[T]struct{}
}

// add puts v in the set.
func (r *registry[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[T]struct{}{}
	}
	r.m[v] = struct{}{}
}

// remove takes v out of the set.
func (r *registry[T]) remove(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, v)
}

// all lists the set.
func (r *registry[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]T, 0, len(r.m))
	for v := range r.m {
		out = append(out, v)
	}
	return out
}

// register and unregister track a plugin process until it is reaped.
func register(in *instance)   { live.add(in) }
func unregister(in *instance) { live.remove(in) }

// CleanupAll closes every Manager in the process and kills any plugin
// process still alive, in parallel, and waits: the counterpart of go-plugin's
// CleanupClients for a node's exit paths that cannot reach its Manager (a
// fatal error, a signal handler). Managers are unusable afterwards. On Linux
// plugins are also started with a parent-death signal (SIGKILL), so they die
// with the node even if it is killed outright.
func CleanupAll() {
	var wg sync.WaitGroup
	for _, m := range managers.all() {
		wg.Go(m.Close)
	}
	wg.Wait()
	for _, in := range live.all() {
		wg.Go(func() { in.stop(true) })
	}
	wg.Wait()
}
