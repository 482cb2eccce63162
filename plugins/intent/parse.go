package intent

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/celluster/celluster/sdk/plugin"
)

// token is one word of a line; col is its 1-based column in characters.
type token struct {
	text string
	col  int
}

// end is the column just after the token.
func (t token) end() int { return t.col + utf8.RuneCountInString(t.text) }

// parser holds the state of one ParseBytes call.
type parser struct {
	file  string
	spec  plugin.IntentSpec
	diags []plugin.Diagnostic
	nerr  int
	line  int
	eol   int // column just after the last token of the current line

	first     map[string]int // single-valued statement → line it was first seen
	endpoints map[string]int // listen+" "+path → line
	hosts     map[string]int // serve host name → line
	sawCell   bool
	warmAt    token
	warmLine  int
	stateAt   token // the "state" of keep state
	stateLine int
	prefer    map[string]int
	avoid     map[string]int
	allow     map[string]bool
	grantIdx  map[string]int // capability → index in spec.Grants
	callTo    map[string]bool
}

// ParseBytes parses an intent. It returns the spec, or nil and at least one
// diagnostic of severity error; warnings never come with a nil spec.
// filename is put in every diagnostic. ParseBytes is pure and safe for
// concurrent use.
func ParseBytes(filename string, content []byte) (*plugin.IntentSpec, []plugin.Diagnostic) {
	p := &parser{
		file:      filename,
		first:     map[string]int{},
		endpoints: map[string]int{},
		hosts:     map[string]int{},
		prefer:    map[string]int{},
		avoid:     map[string]int{},
		allow:     map[string]bool{},
		grantIdx:  map[string]int{},
		callTo:    map[string]bool{},
	}
	if len(content) > MaxSize {
		p.line = 1
		p.errAt(1, fmt.Sprintf("found an intent of %d bytes, expected at most %d", len(content), MaxSize),
			"an intent states goals in a few lines; move data elsewhere")
		return nil, p.diags
	}
	text := string(content)
	text = strings.TrimPrefix(text, "\uFEFF")
	for n, line := range strings.Split(text, "\n") {
		if p.nerr >= MaxErrors {
			break
		}
		p.line = n + 1
		toks, ok := p.lex(line)
		if !ok || len(toks) == 0 {
			continue
		}
		p.eol = toks[len(toks)-1].end()
		p.statement(toks)
	}
	p.finish()
	if p.nerr > 0 {
		return nil, p.diags
	}
	spec := p.spec
	return &spec, p.diags
}

// errAt records an error at column col of the current line.
func (p *parser) errAt(col int, msg, hint string) {
	if p.nerr >= MaxErrors {
		return
	}
	p.nerr++
	p.diags = append(p.diags, plugin.Diagnostic{
		File: p.file, Line: p.line, Column: col, Severity: plugin.Error,
		Message: msg, Hint: hint,
	})
}

// err records an error at tok.
func (p *parser) err(tok token, msg, hint string) { p.errAt(tok.col, msg, hint) }

// lex splits a line into tokens, dropping the comment. It reports invalid
// UTF-8 and control characters outside comments.
func (p *parser) lex(line string) ([]token, bool) {
	var toks []token
	start, startCol := -1, 0
	col := 0
	for i, r := range line {
		col++
		size := utf8.RuneLen(r)
		if r == utf8.RuneError {
			_, size = utf8.DecodeRuneInString(line[i:])
		}
		if r == '#' || r == ' ' || r == '\t' || r == '\r' {
			if start >= 0 {
				toks = append(toks, token{line[start:i], startCol})
				start = -1
			}
			if r == '#' {
				return toks, true
			}
			continue
		}
		if r == utf8.RuneError && size == 1 {
			p.errAt(col, "found a byte that is not UTF-8, expected text in UTF-8", "")
			return nil, false
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || r == '\uFEFF' {
			p.errAt(col, fmt.Sprintf("found control character %U, expected printable text", r), "separate words with spaces or tabs")
			return nil, false
		}
		if start < 0 {
			start, startCol = i, col
		}
	}
	if start >= 0 {
		toks = append(toks, token{line[start:], startCol})
	}
	return toks, true
}

// at returns toks[i], or an end-of-line token when i is past the end.
func (p *parser) at(toks []token, i int) (token, bool) {
	if i < len(toks) {
		return toks[i], true
	}
	return token{col: p.eol}, false
}

// found describes a token for a message.
func found(t token, ok bool) string {
	if !ok {
		return "found end of line"
	}
	return fmt.Sprintf("found %q", t.text)
}

// quoteAll renders words as `"a" or "b"`.
func quoteAll(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = strconv.Quote(w)
	}
	return strings.Join(q, " or ")
}

