// Package intent is the first-party intent parser plugin (kind
// dev.celluster.intent.v1): it reads ".intent" files, the short text files
// in which operators state a cell's purpose, into a typed
// [plugin.IntentSpec].
//
// The language is described in full in README.md next to this file. In
// short: one statement per line, "#" starts a comment, keywords are
// lowercase, tokens are separated by spaces or tabs:
//
//	cell hello
//	module hello.wasm
//	serve http :8080 /hello
//	keep replicas 1..8
//	when cpu > 80% for 3s then clone cooldown 10s
//
// The parser reports every problem it finds (up to [MaxErrors]) with the
// line and column of the offending token, what it found and what it
// expected. It does not fill in defaults: a zero field in the spec means
// the intent did not say, and the node applies its documented defaults.
package intent

import (
	"context"

	"github.com/celluster/celluster/sdk/plugin"
)

// Info describes the plugin.
var Info = plugin.Info{
	Name:        "intent",
	Version:     "0.1.0",
	Description: "the Celluster intent language (.intent files): cells, endpoints, objectives, rules, limits, kept state, grants and placement",
}

// Extension and MediaType are what the parser accepts.
const (
	Extension = ".intent"
	MediaType = "application/vnd.celluster.intent"
)

// MaxErrors caps the error diagnostics reported for one file.
const MaxErrors = 50

// MaxSize is the largest intent accepted, in bytes.
const MaxSize = 1 << 20

// MaxBody is the largest `limit body` accepted: a request's body is held
// whole in memory while its cell runs.
const MaxBody = 1 << 30

// Parser implements [plugin.IntentParser] for the intent language.
type Parser struct{}

// New returns a parser.
func New() *Parser { return &Parser{} }

var _ plugin.IntentParser = (*Parser)(nil)

// Accepts implements [plugin.IntentParser]: ".intent" files and the media
// type application/vnd.celluster.intent.
func (*Parser) Accepts() (extensions, mediaTypes []string) {
	return []string{Extension}, []string{MediaType}
}

// Parse implements [plugin.IntentParser] with [ParseBytes]; the media type
// is not consulted. err is non-nil only when ctx has ended.
func (*Parser) Parse(ctx context.Context, filename, mediaType string, content []byte) (*plugin.IntentSpec, []plugin.Diagnostic, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	spec, diags := ParseBytes(filename, content)
	return spec, diags, nil
}
