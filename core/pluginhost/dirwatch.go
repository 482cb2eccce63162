package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// dirSettle is how long the plugin directory must be left alone after a
// change before it is looked at again: a binary being copied in is
// written in many steps.
const dirSettle = 300 * time.Millisecond

// dirRescan bounds how long a change fsnotify did not report (a file
// made executable by chmod on some filesystems, a directory replaced
// under the watch) goes unseen.
const dirRescan = 30 * time.Second

// errReplaced ends a running instance whose executable was replaced.
var errReplaced = errors.New("plugin executable replaced")

// scanDir lists the plugin executables in the plugin directory. Files it
// skips are logged once each, with the reason, until they change.
func (m *Manager) scanDir() ([]Spec, error) {
	entries, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pluginhost: reading plugin dir %s: %w", m.cfg.Dir, err)
	}
	var specs []Spec
	skipped := map[string]string{}
	for _, e := range entries {
		path := filepath.Join(m.cfg.Dir, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			continue // hidden: editors' and copy tools' temporary files
		}
		why := ""
		fi, err := os.Stat(path) // follows symlinks
		switch {
		case err != nil:
			why = "cannot be read: " + err.Error()
		case fi.IsDir():
			why = "a directory"
		case !fi.Mode().IsRegular():
			why = "not a regular file (" + fi.Mode().Type().String() + ")"
		case fi.Mode().Perm()&0o111 == 0:
			why = fmt.Sprintf("not executable (mode %v); chmod +x it to run it as a plugin", fi.Mode().Perm())
		}
		if why != "" {
			skipped[path] = why
			continue
		}
		specs = append(specs, Spec{Path: path})
	}
	m.mu.Lock()
	for path, why := range skipped {
		if m.skipped[path] != why {
			m.log.Warn("skipping a file in the plugin directory", "path", path, "reason", why)
		}
	}
	m.skipped = skipped
	m.mu.Unlock()
	return specs, nil
}

// ensureDir creates the plugin directory if it is missing (only root, or
// the node's user, may write into it: what lands there runs).
func (m *Manager) ensureDir() error {
	if err := os.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("pluginhost: creating plugin dir %s: %w", m.cfg.Dir, err)
	}
	return nil
}

// openWatch starts watching the plugin directory (nil, logged, when it
// cannot be: plugins added later then need a restart of the node). It is
// called before the directory is first read, so nothing added after that
// read goes unseen.
func (m *Manager) openWatch() *fsnotify.Watcher {
	fw, err := fsnotify.NewWatcher()
	if err == nil {
		if err = fw.Add(m.cfg.Dir); err != nil {
			fw.Close()
		}
	}
	if err != nil {
		m.log.Error("cannot watch the plugin directory; plugins added later need a restart of the node", "dir", m.cfg.Dir, "err", err)
		return nil
	}
	return fw
}

// watchDir follows the plugin directory through fw until ctx ends: a
// plugin added is described and started, one whose executable is
// replaced is checked (its pin first) and restarted, one removed is
// stopped.
func (m *Manager) watchDir(ctx context.Context, fw *fsnotify.Watcher) {
	defer fw.Close()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	rescan := time.NewTicker(dirRescan)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fw.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod && strings.HasPrefix(filepath.Base(ev.Name), ".") {
				continue
			}
			settle.Reset(dirSettle)
			continue
		case err, ok := <-fw.Errors:
			if !ok {
				return
			}
			m.log.Warn("watching the plugin directory", "dir", m.cfg.Dir, "err", err)
			settle.Reset(dirSettle)
			continue
		case <-settle.C:
		case <-rescan.C:
		}
		m.sync(ctx)
	}
}

// sync brings the plugins from the directory in line with its files.
func (m *Manager) sync(ctx context.Context) {
	specs, err := m.scanDir()
	if err != nil {
		m.log.Error("reading the plugin directory", "err", err)
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	current := slices.Clone(m.plugins)
	m.mu.Unlock()
	have := map[string]*managed{}
	for _, p := range current {
		if !p.spec.Builtin {
			have[p.spec.Path] = p
		}
	}
	var added []*managed
	for _, s := range specs {
		if p, ok := have[s.Path]; ok {
			delete(have, s.Path)
			p.mu.Lock()
			old := p.stat
			p.mu.Unlock()
			if st, err := os.Stat(s.Path); err == nil && fileChanged(old, st) {
				p.replaced()
			}
			continue
		}
		added = append(added, newManaged(m, s))
	}
	for _, p := range have { // gone from the directory
		m.remove(p)
	}
	for _, p := range added {
		p.logger().Info("plugin added to the plugin directory; describing and starting it", "path", p.spec.Path)
		m.add(ctx, p)
	}
}

// add prepares and supervises a plugin found after Start.
func (m *Manager) add(ctx context.Context, p *managed) {
	err := p.prepare(ctx)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.plugins = append(m.plugins, p)
	m.mu.Unlock()
	if err == nil {
		err = m.claim(p)
	}
	m.run(p, err)
}

// run supervises p on a context of its own, so that it can be stopped
// alone. m.mu must not be held.
func (m *Manager) run(p *managed, prepErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	pctx, cancel := context.WithCancel(m.ctx)
	p.stop = cancel
	p.done = make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.done)
		p.supervise(pctx, prepErr)
	}()
}

// remove stops a plugin whose file left the directory and forgets it.
func (m *Manager) remove(p *managed) {
	p.logger().Info("plugin removed from the plugin directory; stopping it", "path", p.spec.Path)
	m.mu.Lock()
	stop, done := p.stop, p.done
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	m.mu.Lock()
	m.plugins = slices.DeleteFunc(m.plugins, func(o *managed) bool { return o == p })
	m.mu.Unlock()
	p.logger().Info("plugin stopped", "path", p.spec.Path)
}

// replaced tells the plugin's supervisor that its executable changed.
func (p *managed) replaced() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}