// keyword checks that toks[i] is one of want and returns which.
func (p *parser) keyword(toks []token, i int, want ...string) (string, bool) {
	t, ok := p.at(toks, i)
	if ok {
		for _, w := range want {
			if t.text == w {
				return w, true
			}
		}
	}
	hint := ""
	if ok {
		hint = suggest(t.text, want)
	}
	p.err(t, found(t, ok)+", expected "+quoteAll(want), hint)
	return "", false
}

// end checks that nothing follows toks[i-1].
func (p *parser) end(toks []token, i int) bool {
	if i >= len(toks) {
		return true
	}
	p.err(toks[i], fmt.Sprintf("found %q, expected end of line", toks[i].text), "comments start with #")
	return false
}

// once reports whether the single-valued statement key is seen for the first
// time on this line, and an error at kw otherwise.
func (p *parser) once(key string, kw token) bool {
	if l, dup := p.first[key]; dup {
		p.err(kw, fmt.Sprintf("found a second %q statement, expected at most one", key),
			fmt.Sprintf("the first is on line %d; remove one of them", l))
		return false
	}
	p.first[key] = p.line
	return true
}

// statements are the first words of statements.
var statements = []string{"cell", "module", "abi", "serve", "keep", "limit", "when", "decay", "grant", "allow", "spread", "prefer", "avoid"}

func (p *parser) statement(toks []token) {
	kw := toks[0]
	switch kw.text {
	case "cell":
		p.cell(toks)
	case "module":
		p.module(toks)
	case "abi":
		p.abi(toks)
	case "serve":
		p.serve(toks)
	case "keep":
		p.keep(toks)
	case "limit":
		p.limit(toks)
	case "when":
		p.when(toks)
	case "decay":
		p.decay(toks)
	case "grant":
		p.grant(toks)
	case "allow":
		p.allowFrom(toks)
	case "spread":
		p.spread(toks)
	case "prefer", "avoid":
		p.node(toks)
	default:
		hint := suggest(kw.text, statements)
		if hint == "" {
			hint = "a statement starts with one of: " + strings.Join(statements, ", ")
		}
		p.err(kw, fmt.Sprintf("found %q, expected a statement: %s", kw.text, quoteAll(statements)), hint)
	}
}

func (p *parser) cell(toks []token) {
	p.sawCell = true
	if !p.once("cell", toks[0]) {
		return
	}
	t, ok := p.at(toks, 1)
	if !ok {
		p.err(t, "found end of line, expected a cell name", "e.g. cell hello")
		return
	}
	if !cellName.MatchString(t.text) {
		p.err(t, fmt.Sprintf("found %q, expected a cell name: %s", t.text, cellNameRule), nameHint(t.text))
		return
	}
	if p.end(toks, 2) {
		p.spec.Cell = t.text
	}
}

func (p *parser) module(toks []token) {
	if !p.once("module", toks[0]) {
		return
	}
	t, ok := p.at(toks, 1)
	if !ok {
		p.err(t, "found end of line, expected the module's path", "e.g. module hello.wasm")
		return
	}
	ref := plugin.ModuleRef{Path: t.text}
	if len(toks) > 2 {
		if _, ok := p.keyword(toks, 2, "sha256"); !ok {
			return
		}
		h, ok := p.at(toks, 3)
		if !ok {
			p.err(h, "found end of line, expected 64 hexadecimal digits", "e.g. the output of sha256sum hello.wasm")
			return
		}
		if !isHex64(h.text) {
			p.err(h, fmt.Sprintf("found %q (%d characters), expected 64 hexadecimal digits", h.text, utf8.RuneCountInString(h.text)),
				"e.g. the output of sha256sum hello.wasm")
			return
		}
		ref.SHA256 = strings.ToLower(h.text)
		if !p.end(toks, 4) {
			return
		}
	}
	p.spec.Module = ref
}

