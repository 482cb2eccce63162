/*
 * cel.h — write a Celluster reactor cell in C (Cell ABI v1.1).
 *
 * One self-contained header for clang targeting wasm32-wasi with wasi-libc.
 * The contract it implements is sdk/cell/README.md: the request and
 * response envelopes (§3, byte for byte as pluginapi/cellabi encodes and
 * decodes them), the `cel` host imports (§4) and the reactor exports (§2).
 *
 * Use
 * ---
 * In exactly one .c file of the cell, define CEL_IMPLEMENTATION before the
 * include, and implement cel_serve:
 *
 *     #define CEL_IMPLEMENTATION
 *     #include "cel.h"
 *
 *     int cel_serve(const cel_request *req, cel_response *resp) {
 *         cel_header_add(resp, "Content-Type", "text/plain");
 *         cel_printf(resp, "hi from %.*s\n", CEL_STR_ARG(req->path));
 *         return 0;
 *     }
 *
 * Build (Debian: clang-16, lld-16, wasi-libc, libclang-rt-16-dev-wasm32):
 *
 *     clang-16 --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor \
 *         -I sdk/c -o hi.wasm hi.c
 *
 * -mexec-model=reactor makes the toolchain export _initialize (which runs C
 * constructors) instead of _start; wasm-ld exports `memory` by default; the
 * export_name attributes below export cel_alloc, cel_handle and
 * cel_abi_version_1_1, so no -Wl,--export flags are needed.
 *
 * Other .c files of the same cell include cel.h without CEL_IMPLEMENTATION
 * and get the types, the codecs and the host-import wrappers, all of them
 * static inline.
 *
 * What CEL_IMPLEMENTATION adds: the exports, the buffers shared with the
 * host, and the loop of one request: decode the envelope (a malformed one is
 * answered 400 and logged, never read out of bounds), call cel_serve, encode
 * the response. So a cell built with it always imports cel.log; the other
 * imports only when the cell calls their wrappers. A reactor instance serves one request at a time (the host
 * never calls it concurrently), and everything in linear memory — globals,
 * the heap — survives from one request to the next.
 *
 * Strings are views (cel_str: pointer and length), not NUL-terminated, and
 * point into the request buffer: they are valid only until cel_serve
 * returns. Print one with printf("%.*s", CEL_STR_ARG(s)).
 */
#ifndef CEL_H
#define CEL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Constants of the ABI                                                */
/* ------------------------------------------------------------------ */

/* CEL_VERSION is the first byte of every envelope. */
#define CEL_VERSION 1
/* CEL_FLAG_META is bit 0 of a request's flags: the v1.1 metadata (host,
 * remote_addr, scheme, proto, url) follows the body. */
#define CEL_FLAG_META 0x01
/* A response status must be within CEL_MIN_STATUS..CEL_MAX_STATUS. */
#define CEL_MIN_STATUS 100
#define CEL_MAX_STATUS 999

/* Log levels of cel.log. */
enum {
    CEL_LOG_DEBUG = 0,
    CEL_LOG_INFO = 1,
    CEL_LOG_WARN = 2,
    CEL_LOG_ERROR = 3
};

/* Results of cel.signal (cel_signal). */
enum {
    CEL_SIGNAL_OK = 0,          /* published */
    CEL_SIGNAL_NOT_GRANTED = 1, /* the intent needs `grant signal` */
    CEL_SIGNAL_BAD_NAME = 2,    /* [a-z][a-z0-9._]*, at most 64 bytes, not one the node publishes */
    CEL_SIGNAL_RATE_LIMITED = 3,/* 50 a second per cell, bursts of 100: dropped */
    CEL_SIGNAL_TOO_MANY = 4     /* 32 names per cell */
};

/* Results of the decoders. */
enum {
    CEL_OK = 0,
    CEL_EMALFORMED = -1, /* the envelope breaks the ABI: see cel_decode_error */
    CEL_EHEADERS = -2,   /* well formed, but more headers than the array holds */
    CEL_ENOMEM = -3      /* an allocation failed */
};

/* ------------------------------------------------------------------ */
/* Types                                                               */
/* ------------------------------------------------------------------ */

/* cel_str is a view of len bytes at ptr: not NUL-terminated, UTF-8 not
 * guaranteed. ptr may be NULL when len is 0. */
typedef struct cel_str {
    const char *ptr;
    uint32_t len;
} cel_str;

/* CEL_STR_ARG expands to the two printf arguments of "%.*s". */
#define CEL_STR_ARG(s) (int)(s).len, (s).ptr

/* cel_header is one header field. The host sends canonical names
 * (Content-Type), sorted by name; a name may repeat, values in order. */
typedef struct cel_header {
    cel_str name;
    cel_str value;
} cel_header;

/* cel_request is a decoded request envelope (§3). Every cel_str points into
 * the envelope's buffer. */
