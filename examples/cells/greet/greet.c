/*
 * greet is a reactor cell written in C with sdk/c/cel.h and wasi-libc.
 *
 *   GET /greet?name=you      Hello, you!  then what the cell was asked:
 *                            method, path, query, host, scheme, client,
 *                            protocol, URL (ABI v1.1 metadata), the number
 *                            of headers and of requests this instance served
 *   GET /greet/hello?name=x  asks the hello cell through cel.call and
 *                            passes its answer on (greet.intent grants the
 *                            call; hello's intent must allow cell:greet)
 *
 * Every request is logged through cel.log. The count of requests kept in a
 * global shows that a reactor's memory lives from one request to the next.
 *
 * Build it (make cells does) with
 *
 *   clang-16 --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor \
 *       -Wall -Wextra -Werror -I sdk/c -o greet.wasm examples/cells/greet/greet.c
 */
#define CEL_IMPLEMENTATION
#include "cel.h"

/* served counts the requests this instance answered. */
static unsigned long served;

/* MAX_NAME bounds the name greeted, in bytes after unescaping. */
#define MAX_NAME 256

static void meta_line(cel_response *resp, const char *label, cel_str v) {
    cel_printf(resp, "%s: %.*s\n", label, CEL_STR_ARG(v));
}

/* via_hello calls the hello cell with the same query and answers what it
 * said, status and body. */
static int via_hello(const cel_request *req, cel_response *resp) {
    char path[64 + 4096];
    if (req->query.len > 4096) {
        resp->status = 414;
        cel_header_add(resp, "Content-Type", "text/plain; charset=utf-8");
        cel_puts(resp, "query too long\n");
        return 0;
    }
    snprintf(path, sizeof path, "/hello%s%.*s", req->query.len ? "?" : "", CEL_STR_ARG(req->query));
    cel_call_response r;
    cel_decode_error err;
    int rc = cel_call("cell:hello", "GET", path, NULL, 0, NULL, 0, &r, &err);
    if (rc != CEL_OK) {
        cel_logf(CEL_LOG_ERROR, "cel.call hello: %s", rc == CEL_ENOMEM ? "out of memory" : err.msg);
        resp->status = 502;
        cel_header_add(resp, "Content-Type", "text/plain; charset=utf-8");
        cel_puts(resp, "greet could not reach hello\n");
        return 0;
    }
    resp->status = r.status;
    cel_header_add(resp, "Content-Type", "text/plain; charset=utf-8");
    cel_printf(resp, "hello said (%d): %.*s", r.status, CEL_STR_ARG(r.body));
    cel_call_response_free(&r);
    return 0;
}

int cel_serve(const cel_request *req, cel_response *resp) {
    served++;
    cel_logf(CEL_LOG_INFO, "greet: %.*s %.*s from %.*s", CEL_STR_ARG(req->method), CEL_STR_ARG(req->path),
             CEL_STR_ARG(req->remote_addr));

    if (cel_str_eq(req->path, "/greet/hello")) return via_hello(req, resp);

    char name[MAX_NAME + 1];
    int n = cel_query_value(req, "name", name, sizeof name);
    if (n == -2) {
        resp->status = 400;
        cel_header_add(resp, "Content-Type", "text/plain; charset=utf-8");
        cel_printf(resp, "name: badly escaped or over %d bytes\n", MAX_NAME);
        return 0;
    }
    if (n <= 0) strcpy(name, "world");

    char count[24];
    snprintf(count, sizeof count, "%lu", served);
    cel_header_add(resp, "Content-Type", "text/plain; charset=utf-8");
    cel_header_add(resp, "X-Greet-Served", count);
    cel_printf(resp, "Hello, %s!\n", name);
    cel_printf(resp, "method: %.*s\n", CEL_STR_ARG(req->method));
    cel_printf(resp, "path: %.*s\n", CEL_STR_ARG(req->path));
    cel_printf(resp, "query: %.*s\n", CEL_STR_ARG(req->query));
    if (req->has_meta) {
        meta_line(resp, "host", req->host);
        meta_line(resp, "scheme", req->scheme);
        meta_line(resp, "client", req->remote_addr);
        meta_line(resp, "proto", req->proto);
        meta_line(resp, "url", req->url);
    } else {
        cel_puts(resp, "metadata: none (a v1 request)\n");
    }
    cel_str ua = cel_request_header(req, "User-Agent");
    if (ua.ptr) meta_line(resp, "user-agent", ua);
    cel_printf(resp, "headers: %u\n", (unsigned)req->nheaders);
    cel_printf(resp, "body: %u bytes\n", (unsigned)req->body.len);
    cel_printf(resp, "served: %lu\n", served);
    return 0;
}