func (p *parser) abi(toks []token) {
	if !p.once("abi", toks[0]) {
		return
	}
	w, ok := p.keyword(toks, 1, plugin.ABIReactor, plugin.ABICommand)
	if ok && p.end(toks, 2) {
		p.spec.ABI = w
	}
}

func (p *parser) serve(toks []token) {
	what, ok := p.keyword(toks, 1, "http", "host")
	if !ok {
		return
	}
	if what == "host" {
		p.serveHost(toks)
		return
	}
	e := plugin.Endpoint{Protocol: "http"}
	t, ok := p.at(toks, 2)
	if !ok {
		p.err(t, "found end of line, expected an address such as :8080 or a path such as /hello", "e.g. serve http :8080 /hello")
		return
	}
	next := 3
	if !strings.HasPrefix(t.text, "/") {
		if msg := checkAddr(t.text); msg != "" {
			hint := "e.g. serve http :8080 /hello"
			if _, err := strconv.Atoi(t.text); err == nil {
				hint = "write a port as :" + t.text
			}
			p.err(t, fmt.Sprintf("found %q, expected an address such as :8080 or 127.0.0.1:8080 (%s), or a path starting with /", t.text, msg), hint)
			return
		}
		e.Listen = t.text
		t, ok = p.at(toks, 3)
		next = 4
		if !ok || !strings.HasPrefix(t.text, "/") {
			p.err(t, found(t, ok)+", expected a path starting with /", "e.g. serve http "+e.Listen+" /hello")
			return
		}
	}
	if msg, hint := checkPath(t.text); msg != "" {
		p.err(t, fmt.Sprintf("found %q, expected %s", t.text, msg), hint)
		return
	}
	e.Path = t.text
	if !p.end(toks, next) {
		return
	}
	key := e.Listen + " " + e.Path
	if l, dup := p.endpoints[key]; dup {
		p.err(toks[0], fmt.Sprintf("found endpoint %s%s a second time, expected each endpoint once", e.Listen, e.Path),
			fmt.Sprintf("the first is on line %d", l))
		return
	}
	p.endpoints[key] = p.line
	p.spec.Endpoints = append(p.spec.Endpoints, e)
}

// serveHost parses "serve host NAME[, NAME ...]": the cell answers only
// requests for these hosts. Names are stored lowercase; each host once.
func (p *parser) serveHost(toks []token) {
	items, ok := p.list(toks[2:], "a host name such as shop.example", "serve host shop.example, *.shop.example")
	if !ok {
		return
	}
	var hosts []string
	seen := map[string]bool{}
	for _, it := range items {
		t := it.toks[0]
		if msg, hint := checkHost(t.text); msg != "" {
			p.err(t, fmt.Sprintf("found %q, expected %s", t.text, msg), hint)
			return
		}
		if len(it.toks) > 1 {
			p.err(it.toks[1], fmt.Sprintf(`found %q, expected "," or end of line`, it.toks[1].text), "separate host names with commas")
			return
		}
		h := strings.ToLower(t.text)
		if l, dup := p.hosts[h]; dup || seen[h] {
			if !dup {
				l = p.line
			}
			p.err(t, fmt.Sprintf("found host %s a second time, expected each host once", h), fmt.Sprintf("the first is on line %d", l))
			return
		}
		seen[h] = true
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		p.hosts[h] = p.line
		p.spec.Hosts = append(p.spec.Hosts, h)
	}
}

