package cell

// Header holds HTTP header fields, keyed by canonical name, like
// net/http.Header. The methods canonicalise the key they are given
// ("content-type" becomes "Content-Type"); indexing the map directly does
// not.
type Header map[string][]string

// Get returns the first value associated with key, or "" if there is none.
func (h Header) Get(key string) string {
	if v := h[CanonicalHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Values returns all values associated with key, in order. The returned
// slice is not a copy.
func (h Header) Values(key string) []string {
	return h[CanonicalHeaderKey(key)]
}

// Set replaces any values associated with key with the single value.
func (h Header) Set(key, value string) {
	h[CanonicalHeaderKey(key)] = []string{value}
}

// Add appends value to the values associated with key.
func (h Header) Add(key, value string) {
	key = CanonicalHeaderKey(key)
	h[key] = append(h[key], value)
}

// Del deletes the values associated with key.
func (h Header) Del(key string) {
	delete(h, CanonicalHeaderKey(key))
}

// Clone returns a deep copy of h, or nil if h is nil.
func (h Header) Clone() Header {
	if h == nil {
		return nil
	}
	c := make(Header, len(h))
	for k, v := range h {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// CanonicalHeaderKey returns the canonical form of the header name s, as
// net/textproto.CanonicalMIMEHeaderKey does: the first letter and every
// letter following a hyphen upper case, the rest lower case
// ("accept-encoding" becomes "Accept-Encoding"). A name containing a space
// or any byte that is not valid in a header name is returned unchanged.
func CanonicalHeaderKey(s string) string {
	upper := true
	canonical := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !validHeaderNameByte(c) {
			return s
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canonical = false
		}
		upper = c == '-'
	}
	if canonical {
		return s
	}
	b := []byte(s)
	upper = true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		} else if !upper && 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	return string(b)
}

// validHeaderNameByte reports whether c may appear in a header name (an
// RFC 9110 token character).
func validHeaderNameByte(c byte) bool { return tokenTable[c] }

// tokenTable[c] is whether c is an RFC 9110 token character. A table
// lookup is much cheaper than a switch in wasm.
var tokenTable = func() (t [256]bool) {
	for c := range t {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			t[c] = true
		}
		switch c {
		case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
			t[c] = true
		}
	}
	return t
}()