typedef struct cel_request {
    uint8_t flags;               /* 0 (v1) or CEL_FLAG_META (v1.1) */
    cel_str method;              /* e.g. "GET" */
    cel_str path;                /* full path, mount point included: "/greet/x" */
    cel_str query;               /* raw query without '?', still percent-encoded */
    uint32_t nheaders;
    const cel_header *headers;   /* nheaders of them */
    cel_str body;                /* the complete body */
    int has_meta;                /* flags & CEL_FLAG_META: the fields below are set */
    cel_str host;                /* the host the client asked for: "shop.example:8080" */
    cel_str remote_addr;         /* the client's "IP:port"; a caller's SPIFFE ID for cel.call */
    cel_str scheme;              /* "http", "https"; "cel" for cel.call */
    cel_str proto;               /* "HTTP/1.1", "HTTP/2.0", "HTTP/3.0", "cel.call" */
    cel_str url;                 /* "scheme://host/path?query" */
} cel_request;

/* cel_buf is a growable byte buffer (malloc'd). */
typedef struct cel_buf {
    uint8_t *ptr;
    uint32_t len, cap;
} cel_buf;

/* cel_response is the response cel_serve builds: set status (200 unless
 * changed), add headers with cel_header_add, write the body with cel_write,
 * cel_puts or cel_printf. Headers and body are copied in, so they may come
 * from temporary buffers. */
typedef struct cel_response {
    int status;
    /* private: the encoded header pairs, their count, the body, and whether
     * an allocation failed (the runtime then answers 500). */
    cel_buf hdrs;
    uint32_t nheaders;
    cel_buf body;
    int failed;
} cel_response;

/* cel_decode_error says why an envelope was rejected: the field and the
 * byte offset where it starts, as pluginapi/cellabi's errors do. */
typedef struct cel_decode_error {
    uint32_t offset;
    char msg[160];
} cel_decode_error;

/* cel_call_response is another cell's answer to cel_call. headers and body
 * point into the malloc'd envelope `raw`: free it with
 * cel_call_response_free. */
typedef struct cel_call_response {
    int status;
    uint32_t nheaders;
    cel_header *headers;
    cel_str body;
    uint8_t *raw;
} cel_call_response;

/* ------------------------------------------------------------------ */
/* The handler the cell's author implements                            */
/* ------------------------------------------------------------------ */

/* cel_serve handles one request. resp starts as status 200, no headers and
 * an empty body. Return 0 to send resp; any other value discards resp and
 * the runtime answers 500. req and everything it points to are valid only
 * until cel_serve returns. */
int cel_serve(const cel_request *req, cel_response *resp);

/* ------------------------------------------------------------------ */
/* Host imports (module "cel", §4). Raw signatures; prefer the typed   */
/* wrappers further down. Only what a cell calls is imported.          */
/* ------------------------------------------------------------------ */

#define CEL_IMPORT(name) __attribute__((import_module("cel"), import_name(name)))

/* cel.log(level, ptr, len): log memory[ptr..ptr+len] at level. */
CEL_IMPORT("log") void cel_host_log(int32_t level, const char *ptr, uint32_t len);
/* cel.now() -> wall-clock Unix nanoseconds. */
CEL_IMPORT("now") int64_t cel_host_now(void);
/* cel.call(target, req envelope) -> length of the response envelope. */
CEL_IMPORT("call") uint32_t cel_host_call(const char *target_ptr, uint32_t target_len,
                                          const uint8_t *req_ptr, uint32_t req_len);
/* cel.call_result(ptr): copy the last call's response envelope to ptr. */
CEL_IMPORT("call_result") void cel_host_call_result(uint8_t *ptr);
/* cel.signal(name, value) -> CEL_SIGNAL_*. */
CEL_IMPORT("signal") int32_t cel_host_signal(const char *name_ptr, uint32_t name_len, double value);

/*
 * ---- cel.kv: RESERVED -------------------------------------------------
 * The kv host imports (cel.kv_get / cel.kv_put, `grant kv`) are being added
 * to the host. Their declarations and typed wrappers go here, beside the
 * others, once sdk/cell/README.md §4 documents their signatures. Do not
 * declare them before: a module importing a function the node does not
 * provide is rejected at load.
 * -----------------------------------------------------------------------
 */

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

/* cel_pack packs a response location as cel_handle returns it:
 * ptr << 32 | len, both unsigned 32-bit. */
static inline int64_t cel_pack(uint32_t ptr, uint32_t len) {
    return (int64_t)(((uint64_t)ptr << 32) | (uint64_t)len);
}
static inline uint32_t cel_unpack_ptr(int64_t packed) { return (uint32_t)((uint64_t)packed >> 32); }
static inline uint32_t cel_unpack_len(int64_t packed) { return (uint32_t)(uint64_t)packed; }

/* cel_cstr views a NUL-terminated string. */
static inline cel_str cel_cstr(const char *s) {
    cel_str r;
    r.ptr = s;
    r.len = s ? (uint32_t)strlen(s) : 0;
    return r;
}