func (p *parser) keep(toks []token) {
	what, ok := p.keyword(toks, 1, "replicas", "warm", "p99", "error", "state")
	if !ok {
		return
	}
	switch what {
	case "replicas":
		if !p.once("keep replicas", toks[0]) {
			return
		}
		t, ok := p.at(toks, 2)
		if !ok {
			p.err(t, "found end of line, expected a count such as 2 or a range such as 1..8", "write a range as 1..8")
			return
		}
		lo, hi, msg, hint := parseReplicas(t.text)
		if msg != "" {
			p.err(t, fmt.Sprintf("found %q, expected %s", t.text, msg), hint)
			return
		}
		if p.end(toks, 3) {
			p.spec.Replicas = plugin.ReplicaBounds{Min: lo, Max: hi}
		}
	case "warm":
		if !p.once("keep warm", toks[0]) {
			return
		}
		t, ok := p.at(toks, 2)
		n, good := parseCount(t.text)
		if !ok || !good {
			p.err(t, found(t, ok)+", expected a count of replicas such as 1", "e.g. keep warm 1")
			return
		}
		if p.end(toks, 3) {
			p.spec.Warm, p.warmAt, p.warmLine = n, t, p.line
		}
	case "p99":
		if !p.once("keep p99 latency", toks[0]) {
			return
		}
		if _, ok := p.keyword(toks, 2, "latency"); !ok {
			return
		}
		if _, ok := p.keyword(toks, 3, "under"); !ok {
			return
		}
		t, ok := p.at(toks, 4)
		d, good := p.duration(t, ok, true)
		if good && p.end(toks, 5) {
			p.spec.Objectives = append(p.spec.Objectives, plugin.Objective{Kind: plugin.LatencyP99, Threshold: d.Seconds(), Line: p.line})
		}
	case "error":
		if !p.once("keep error rate", toks[0]) {
			return
		}
		if _, ok := p.keyword(toks, 2, "rate"); !ok {
			return
		}
		if _, ok := p.keyword(toks, 3, "under"); !ok {
			return
		}
		t, ok := p.at(toks, 4)
		pct, good := parsePercent(t.text)
		if !ok || !good || pct <= 0 || pct > 100 {
			p.err(t, found(t, ok)+", expected a percentage above 0% and at most 100%", "e.g. keep error rate under 1%")
			return
		}
		if p.end(toks, 5) {
			p.spec.Objectives = append(p.spec.Objectives, plugin.Objective{Kind: plugin.ErrorRate, Threshold: pct / 100, Line: p.line})
		}
	case "state":
		p.keepState(toks)
	}
}

// keepState parses "keep state [replicated every DURATION]".
func (p *parser) keepState(toks []token) {
	if !p.once("keep state", toks[0]) {
		return
	}
	st := plugin.StatePolicy{Keep: true}
	if t, ok := p.at(toks, 2); ok {
		if t.text != "replicated" {
			hint := suggest(t.text, []string{"replicated"})
			if hint == "" {
				hint = "e.g. keep state, or keep state replicated every 1s"
			}
			p.err(t, fmt.Sprintf(`found %q, expected "replicated" or end of line`, t.text), hint)
			return
		}
		if _, ok := p.keyword(toks, 3, "every"); !ok {
			return
		}
		t, ok := p.at(toks, 4)
		d, good := p.duration(t, ok, true)
		if !good {
			return
		}
		if d < plugin.MinReplicateEvery || d > plugin.MaxReplicateEvery {
			hint := "shipping the state more often than every 100ms costs more than it saves; e.g. keep state replicated every 1s"
			if d > plugin.MaxReplicateEvery {
				hint = "a copy up to an hour old is the oldest worth keeping; e.g. keep state replicated every 1m"
			}
			p.err(t, fmt.Sprintf("found %q, expected a duration from 100ms to 1h", t.text), hint)
			return
		}
		if !p.end(toks, 5) {
			return
		}
		st.ReplicateEvery = d
	}
	p.spec.State, p.stateAt, p.stateLine = st, toks[1], p.line
}

