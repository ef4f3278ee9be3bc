/* The glue's per-interpreter state (MY_CXT), set up once at BOOT: what
 * every request would otherwise look up or make again. Included by
 * Server.xs before the other headers. */
#ifndef PAGI_CXT_H
#define PAGI_CXT_H

/* Strings every request uses as hash keys or values, made shared hash
 * keys: a hash store or fetch with one skips hashing the key (and a fetch
 * compares key pointers), and a copy of one shares its string instead of
 * allocating one. */
#define PAGI_SHARED(X)                                                       \
    X(K_TYPE, "type") X(K_PAGI, "pagi") X(K_VERSION, "version")              \
    X(K_SPEC_VERSION, "spec_version") X(K_HTTP_VERSION, "http_version")      \
    X(K_SCHEME, "scheme") X(K_METHOD, "method") X(K_PATH, "path")            \
    X(K_RAW_PATH, "raw_path") X(K_QUERY_STRING, "query_string")              \
    X(K_ROOT_PATH, "root_path") X(K_HEADERS, "headers") X(K_CLIENT, "client") \
    X(K_SERVER, "server") X(K_EXTENSIONS, "extensions") X(K_STATE, "state")  \
    X(K_CONNECTION, "pagi.connection") X(K_TRANSPORT, "pagi.transport")      \
    X(K_LOOP, "loop") X(K_NATIVE, "native") X(K_ID, "id") X(K_HIGH, "high")  \
    X(K_LOW, "low") X(K_STARTED, "started") X(K_BODY, "body")                \
    X(K_MORE, "more") X(K_STATUS, "status") X(K_TRAILERS, "trailers")        \
    X(K_FILE, "file") X(K_FH, "fh") X(K_READY, "ready")                      \
    X(K_FAILURE, "failure") X(K_CANCELLED, "cancelled")                      \
    X(K_ON_DONE, "on_done") X(K_ON_GONE, "on_gone") X(K_APP, "app")          \
    X(K_ON_HIGH, "on_high") X(K_ON_DRAIN, "on_drain")                        \
    X(K_VALIDATE, "validate_events") X(K_RETIRE, "_retire_after")            \
    X(K_LOOP_CACHE, "loop_cache") X(K_HIGH_MARK, "write_high_watermark")     \
    X(K_LOW_MARK, "write_low_watermark")                                     \
    X(V_PAGI_VERSION, "0.3") X(V_HTTP10, "1.0") X(V_HTTP11, "1.1")           \
    X(V_HTTP2, "2") X(V_SSE, "sse") X(V_WEBSOCKET, "websocket")              \
    /* schemes */                                                            \
    X(V_HTTP, "http") X(V_HTTPS, "https") X(V_WS, "ws") X(V_WSS, "wss")      \
    /* methods */                                                            \
    X(V_GET, "GET") X(V_POST, "POST") X(V_HEAD, "HEAD") X(V_PUT, "PUT")      \
    X(V_DELETE, "DELETE") X(V_OPTIONS, "OPTIONS") X(V_PATCH, "PATCH")        \
    X(V_EMPTY, "") X(V_SLASH, "/") X(V_LOCALHOST, "127.0.0.1")               \
    /* request header names */                                               \
    X(H_HOST, "host") X(H_USER_AGENT, "user-agent") X(H_ACCEPT, "accept")    \
    X(H_ACCEPT_ENCODING, "accept-encoding")                                  \
    X(H_ACCEPT_LANGUAGE, "accept-language") X(H_CONNECTION, "connection")    \
    X(H_CONTENT_TYPE, "content-type") X(H_CONTENT_LENGTH, "content-length")  \
    X(H_COOKIE, "cookie") X(H_UPGRADE, "upgrade") X(H_ORIGIN, "origin")      \
    X(H_AUTHORIZATION, "authorization") X(H_CACHE_CONTROL, "cache-control")  \
    X(H_REFERER, "referer")

#define PAGI_SHARED_ENUM(name, str) name,
enum { PAGI_SHARED(PAGI_SHARED_ENUM) PAGI_SHARED_COUNT };
#undef PAGI_SHARED_ENUM

#define MY_CXT_KEY "PAGI::Server::Native::_cxt" XS_VERSION
struct fastreq;
typedef struct {
    SV *shared[PAGI_SHARED_COUNT];
    /* $PAGI::Server::Request::DONE's SV (Request.pm assigns it when
     * loaded) and the three classes' stashes. */
    SV *done;
    HV *req_stash, *cs_stash, *ts_stash;
    /* The plain HTTP request http_start is running (innermost), if it
     * has no Perl object yet (see fastreq). */
    struct fastreq *current;
    /* Whether Future's is_done is the pure-Perl one (its state can then
     * be read from the object's hash): -1 until first asked. */
    int pp_future;
    /* $receive/$send XSUBs of finished plain requests that nobody held on
     * to, kept for the next ones (xs/http_fast.h). */
    CV *spare[16];
    int nspare;
    /* pack_headers' buffer, grown as needed and kept. */
    char *pack;
    STRLEN pack_cap;
} my_cxt_t;
START_MY_CXT

/* One of the shared strings (needs dMY_CXT). */
#define SHARED(k) (MY_CXT.shared[k])

static void cxt_boot(pTHX) {
    static const char *const strings[] = {
#define PAGI_SHARED_STR(name, str) str,
        PAGI_SHARED(PAGI_SHARED_STR)
#undef PAGI_SHARED_STR
    };
    int i;
    MY_CXT_INIT;
    for (i = 0; i < PAGI_SHARED_COUNT; i++)
        MY_CXT.shared[i] = newSVpvn_share(strings[i], (I32)strlen(strings[i]), 0);
    MY_CXT.done = get_sv("PAGI::Server::Request::DONE", GV_ADD);
    MY_CXT.req_stash = gv_stashpvs("PAGI::Server::Request", GV_ADD);
    MY_CXT.cs_stash = gv_stashpvs("PAGI::Server::ConnectionState", GV_ADD);
    MY_CXT.ts_stash = gv_stashpvs("PAGI::Server::TransportState", GV_ADD);
    MY_CXT.current = NULL;
    MY_CXT.pp_future = -1;
    MY_CXT.nspare = 0;
    MY_CXT.pack = NULL;
    MY_CXT.pack_cap = 0;
}

/* hv's value under a shared key, or NULL. */
static SV *hv_getk(pTHX_ HV *hv, SV *key) {
    HE *he = hv_fetch_ent(hv, key, 0, 0);
    return he ? HeVAL(he) : NULL;
}

/* Stores val (whose reference it takes) under a shared key. */
static void hv_putk(pTHX_ HV *hv, SV *key, SV *val) {
    (void)hv_store_ent(hv, key, val, 0);
}

#define GETK(hv, k) hv_getk(aTHX_ (hv), SHARED(k))
#define PUTK(hv, k, v) hv_putk(aTHX_ (hv), SHARED(k), (v))
/* A new scalar holding one of the shared strings: it shares the string
 * (sv_setsv shares hash-key strings only when asked, outside the core). */
static SV *new_shared(pTHX_ SV *src) {
    SV *sv = newSV(0);
    sv_setsv_flags(sv, src, SV_COW_SHARED_HASH_KEYS | SV_NOSTEAL);
    return sv;
}
#define NEWK(k) new_shared(aTHX_ SHARED(k))

#endif
