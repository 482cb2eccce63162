// Package cellabi defines version 1 (and its compatible minor version 1.1,
// see [Minor]) of the envelope that carries one HTTP
// request into a reactor cell and its response back out.
//
// The package is a leaf: it imports only encoding/binary, errors, fmt and
// strconv, because it is linked both into the celcore host and into every
// Go cell built for GOOS=wasip1 GOARCH=wasm, where each dependency costs
// binary size.
//
// # Wire format
//
// All integers are little-endian. A str and a bytes are both a u32 length
// followed by that many bytes; a str is not NUL-terminated and is not
// required to be UTF-8.
//
//	request  = u8  version   (= 1)
//	           u8  flags     (= 0; = FlagMeta in a v1.1 request with metadata)
//	           u16 reserved  (= 0)
//	           str method
//	           str path      full request path as received, e.g. "/hello/world"
//	           str query     raw query without the leading '?', may be empty
//	           u32 nheaders
//	           nheaders × (str name | str value)
//	           bytes body
//	           [flags = FlagMeta: str host | str remote_addr | str scheme | str proto | str url]
//
//	response = u8  version   (= 1)
//	           u8  flags     (= 0)
//	           u16 status    100..999
//	           u32 nheaders
//	           nheaders × (str name | str value)
//	           bytes body
//
// Header names are carried as sent; duplicates are allowed and their order
// is significant. The envelope is exactly as long as its fields: nothing may
// follow the body.
//
// # Decoding rules
//
// [DecodeRequest] and [DecodeResponse] reject, with a *[DecodeError] naming
// the field and the byte offset:
//
//   - a version other than [Version], flags other than 0 (and, for a
//     request, [FlagMeta]) or non-zero reserved bytes;
//   - a request with [FlagMeta] whose metadata is missing or truncated;
//   - a buffer too short for a fixed-size field or a length prefix;
//   - a str or bytes length larger than the bytes that remain;
//   - an nheaders larger than the remaining bytes could possibly hold
//     (every header takes at least 8 bytes and the body length 4 more);
//   - bytes after the body;
//   - a response status outside 100..999.
//
// Header indexes in error messages count from 0. The decoders copy
// everything they return, so the input buffer may be reused or freed (for
// example, wasm linear memory that the guest is about to overwrite)
// as soon as they return.
package cellabi