func (p *parser) limit(toks []token) {
	what, ok := p.keyword(toks, 1, "request", "memory", "concurrency", "kv", "body")
	if !ok {
		return
	}
	switch what {
	case "body":
		p.limitBody(toks)
	case "request":
		if _, ok := p.keyword(toks, 2, "time"); !ok {
			return
		}
		if !p.once("limit request time", toks[0]) {
			return
		}
		t, ok := p.at(toks, 3)
		d, good := p.duration(t, ok, true)
		if good && p.end(toks, 4) {
			p.spec.Limits.RequestTime = d
		}
	case "memory":
		if !p.once("limit memory", toks[0]) {
			return
		}
		t, ok := p.at(toks, 2)
		next := 3
		if u, uok := p.at(toks, 3); ok && uok && isDigits(t.text) && sizeUnits[u.text] != 0 {
			t.text += u.text
			next = 4
		}
		n, msg := parseSize(t.text)
		if !ok || msg != "" || n == 0 {
			if ok && msg == "" {
				msg = "the size must be above zero"
			}
			if !ok {
				msg = "e.g. limit memory 64MiB"
			}
			p.err(t, found(t, ok)+", expected a size such as 64MiB", msg)
			return
		}
		if p.end(toks, next) {
			p.spec.Limits.Memory = n
		}
	case "kv":
		if !p.once("limit kv", toks[0]) {
			return
		}
		t, ok := p.at(toks, 2)
		next := 3
		if u, uok := p.at(toks, 3); ok && uok && isDigits(t.text) && sizeUnits[u.text] != 0 {
			t.text += u.text
			next = 4
		}
		n, msg := parseSize(t.text)
		if !ok || msg != "" || n == 0 {
			if ok && msg == "" {
				msg = "the size must be above zero"
			}
			if !ok {
				msg = "e.g. limit kv 16MiB"
			}
			p.err(t, found(t, ok)+", expected a size such as 16MiB (the cell's key-value store quota)", msg)
			return
		}
		if p.end(toks, next) {
			p.spec.Limits.KV = n
		}
	case "concurrency":
		if !p.once("limit concurrency", toks[0]) {
			return
		}
		t, ok := p.at(toks, 2)
		n, good := parseCount(t.text)
		if !ok || !good || n == 0 {
			p.err(t, found(t, ok)+", expected a count of requests of at least 1", "e.g. limit concurrency 16")
			return
		}
		if p.end(toks, 3) {
			p.spec.Limits.Concurrency = n
		}
	}
}

// limitBody parses "limit body SIZE": the largest request body, from 1
// byte to MaxBody.
func (p *parser) limitBody(toks []token) {
	if !p.once("limit body", toks[0]) {
		return
	}
	t, ok := p.at(toks, 2)
	next := 3
	if u, uok := p.at(toks, 3); ok && uok && isDigits(t.text) && sizeUnits[u.text] != 0 {
		t.text += u.text
		next = 4
	}
	n, msg := parseSize(t.text)
	switch {
	case !ok:
		msg = "e.g. limit body 1MiB"
	case msg == "" && n == 0:
		msg = "the size must be above zero"
	case msg == "" && n > MaxBody:
		msg = "a body is held whole in memory while the cell runs; e.g. limit body 1MiB"
	}
	if msg != "" {
		p.err(t, found(t, ok)+", expected a size from 1B to 1GiB", msg)
		return
	}
	if p.end(toks, next) {
		p.spec.Limits.Body = n
	}
}

// verbs are the verbs a rule may run.
var verbs = []string{"spawn", "clone", "reroute", "upgrade", "decay"}

