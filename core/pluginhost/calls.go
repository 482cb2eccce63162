package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
)

// Parse has the intent plugin that accepts mediaType (if given and some
// plugin declares it) or else filename's extension parse content. It returns
// the response, which may carry diagnostics, and the plugin's name.
func (m *Manager) Parse(ctx context.Context, filename, mediaType string, content []byte) (*pluginapiv1.ParseResponse, string, error) {
	ext := normExt(filepath.Ext(filename))
	mt := normMediaType(mediaType)
	var p *managed
	if mt != "" {
		p = m.route(kindIntent, func(c *caps) bool { return slices.Contains(c.mediaTypes, mt) })
	}
	if p == nil && ext != "" {
		p = m.route(kindIntent, func(c *caps) bool { return slices.Contains(c.extensions, ext) })
	}
	if p == nil {
		return nil, "", fmt.Errorf("parsing %s: %w: no intent plugin accepts extension %q or media type %q", filename, ErrNoPlugin, ext, mediaType)
	}
	var resp *pluginapiv1.ParseResponse
	name, err := m.call(ctx, p, "parse "+filename, func(ctx context.Context, in *instance) error {
		var err error
		resp, err = in.intent.Parse(ctx, &pluginapiv1.ParseRequest{Filename: filename, MediaType: mediaType, Content: content})
		return err
	})
	return resp, name, err
}

// Execute has the verb plugin that declares req.Verb carry it out, and
// returns its response and name.
func (m *Manager) Execute(ctx context.Context, req *pluginapiv1.VerbRequest) (*pluginapiv1.VerbResponse, string, error) {
	if req == nil || req.GetVerb() == "" {
		return nil, "", errors.New("pluginhost: Execute: no verb given")
	}
	p := m.route(kindVerb, func(c *caps) bool { return slices.Contains(c.verbs, req.GetVerb()) })
	if p == nil {
		return nil, "", fmt.Errorf("verb %s: %w declares it", req.GetVerb(), ErrNoPlugin)
	}
	var resp *pluginapiv1.VerbResponse
	name, err := m.call(ctx, p, "verb "+req.GetVerb(), func(ctx context.Context, in *instance) error {
		var err error
		resp, err = in.verb.Execute(ctx, req)
		return err
	})
	return resp, name, err
}

// route picks the first plugin of kind whose capabilities match, preferring
// a running one; built-ins come first, then the plugin dir in name order.
func (m *Manager) route(kind string, match func(*caps) bool) *managed {
	m.mu.Lock()
	ps := m.plugins
	m.mu.Unlock()
	var fallback *managed
	for _, p := range ps {
		p.mu.Lock()
		ok := p.caps.known && p.info.GetKind() == kind && match(&p.caps)
		up := p.inst != nil
		p.mu.Unlock()
		if !ok {
			continue
		}
		if up {
			return p
		}
		if fallback == nil {
			fallback = p
		}
	}
	return fallback
}

// call runs fn against p's running instance under ctx joined with the
// instance's life: if the plugin is not running, or exits (or is stopped)
// during the call, the error wraps ErrPluginShutdown.
func (m *Manager) call(ctx context.Context, p *managed, what string, fn func(context.Context, *instance) error) (string, error) {
	p.mu.Lock()
	name, in, state, log := p.name, p.inst, p.state, p.log
	p.mu.Unlock()
	if in == nil {
		return name, fmt.Errorf("plugin %s: %s: %w (state %s)", name, what, ErrPluginShutdown, state)
	}
	cctx, cancel := joinCtx(ctx, in.ctx)
	defer cancel()
	err := fn(cctx, in)
	if err == nil {
		return name, nil
	}
	if ctx.Err() != nil {
		return name, fmt.Errorf("plugin %s: %s: %w", name, what, context.Cause(ctx))
	}
	if _, ok := ctx.Deadline(); ok && status.Code(err) == codes.DeadlineExceeded {
		// The caller's deadline is the only one on the call; gRPC may see
		// it pass (or the plugin may report it) an instant before ctx does.
		return name, fmt.Errorf("plugin %s: %s: %w", name, what, context.DeadlineExceeded)
	}
	if in.ctx.Err() != nil || status.Code(err) == codes.Unavailable {
		if cause := context.Cause(in.ctx); errors.Is(cause, ErrPluginShutdown) {
			log.Warn("plugin shut down during a call", "call", what, "err", cause)
			return name, fmt.Errorf("plugin %s: %s: %w", name, what, cause)
		}
		log.Warn("plugin shut down during a call", "call", what, "err", err)
		return name, fmt.Errorf("plugin %s: %s: %w: %s", name, what, ErrPluginShutdown, status.Convert(err).Message())
	}
	return name, fmt.Errorf("plugin %s: %s: %w", name, what, err)
}

// stream reads inst's telemetry stream into the subscribers until inst
// stops, opening it again if the plugin ends it while still running.
func (p *managed) stream(in *instance) {
	interval := durationpb.New(p.m.cfg.StreamInterval)
	delay := 50 * time.Millisecond
	name := p.displayName()
	log := p.logger()
	for in.ctx.Err() == nil {
		s, err := in.tel.Stream(in.ctx, &pluginapiv1.StreamRequest{Interval: interval})
		for err == nil {
			var b *pluginapiv1.SampleBatch
			if b, err = s.Recv(); err == nil {
				delay = 50 * time.Millisecond
				p.m.publish(name, b)
			}
		}
		if in.ctx.Err() != nil {
			return
		}
		log.Warn("telemetry stream ended; opening it again", "err", err, "in", delay)
		if !sleepCtx(in.ctx, delay) {
			return
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// normExt lower-cases an extension and gives it its dot.
func normExt(e string) string {
	e = strings.ToLower(strings.TrimSpace(e))
	if e != "" && !strings.HasPrefix(e, ".") {
		e = "." + e
	}
	return e
}

// normMediaType lower-cases a media type and drops its parameters.
func normMediaType(mt string) string {
	mt = strings.TrimSpace(mt)
	if mt == "" {
		return ""
	}
	if base, _, err := mime.ParseMediaType(mt); err == nil {
		return base
	}
	return strings.ToLower(mt)
}