/* cel_str_eq: s equals the NUL-terminated lit, byte for byte. */
static inline int cel_str_eq(cel_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

static inline int cel__lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* cel_str_eq_fold: s equals lit, ASCII case-insensitively. */
static inline int cel_str_eq_fold(cel_str s, const char *lit) {
    size_t n = strlen(lit);
    if (s.len != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (cel__lower((unsigned char)s.ptr[i]) != cel__lower((unsigned char)lit[i])) return 0;
    return 1;
}

/* cel_str_has_prefix: s starts with lit. */
static inline int cel_str_has_prefix(cel_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len >= n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

/* cel_request_header returns the first value of the header name (compared
 * case-insensitively); ptr is NULL when there is none. */
static inline cel_str cel_request_header(const cel_request *req, const char *name) {
    for (uint32_t i = 0; i < req->nheaders; i++)
        if (cel_str_eq_fold(req->headers[i].name, name)) return req->headers[i].value;
    cel_str none = {NULL, 0};
    return none;
}

static inline int cel__unhex(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = cel__lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* cel_unescape percent-decodes src as a query component ('+' is a space)
 * into dst, which holds cap bytes, and NUL-terminates it. Returns the
 * decoded length, or -1 if src is badly escaped or does not fit (cap must
 * leave room for the NUL). */
static inline int cel_unescape(cel_str src, char *dst, size_t cap) {
    size_t n = 0;
    for (uint32_t i = 0; i < src.len; i++) {
        int c = (unsigned char)src.ptr[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (src.len - i < 3) return -1;
            int hi = cel__unhex((unsigned char)src.ptr[i + 1]), lo = cel__unhex((unsigned char)src.ptr[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = hi << 4 | lo;
            i += 2;
        }
        if (n + 1 >= cap) return -1;
        dst[n++] = (char)c;
    }
    if (cap == 0) return -1;
    dst[n] = 0;
    return (int)n;
}

/* cel_query_param finds the first key=value pair of query whose key (not
 * unescaped) is key, and sets *value to its raw, still-escaped value.
 * Returns 1 when found (a bare "key" has an empty value), 0 otherwise. */
static inline int cel_query_param(cel_str query, const char *key, cel_str *value) {
    size_t klen = strlen(key);
    uint32_t i = 0;
    while (i <= query.len && query.len > 0) {
        uint32_t end = i;
        while (end < query.len && query.ptr[end] != '&' && query.ptr[end] != ';') end++;
        uint32_t eq = i;
        while (eq < end && query.ptr[eq] != '=') eq++;
        if (eq - i == klen && memcmp(query.ptr + i, key, klen) == 0) {
            value->ptr = query.ptr + (eq < end ? eq + 1 : end);
            value->len = eq < end ? end - eq - 1 : 0;
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* cel_query_value is cel_query_param, unescaped into dst (cap bytes, NUL
 * included). Returns the length, -1 when key is absent, -2 when the value is
 * badly escaped or too long for dst. */
static inline int cel_query_value(const cel_request *req, const char *key, char *dst, size_t cap) {
    cel_str raw;
    if (!cel_query_param(req->query, key, &raw)) return -1;
    int n = cel_unescape(raw, dst, cap);
    return n < 0 ? -2 : n;
}

/* ------------------------------------------------------------------ */
/* Little-endian reading with bounds checks                            */
/* ------------------------------------------------------------------ */

static inline uint32_t cel__get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void cel__put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* cel__reader walks an envelope; every read is checked against len. */
typedef struct cel__reader {
    const uint8_t *b;
    uint32_t len, off;
    cel_decode_error *err;
} cel__reader;

static inline int cel__fail(cel__reader *r, uint32_t off, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline int cel__fail(cel__reader *r, uint32_t off, const char *field, const char *fmt, ...) {
    if (r->err) {
        r->err->offset = off;
        int n = snprintf(r->err->msg, sizeof r->err->msg, "%s: ", field);
        if (n < 0) n = 0;
        if ((size_t)n < sizeof r->err->msg) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->err->msg + n, sizeof r->err->msg - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return CEL_EMALFORMED;
}

/* cel__span reads one str or bytes field (u32 length, then the bytes). */
static inline int cel__span(cel__reader *r, const char *field, cel_str *out) {
    uint32_t left = r->len - r->off;
    if (left < 4)
        return cel__fail(r, r->off, field, "need 4 bytes for the length at offset %u, have %u",
                         (unsigned)r->off, (unsigned)left);
    uint32_t n = cel__get_u32(r->b + r->off);
    if (n > left - 4)
        return cel__fail(r, r->off, field, "length %u at offset %u exceeds the %u bytes left",
                         (unsigned)n, (unsigned)r->off, (unsigned)(left - 4));
    if (out) {
        out->ptr = (const char *)(r->b + r->off + 4);
        out->len = n;
    }
    r->off += 4 + n;
    return CEL_OK;
}

/* cel__headers reads nheaders and the header pairs into hdrs (room for
 * max). *count is set to nheaders even when it exceeds max. */
static inline int cel__headers(cel__reader *r, const char *msg, cel_header *hdrs, uint32_t max,
                               uint32_t *count) {
    char field[48];
    uint32_t left = r->len - r->off;
    if (left < 4) {
        snprintf(field, sizeof field, "%s nheaders", msg);
        return cel__fail(r, r->off, field, "need 4 bytes for the nheaders u32 at offset %u, have %u",
                         (unsigned)r->off, (unsigned)left);
    }
    uint32_t n = cel__get_u32(r->b + r->off);
    /* Each header takes at least 8 bytes, and the body's length 4 more. */
    uint32_t room = left >= 8 ? (left - 8) / 8 : 0;
    if (n > room) {
        snprintf(field, sizeof field, "%s nheaders", msg);
        return cel__fail(r, r->off, field, "nheaders %u at offset %u is more than the %u bytes left can hold (at most %u)",
                         (unsigned)n, (unsigned)r->off, (unsigned)(left - 4), (unsigned)room);
    }
    r->off += 4;
    *count = n;
    for (uint32_t i = 0; i < n; i++) {
        cel_header h;
        snprintf(field, sizeof field, "%s header %u name", msg, (unsigned)i);
        if (cel__span(r, field, &h.name) != CEL_OK) return CEL_EMALFORMED;
        snprintf(field, sizeof field, "%s header %u value", msg, (unsigned)i);
        if (cel__span(r, field, &h.value) != CEL_OK) return CEL_EMALFORMED;
        if (i < max && hdrs) hdrs[i] = h;
    }
    return CEL_OK;
}

/* ------------------------------------------------------------------ */
/* Decoders                                                            */
/* ------------------------------------------------------------------ */

/* cel_decode_request decodes the request envelope buf[0..len) into req,
 * filling hdrs (room for max headers). It accepts exactly what
 * pluginapi/cellabi's DecodeRequest accepts and checks every length before
 * reading.
 *
 * Returns CEL_OK; CEL_EMALFORMED with *err (may be NULL) saying why;
 * CEL_EHEADERS when the envelope is well formed but holds more headers than
 * max: req->nheaders is then the count, so the caller can make room and
 * decode again. */
static inline int cel_decode_request(const uint8_t *buf, size_t len, cel_request *req, cel_header *hdrs,
                                     uint32_t max, cel_decode_error *err) {
    cel__reader r = {buf, 0, 0, err};
    if (len > 0xFFFFFFFFu) return cel__fail(&r, 0, "request", "envelope of %zu bytes is over 4 GiB", len);
    r.len = (uint32_t)len;
    if (r.len < 1) return cel__fail(&r, 0, "request version", "need 1 bytes for the version at offset 0, have 0");
    if (buf[0] != CEL_VERSION)
        return cel__fail(&r, 0, "request version", "version %u at offset 0 is not supported, want %d",
                         (unsigned)buf[0], CEL_VERSION);
    if (r.len < 2) return cel__fail(&r, 1, "request flags", "need 1 bytes for the flags at offset 1, have 0");
    if (buf[1] != 0 && buf[1] != CEL_FLAG_META)
        return cel__fail(&r, 1, "request flags",
                         "flags 0x%02x at offset 1 must be 0 or 0x01 (metadata follows the body, v1.1) in version %d",
                         (unsigned)buf[1], CEL_VERSION);
    if (r.len < 4)
        return cel__fail(&r, 2, "request reserved", "need 2 bytes for the reserved u16 at offset 2, have %u",
                         (unsigned)(r.len - 2));
    if (buf[2] != 0 || buf[3] != 0)
        return cel__fail(&r, 2, "request reserved", "reserved 0x%04x at offset 2 must be 0 in version %d",
                         (unsigned)(buf[2] | buf[3] << 8), CEL_VERSION);
    cel_request q;
    memset(&q, 0, sizeof q);
    q.flags = buf[1];
    q.has_meta = (buf[1] & CEL_FLAG_META) != 0;
    r.off = 4;
    if (cel__span(&r, "request method", &q.method) != CEL_OK) return CEL_EMALFORMED;
    if (cel__span(&r, "request path", &q.path) != CEL_OK) return CEL_EMALFORMED;
    if (cel__span(&r, "request query", &q.query) != CEL_OK) return CEL_EMALFORMED;
    if (cel__headers(&r, "request", hdrs, max, &q.nheaders) != CEL_OK) return CEL_EMALFORMED;
    if (cel__span(&r, "request body", &q.body) != CEL_OK) return CEL_EMALFORMED;
    if (q.has_meta) {
        if (cel__span(&r, "request meta host", &q.host) != CEL_OK) return CEL_EMALFORMED;
        if (cel__span(&r, "request meta remote address", &q.remote_addr) != CEL_OK) return CEL_EMALFORMED;
        if (cel__span(&r, "request meta scheme", &q.scheme) != CEL_OK) return CEL_EMALFORMED;
        if (cel__span(&r, "request meta proto", &q.proto) != CEL_OK) return CEL_EMALFORMED;
        if (cel__span(&r, "request meta url", &q.url) != CEL_OK) return CEL_EMALFORMED;
    }
    if (r.off != r.len)
        return cel__fail(&r, r.off, "request", "%u trailing bytes at offset %u after the %s",
                         (unsigned)(r.len - r.off), (unsigned)r.off, q.has_meta ? "metadata" : "body");
    q.headers = hdrs;
    *req = q;
    return q.nheaders > max ? CEL_EHEADERS : CEL_OK;
}

/* cel_decode_response decodes a response envelope (what cel.call answers)
 * into resp, filling hdrs (room for max). Same results as
 * cel_decode_request. resp->raw is left alone. */
static inline int cel_decode_response(const uint8_t *buf, size_t len, cel_call_response *resp, cel_header *hdrs,
                                      uint32_t max, cel_decode_error *err) {
    cel__reader r = {buf, 0, 0, err};
    if (len > 0xFFFFFFFFu) return cel__fail(&r, 0, "response", "envelope of %zu bytes is over 4 GiB", len);
    r.len = (uint32_t)len;
    if (r.len < 1) return cel__fail(&r, 0, "response version", "need 1 bytes for the version at offset 0, have 0");
    if (buf[0] != CEL_VERSION)
        return cel__fail(&r, 0, "response version", "version %u at offset 0 is not supported, want %d",
                         (unsigned)buf[0], CEL_VERSION);
    if (r.len < 2) return cel__fail(&r, 1, "response flags", "need 1 bytes for the flags at offset 1, have 0");
    if (buf[1] != 0)
        return cel__fail(&r, 1, "response flags", "flags 0x%02x at offset 1 must be 0 in version %d",
                         (unsigned)buf[1], CEL_VERSION);
    if (r.len < 4)
        return cel__fail(&r, 2, "response status", "need 2 bytes for the status u16 at offset 2, have %u",
                         (unsigned)(r.len - 2));
    int status = buf[2] | buf[3] << 8;
    if (status < CEL_MIN_STATUS || status > CEL_MAX_STATUS)
        return cel__fail(&r, 2, "response status", "status %d at offset 2 is outside %d..%d", status,
                         CEL_MIN_STATUS, CEL_MAX_STATUS);
    r.off = 4;
    uint32_t n = 0;
    cel_str body;
    if (cel__headers(&r, "response", hdrs, max, &n) != CEL_OK) return CEL_EMALFORMED;
    if (cel__span(&r, "response body", &body) != CEL_OK) return CEL_EMALFORMED;
    if (r.off != r.len)
        return cel__fail(&r, r.off, "response", "%u trailing bytes at offset %u after the body",
                         (unsigned)(r.len - r.off), (unsigned)r.off);
    resp->status = status;
    resp->nheaders = n;
    resp->headers = hdrs;
    resp->body = body;
    return n > max ? CEL_EHEADERS : CEL_OK;
}

/* ------------------------------------------------------------------ */
/* Growable buffers and the response builder                           */
/* ------------------------------------------------------------------ */

/* cel_buf_reserve makes room for n more bytes. Returns 0, or -1 when it
 * cannot (the buffer is left as it was). */
static inline int cel_buf_reserve(cel_buf *b, size_t n) {
    if (n <= (size_t)(b->cap - b->len)) return 0;
    if (n > 0xFFFFFFFFu - b->len) return -1;
    uint64_t want = (uint64_t)b->len + n, cap = b->cap ? b->cap : 64;
    while (cap < want) cap *= 2;
    if (cap > 0xFFFFFFFFu) cap = want;
    uint8_t *p = (uint8_t *)realloc(b->ptr, (size_t)cap);
    if (!p) return -1;
    b->ptr = p;
    b->cap = (uint32_t)cap;
    return 0;
}

static inline int cel_buf_append(cel_buf *b, const void *p, size_t n) {
    if (cel_buf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->ptr + b->len, p, n);
    b->len += (uint32_t)n;
    return 0;
}

static inline int cel_buf_append_str(cel_buf *b, const void *p, size_t n) {
    if (n > 0xFFFFFFFFu || cel_buf_reserve(b, 4 + n) != 0) return -1;
    cel__put_u32(b->ptr + b->len, (uint32_t)n);
    b->len += 4;
    return cel_buf_append(b, p, n);
}

static inline void cel_buf_free(cel_buf *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

/* cel_response_reset empties resp (status 200, no headers, no body),
 * keeping its buffers for reuse. */
static inline void cel_response_reset(cel_response *resp) {
    resp->status = 200;
    resp->hdrs.len = 0;
    resp->nheaders = 0;
    resp->body.len = 0;
    resp->failed = 0;
}

/* cel_header_addn adds a header field (names are sent as given: use the
 * canonical form, e.g. "Content-Type"). Returns 0, or -1 when out of
 * memory (the response then becomes a 500). */
static inline int cel_header_addn(cel_response *resp, const char *name, size_t nlen, const char *value,
                                  size_t vlen) {
    uint32_t mark = resp->hdrs.len;
    if (cel_buf_append_str(&resp->hdrs, name, nlen) != 0 || cel_buf_append_str(&resp->hdrs, value, vlen) != 0) {
        resp->hdrs.len = mark;
        resp->failed = 1;
        return -1;
    }
    resp->nheaders++;
    return 0;
}

static inline int cel_header_add(cel_response *resp, const char *name, const char *value) {
    return cel_header_addn(resp, name, strlen(name), value, strlen(value));
}

/* cel_write appends n bytes to the body. Returns 0 or -1 (out of memory). */
static inline int cel_write(cel_response *resp, const void *p, size_t n) {
    if (cel_buf_append(&resp->body, p, n) != 0) {
        resp->failed = 1;
        return -1;
    }
    return 0;
}

static inline int cel_puts(cel_response *resp, const char *s) { return cel_write(resp, s, strlen(s)); }

static inline int cel_write_str(cel_response *resp, cel_str s) { return cel_write(resp, s.ptr, s.len); }

/* cel_printf appends printf-formatted text to the body. */
static inline int cel_printf(cel_response *resp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline int cel_printf(cel_response *resp, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || cel_buf_reserve(&resp->body, (size_t)n + 1) != 0) {
        resp->failed = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf((char *)resp->body.ptr + resp->body.len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    resp->body.len += (uint32_t)n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Encoders                                                            */
/* ------------------------------------------------------------------ */

/* cel_response_size is the size of resp's envelope; 0 if over 4 GiB. */
static inline uint32_t cel_response_size(const cel_response *resp) {
    uint64_t n = 8 + (uint64_t)resp->hdrs.len + 4 + resp->body.len;
    return n > 0xFFFFFFFFu ? 0 : (uint32_t)n;
}

/* cel_encode_response writes resp's envelope (§3) to dst, which holds cap
 * bytes. Returns its size, or 0 when it does not fit, its status is outside
 * 100..999, or it is over 4 GiB. */
static inline uint32_t cel_encode_response(const cel_response *resp, uint8_t *dst, size_t cap) {
    uint32_t n = cel_response_size(resp);
    if (n == 0 || n > cap || resp->status < CEL_MIN_STATUS || resp->status > CEL_MAX_STATUS) return 0;
    dst[0] = CEL_VERSION;
    dst[1] = 0;
    dst[2] = (uint8_t)resp->status;
    dst[3] = (uint8_t)(resp->status >> 8);
    cel__put_u32(dst + 4, resp->nheaders);
    if (resp->hdrs.len) memcpy(dst + 8, resp->hdrs.ptr, resp->hdrs.len);
    cel__put_u32(dst + 8 + resp->hdrs.len, resp->body.len);
    if (resp->body.len) memcpy(dst + 12 + resp->hdrs.len, resp->body.ptr, resp->body.len);
    return n;
}

/* cel_encode_request appends the envelope of req to out (flags 0 — a v1
 * envelope — unless req->has_meta). req->headers must hold
 * req->nheaders fields. Returns 0 or -1 (out of memory). */
static inline int cel_encode_request(const cel_request *req, cel_buf *out) {
    uint8_t prefix[4] = {CEL_VERSION, (uint8_t)(req->has_meta ? CEL_FLAG_META : 0), 0, 0};
    uint8_t n[4];
    cel__put_u32(n, req->nheaders);
    if (cel_buf_append(out, prefix, 4) || cel_buf_append_str(out, req->method.ptr, req->method.len) ||
        cel_buf_append_str(out, req->path.ptr, req->path.len) ||
        cel_buf_append_str(out, req->query.ptr, req->query.len) || cel_buf_append(out, n, 4))
        return -1;
    for (uint32_t i = 0; i < req->nheaders; i++)
        if (cel_buf_append_str(out, req->headers[i].name.ptr, req->headers[i].name.len) ||
            cel_buf_append_str(out, req->headers[i].value.ptr, req->headers[i].value.len))
            return -1;
    if (cel_buf_append_str(out, req->body.ptr, req->body.len)) return -1;
    if (req->has_meta) {
        const cel_str *m[5] = {&req->host, &req->remote_addr, &req->scheme, &req->proto, &req->url};
        for (int i = 0; i < 5; i++)
            if (cel_buf_append_str(out, m[i]->ptr, m[i]->len)) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Typed wrappers of the host imports                                  */
/* ------------------------------------------------------------------ */

/* cel_log logs msg at level (CEL_LOG_*); the node adds the cell's name. */
static inline void cel_log(int level, const char *msg) { cel_host_log(level, msg, (uint32_t)strlen(msg)); }

static inline void cel_logn(int level, const char *msg, size_t n) { cel_host_log(level, msg, (uint32_t)n); }

/* cel_logf logs a printf-formatted line (cut at 1 KiB). */
static inline void cel_logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void cel_logf(int level, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    cel_host_log(level, line, (uint32_t)((size_t)n < sizeof line ? (size_t)n : sizeof line - 1));
}

/* cel_now is the wall-clock time in Unix nanoseconds. */
static inline int64_t cel_now(void) { return cel_host_now(); }

/* cel_signal publishes a reading of the cell's own signal name (needs
 * `grant signal`). Returns a CEL_SIGNAL_* code. */
static inline int cel_signal(const char *name, double value) {
    return cel_host_signal(name, (uint32_t)strlen(name), value);
}

/* cel_call_response_free releases what cel_call allocated. */
static inline void cel_call_response_free(cel_call_response *r) {
    free(r->headers);
    free(r->raw);
    memset(r, 0, sizeof *r);
}

/* cel_call sends a request to another cell as this cell (needs `grant call
 * cell:TARGET`, and the target's `allow from`). target is "NAME" or
 * "cell:NAME"; path_query is the target's path and query, e.g.
 * "/hello?name=x"; headers may be NULL when nheaders is 0, body NULL when
 * body_len is 0. Refusals and failures are responses too (403, 404, 502
 * with the reason in the body).
 *
 * Returns CEL_OK with *out filled (free it with cel_call_response_free),
 * CEL_ENOMEM, or CEL_EMALFORMED when the answer is not a valid envelope
 * (*err, which may be NULL, says why). */
static inline int cel_call(const char *target, const char *method, const char *path_query,
                           const cel_header *headers, uint32_t nheaders, const void *body, size_t body_len,
                           cel_call_response *out, cel_decode_error *err) {
    memset(out, 0, sizeof *out);
    cel_request q;
    memset(&q, 0, sizeof q);
    q.method = cel_cstr(method);
    const char *qm = strchr(path_query, '?');
    q.path.ptr = path_query;
    q.path.len = (uint32_t)(qm ? (size_t)(qm - path_query) : strlen(path_query));
    if (qm) q.query = cel_cstr(qm + 1);
    q.headers = headers;
    q.nheaders = nheaders;
    q.body.ptr = (const char *)body;
    q.body.len = (uint32_t)body_len;
    cel_buf env = {NULL, 0, 0};
    if (body_len > 0xFFFFFFFFu || cel_encode_request(&q, &env) != 0) {
        cel_buf_free(&env);
        return CEL_ENOMEM;
    }
    uint32_t n = cel_host_call(target, (uint32_t)strlen(target), env.ptr, env.len);
    cel_buf_free(&env);
    /* The host copies exactly n bytes; a buffer of at least 1 byte keeps
     * the pointer valid when n is 0. */
    uint8_t *raw = (uint8_t *)malloc(n ? n : 1);
    if (!raw) return CEL_ENOMEM;
    cel_host_call_result(raw);
    cel_call_response r;
    memset(&r, 0, sizeof r);
    int rc = cel_decode_response(raw, n, &r, NULL, 0, err);
    if (rc == CEL_EHEADERS) {
        r.headers = (cel_header *)calloc(r.nheaders, sizeof(cel_header));
        if (!r.headers) {
            free(raw);
            return CEL_ENOMEM;
        }
        rc = cel_decode_response(raw, n, &r, r.headers, r.nheaders, err);
    }
    if (rc != CEL_OK) {
        free(r.headers);
        free(raw);
        return rc;
    }
    r.raw = raw;
    *out = r;
    return CEL_OK;
}

/* cel_call_header returns the first value of a response header (compared
 * case-insensitively); ptr is NULL when there is none. */
static inline cel_str cel_call_header(const cel_call_response *r, const char *name) {
    for (uint32_t i = 0; i < r->nheaders; i++)
        if (cel_str_eq_fold(r->headers[i].name, name)) return r->headers[i].value;
    cel_str none = {NULL, 0};
    return none;
}

/* ------------------------------------------------------------------ */
/* The runtime: exports and the request loop (CEL_IMPLEMENTATION)      */
/* ------------------------------------------------------------------ */
#ifdef CEL_IMPLEMENTATION

/* CEL_KEEP_BYTES is the largest buffer kept for reuse between requests;
 * larger ones are freed so that one big request does not pin its memory
 * (linear memory itself never shrinks). */
#ifndef CEL_KEEP_BYTES
#define CEL_KEEP_BYTES (1u << 20)
#endif

/* The state shared with the host. The request buffer belongs to the host
 * from cel_alloc until cel_handle returns; the response envelope stays
 * valid until the next cel_alloc. */
static uint8_t *cel__req_buf;
static uint32_t cel__req_cap;
static cel_header *cel__hdrs;
static uint32_t cel__hdrs_cap;
static cel_response cel__resp;
static uint8_t *cel__out;
static uint32_t cel__out_cap;

static void cel__shrink(cel_buf *b) {
    if (b->cap > CEL_KEEP_BYTES) cel_buf_free(b);
}

/* cel_abi_version_1_1 is never called: its export tells the node this cell
 * reads v1.1 request envelopes (with the metadata after the body). */
__attribute__((export_name("cel_abi_version_1_1"))) void cel_abi_version_1_1(void) {}

/* cel_alloc returns size writable bytes for the request envelope. Out of
 * memory it traps: the host answers 500 and replaces the instance (a NULL
 * pointer would be address 0, a valid place in linear memory to scribble
 * over). */
__attribute__((export_name("cel_alloc"))) uint8_t *cel_alloc(uint32_t size) {
    if (cel__out_cap > CEL_KEEP_BYTES) {
        free(cel__out);
        cel__out = NULL;
        cel__out_cap = 0;
    }
    cel__shrink(&cel__resp.hdrs);
    cel__shrink(&cel__resp.body);
    if (cel__req_cap < size || cel__req_cap > CEL_KEEP_BYTES) {
        free(cel__req_buf);
        cel__req_cap = size > 64 ? size : 64;
        cel__req_buf = (uint8_t *)malloc(cel__req_cap);
        if (!cel__req_buf) __builtin_trap();
    }
    return cel__req_buf;
}

/* cel__error replaces the response with a plain-text error. */
static void cel__error(int status, const char *msg) {
    cel_response_reset(&cel__resp);
    cel__resp.status = status;
    cel_header_add(&cel__resp, "Content-Type", "text/plain; charset=utf-8");
    cel_puts(&cel__resp, msg);
    cel_puts(&cel__resp, "\n");
}

/* cel__finish encodes cel__resp into the response buffer; packed location. */
static int64_t cel__finish(void) {
    static uint8_t fallback[] = {1, 0, 0xf4, 0x01, 0, 0, 0, 0, 0, 0, 0, 0}; /* 500, empty */
    if (cel__resp.failed) cel__error(500, "out of memory");
    uint32_t n = cel_response_size(&cel__resp);
    if (n == 0) return cel_pack((uint32_t)(uintptr_t)fallback, sizeof fallback);
    if (cel__out_cap < n) {
        free(cel__out);
        cel__out = (uint8_t *)malloc(n);
        cel__out_cap = cel__out ? n : 0;
        if (!cel__out) return cel_pack((uint32_t)(uintptr_t)fallback, sizeof fallback);
    }
    n = cel_encode_response(&cel__resp, cel__out, cel__out_cap);
    if (n == 0) return cel_pack((uint32_t)(uintptr_t)fallback, sizeof fallback);
    return cel_pack((uint32_t)(uintptr_t)cel__out, n);
}

/* cel_handle decodes the request envelope at ptr (the buffer cel_alloc
 * returned), calls cel_serve and returns ptr << 32 | len of the response. */
__attribute__((export_name("cel_handle"))) int64_t cel_handle(uint8_t *ptr, uint32_t len) {
    cel_response_reset(&cel__resp);
    if (ptr != cel__req_buf || ptr == NULL || len > cel__req_cap) {
        cel_log(CEL_LOG_ERROR, "cel_handle: the request is not in the buffer cel_alloc returned");
        cel__error(500, "cel_handle: the request is not in the buffer cel_alloc returned");
        return cel__finish();
    }
    cel_request req;
    cel_decode_error err;
    int rc = cel_decode_request(ptr, len, &req, cel__hdrs, cel__hdrs_cap, &err);
    if (rc == CEL_EHEADERS) {
        cel_header *h = (cel_header *)malloc((size_t)req.nheaders * sizeof(cel_header));
        if (!h) {
            cel__error(500, "out of memory for the request's headers");
            return cel__finish();
        }
        free(cel__hdrs);
        cel__hdrs = h;
        cel__hdrs_cap = req.nheaders;
        rc = cel_decode_request(ptr, len, &req, cel__hdrs, cel__hdrs_cap, &err);
    }
    if (rc != CEL_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "malformed request envelope: %s", err.msg);
        cel_log(CEL_LOG_WARN, msg);
        cel__error(400, msg);
        return cel__finish();
    }
    if (cel_serve(&req, &cel__resp) != 0) {
        cel__error(500, "internal error");
    } else if (cel__resp.status < CEL_MIN_STATUS || cel__resp.status > CEL_MAX_STATUS) {
        cel_logf(CEL_LOG_ERROR, "cel_serve set status %d, outside %d..%d", cel__resp.status, CEL_MIN_STATUS,
                 CEL_MAX_STATUS);
        cel__error(500, "the cell set an invalid status");
    }
    /* Keep the headers array from growing without bound after one request
     * with very many headers. */
    if ((size_t)cel__hdrs_cap * sizeof(cel_header) > CEL_KEEP_BYTES) {
        free(cel__hdrs);
        cel__hdrs = NULL;
        cel__hdrs_cap = 0;
    }
    return cel__finish();
}

#endif /* CEL_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* CEL_H */