func (p *parser) when(toks []token) {
	r := plugin.Rule{Name: "line " + strconv.Itoa(p.line), Line: p.line}
	t, ok := p.at(toks, 1)
	if !ok {
		p.err(t, "found end of line, expected a signal such as latency.p99", "e.g. when cpu > 80% for 3s then clone")
		return
	}
	if !p.signal(t, &r) {
		return
	}
	t, ok = p.at(toks, 2)
	if !ok || !isComparator(t.text) {
		hint := "e.g. when cpu > 80% then clone"
		switch t.text {
		case "=":
			hint = "write == for equality"
		case "=>", "≥":
			hint = "write >="
		case "=<", "≤":
			hint = "write <="
		case "<>", "≠":
			hint = "write !="
		}
		p.err(t, found(t, ok)+", expected a comparator: "+quoteAll(comparators), hint)
		return
	}
	r.Comparator = plugin.Comparator(t.text)
	t, ok = p.at(toks, 3)
	i := 4
	if u, uok := p.at(toks, 4); ok && uok && isDigits(t.text) && sizeUnits[u.text] != 0 {
		t.text += u.text
		i = 5
	}
	if !ok {
		p.err(t, "found end of line, expected a value such as 80, 80%, 20ms or 64MiB", "")
		return
	}
	v, msg := parseValue(t.text)
	if msg != "" {
		p.err(t, fmt.Sprintf("found %q, expected a value such as 80, 80%%, 20ms or 64MiB", t.text), msg)
		return
	}
	r.Threshold = v
	w, ok := p.keyword(toks, i, "for", "then")
	if !ok {
		return
	}
	if w == "for" {
		t, ok := p.at(toks, i+1)
		d, good := p.duration(t, ok, false)
		if !good {
			return
		}
		r.Window = d
		if _, ok := p.keyword(toks, i+2, "then"); !ok {
			return
		}
		i += 2
	}
	t, ok = p.at(toks, i+1)
	if !ok || !contains(verbs, t.text) {
		hint := "verbs are " + strings.Join(verbs[:len(verbs)-1], ", ") + " and " + verbs[len(verbs)-1]
		if s := suggest(t.text, verbs); ok && s != "" {
			hint = s + "; " + hint
		}
		p.err(t, found(t, ok)+", expected a verb", hint)
		return
	}
	r.Verb = t.text
	for i += 2; i < len(toks) && toks[i].text != "cooldown"; i++ {
		r.Args = append(r.Args, toks[i].text)
	}
	if i < len(toks) {
		t, ok := p.at(toks, i+1)
		d, good := p.duration(t, ok, false)
		if !good {
			return
		}
		r.Cooldown = d
		if !p.end(toks, i+2) {
			return
		}
	}
	p.spec.Rules = append(p.spec.Rules, r)
}

// signal parses SIGNAL[{k=v,...}] into r.
func (p *parser) signal(t token, r *plugin.Rule) bool {
	name, labels, hasLabels := strings.Cut(t.text, "{")
	if !signalName.MatchString(name) {
		hint := "a signal is lowercase words separated by dots, e.g. latency.p99"
		if strings.ContainsAny(name, "<>=!") {
			hint = "separate the signal, the comparator and the value with spaces, e.g. when cpu > 80% then clone"
		}
		p.err(t, fmt.Sprintf("found %q, expected a signal such as latency.p99", name), hint)
		return false
	}
	r.Signal = name
	if !hasLabels {
		return true
	}
	col := t.col + utf8.RuneCountInString(name) + 1 // first character inside {
	body, closed := strings.CutSuffix(labels, "}")
	if !closed || body == "" || strings.ContainsAny(body, "{}") {
		p.errAt(col-1, fmt.Sprintf("found %q, expected labels such as {port=8080} with no spaces inside", "{"+labels), "close the labels with } and write no spaces inside")
		return false
	}
	r.Labels = map[string]string{}
	for kv := range strings.SplitSeq(body, ",") {
		k, v, hasEq := strings.Cut(kv, "=")
		switch {
		case !labelKey.MatchString(k):
			p.errAt(col, fmt.Sprintf("found %q, expected a label name such as port", k), "write labels as {k=v,k2=v2}")
			return false
		case !hasEq || v == "" || strings.Contains(v, "="):
			p.errAt(col, fmt.Sprintf("found %q, expected a label such as %s=value", kv, k), "write labels as {k=v,k2=v2}")
			return false
		}
		if _, dup := r.Labels[k]; dup {
			p.errAt(col, fmt.Sprintf("found label %q a second time, expected each label once", k), "")
			return false
		}
		r.Labels[k] = v
		col += utf8.RuneCountInString(kv) + 1
	}
	return true
}

func (p *parser) decay(toks []token) {
	if !p.once("decay", toks[0]) {
		return
	}
	if _, ok := p.keyword(toks, 1, "after"); !ok {
		return
	}
	t, ok := p.at(toks, 2)
	d, good := p.duration(t, ok, true)
	if !good {
		return
	}
	if _, ok := p.keyword(toks, 3, "idle"); !ok {
		return
	}
	if p.end(toks, 4) {
		p.spec.DecayAfterIdle = d
	}
}

// item is one comma-separated element of a list; next is the "," after it
// or an end-of-line token (empty text).
type item struct {
	toks []token
	next token
}

// list splits toks into comma-separated items; what names an item for
// messages. Commas may touch words ("kv,signal") or stand alone.
func (p *parser) list(toks []token, what, example string) ([]item, bool) {
	var items []item
	var cur []token
	flush := func(next token) bool {
		if len(cur) == 0 {
			f := "found end of line"
			if next.text != "" {
				f = `found ","`
			}
			p.err(next, f+", expected "+what, "e.g. "+example)
			return false
		}
		items = append(items, item{cur, next})
		cur = nil
		return true
	}
	for _, t := range toks {
		col := t.col
		for part := range strings.SplitAfterSeq(t.text, ",") {
			word, comma := strings.CutSuffix(part, ",")
			if word != "" {
				cur = append(cur, token{word, col})
				col += utf8.RuneCountInString(word)
			}
			if comma {
				if !flush(token{",", col}) {
					return nil, false
				}
				col++
			}
		}
	}
	if !flush(token{col: p.eol}) {
		return nil, false
	}
	return items, true
}

// capabilities are what a grant may give.
var capabilities = []string{"kv", "signal", "log", "call"}

func (p *parser) grant(toks []token) {
	items, ok := p.list(toks[1:], "a capability: "+quoteAll(capabilities), "grant kv, signal, call cell:auth")
	if !ok {
		return
	}
	type grant struct {
		capability, target string
	}
	var gs []grant
	for _, it := range items {
		c := it.toks[0]
		if !contains(capabilities, c.text) {
			p.err(c, fmt.Sprintf("found %q, expected a capability: %s", c.text, quoteAll(capabilities)), suggest(c.text, capabilities))
			return
		}
		want := 1
		g := grant{capability: c.text}
		if c.text == "call" {
			want = 2
			if len(it.toks) < 2 {
				p.err(it.next, found(it.next, it.next.text != "")+`, expected a target such as cell:auth after "call"`, "e.g. grant call cell:auth")
				return
			}
			tg := it.toks[1]
			name, isCell := strings.CutPrefix(tg.text, "cell:")
			if !isCell || !cellName.MatchString(name) {
				p.err(tg, fmt.Sprintf("found %q, expected a target cell:NAME", tg.text), "name each cell the cell may call, e.g. call cell:auth")
				return
			}
			g.target = tg.text
		}
		if len(it.toks) > want {
			p.err(it.toks[want], fmt.Sprintf(`found %q, expected "," or end of line`, it.toks[want].text), "separate capabilities with commas")
			return
		}
		gs = append(gs, g)
	}
	for _, g := range gs {
		i, seen := p.grantIdx[g.capability]
		if !seen {
			i = len(p.spec.Grants)
			p.grantIdx[g.capability] = i
			p.spec.Grants = append(p.spec.Grants, plugin.Grant{Capability: g.capability})
		}
		if g.target != "" && !p.callTo[g.target] {
			p.callTo[g.target] = true
			p.spec.Grants[i].Targets = append(p.spec.Grants[i].Targets, g.target)
		}
	}
}

func (p *parser) allowFrom(toks []token) {
	if _, ok := p.keyword(toks, 1, "from"); !ok {
		return
	}
	items, ok := p.list(toks[2:], "an identity such as cell:frontend or node:*", "allow from cell:frontend, node:*")
	if !ok {
		return
	}
	var ids []string
	for _, it := range items {
		t := it.toks[0]
		if msg, hint := checkIdentity(t.text); msg != "" {
			p.err(t, fmt.Sprintf("found %q, expected %s", t.text, msg), hint)
			return
		}
		if len(it.toks) > 1 {
			p.err(it.toks[1], fmt.Sprintf(`found %q, expected "," or end of line`, it.toks[1].text), "separate identities with commas")
			return
		}
		ids = append(ids, t.text)
	}
	for _, id := range ids {
		if !p.allow[id] {
			p.allow[id] = true
			p.spec.AllowFrom = append(p.spec.AllowFrom, id)
		}
	}
}

func (p *parser) spread(toks []token) {
	if _, ok := p.keyword(toks, 1, "across"); !ok {
		return
	}
	at := 2
	n := 0
	if len(toks) > 2 && toks[2].text != "" && strings.Trim(toks[2].text, "0123456789") == "" {
		// spread across N nodes: at least N nodes.
		v, err := strconv.Atoi(toks[2].text)
		if err != nil || v < 2 || v > 1000 {
			p.err(toks[2], fmt.Sprintf("found %q, expected a node count from 2 to 1000", toks[2].text), "spread across 3 nodes")
			return
		}
		n, at = v, 3
	}
	if _, ok := p.keyword(toks, at, "nodes"); !ok {
		return
	}
	if p.end(toks, at+1) {
		p.spec.Placement.SpreadAcrossNodes = true
		p.spec.Placement.SpreadMinNodes = n
	}
}

// node parses "prefer node NAME" and "avoid node NAME".
func (p *parser) node(toks []token) {
	if _, ok := p.keyword(toks, 1, "node"); !ok {
		return
	}
	t, ok := p.at(toks, 2)
	if !ok || !nodeName.MatchString(t.text) {
		p.err(t, found(t, ok)+", expected a node name", "a node name is letters, digits, '.', '-' and '_', e.g. "+toks[0].text+" node edge-1")
		return
	}
	if !p.end(toks, 3) {
		return
	}
	mine, other := p.prefer, p.avoid
	list, otherKw := &p.spec.Placement.PreferNodes, "avoid"
	if toks[0].text == "avoid" {
		mine, other = p.avoid, p.prefer
		list, otherKw = &p.spec.Placement.AvoidNodes, "prefer"
	}
	if l, clash := other[t.text]; clash {
		p.err(t, fmt.Sprintf("found node %q, which line %d says to %s, expected a node not named there", t.text, l, otherKw),
			"a node is either preferred or avoided")
		return
	}
	if _, dup := mine[t.text]; !dup {
		mine[t.text] = p.line
		*list = append(*list, t.text)
	}
}

// duration parses a duration token; positive requires it above zero,
// otherwise it may be zero but not negative.
func (p *parser) duration(t token, ok, positive bool) (d time.Duration, good bool) {
	if !ok {
		p.err(t, "found end of line, expected a duration such as 3s", "durations use ns, us, ms, s, m and h, e.g. 20ms or 1m30s")
		return 0, false
	}
	d, msg := parseDuration(t.text)
	if msg == "" && positive && d == 0 {
		msg = "the duration must be above zero"
	}
	if msg != "" {
		p.err(t, fmt.Sprintf("found %q, expected a duration such as 3s", t.text), msg)
		return 0, false
	}
	return d, true
}

// finish reports what needs the whole file.
func (p *parser) finish() {
	if p.nerr >= MaxErrors {
		return
	}
	if !p.sawCell {
		p.line = 1
		p.errAt(1, `found no "cell" statement, expected one naming the cell`, "start the intent with e.g. cell hello")
	}
	if r := p.spec.Replicas; r.Max > 0 && p.spec.Warm > r.Max && p.warmLine > 0 {
		p.line = p.warmLine
		p.err(p.warmAt, fmt.Sprintf("found keep warm %d, expected at most the %d replicas that keep replicas allows (line %d)",
			p.spec.Warm, r.Max, p.first["keep replicas"]), "lower keep warm or raise the replicas' maximum")
	}
	if p.spec.State.Keep && p.spec.ABI == plugin.ABICommand && p.stateLine > 0 {
		p.line = p.stateLine
		p.err(p.stateAt, fmt.Sprintf(`found keep state in a command cell ("abi command" on line %d), expected it only in a reactor cell`,
			p.first["abi"]), "a command cell starts afresh for every request, so it has no state to keep; remove keep state or write abi reactor")
	}
}
