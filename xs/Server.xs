/* Thin glue between PAGI::Server (Perl) and the Rust core (src/ffi/).
 * It turns drained bridge records into Perl data (scope hashes included)
 * and packs response headers for Rust. Rust is always called first and
 * returns before anything here croaks. */
#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"
#include <string.h>
#include "pagi_core.h"

#include "cxt.h"
#include "records.h"

static PagiServer *handle_of(pTHX_ SV *h) {
    if (!SvOK(h) || !SvIOK(h) || SvIV(h) == 0)
        croak("PAGI::Server: native server handle is not live");
    return INT2PTR(PagiServer *, SvIV(h));
}

/* Frees the scalars the core has given back (see send_body). */
static void free_returned(pTHX_ PagiServer *s) {
    void *const *svs = NULL; size_t n = 0, i;
    if (pagi_take_returned(s, &svs, &n) != PAGI_OK) return;
    for (i = 0; i < n; i++) SvREFCNT_dec((SV *)svs[i]);
}

static void croak_panic(pTHX_ PagiServer *s) {
    const uint8_t *t = NULL; size_t n = 0;
    pagi_server_text(s, &t, &n);
    croak_sv(sv_2mortal(newSVpvn((const char *)t, n)));
}

/* A header name or value as bytes. An integer (a content-length, as
 * often as not) is spelled into `tmp` (24 bytes) instead of being given a
 * string of its own; `nomg`: get-magic has run already. */
static const char *field_bytes(pTHX_ SV *sv, char *tmp, STRLEN *len, int nomg) {
    if (SvIOK(sv) && !SvPOK(sv) && !SvGMAGICAL(sv) && !SvIsUV(sv) && SvIVX(sv) >= 0) {
        UV v = (UV)SvIVX(sv);
        char *e = tmp + 24, *w = e;
        do { *--w = (char)('0' + v % 10); v /= 10; } while (v);
        *len = (STRLEN)(e - w);
        return w;
    }
#ifdef SvPVbyte_nomg
    return nomg ? SvPVbyte_nomg(sv, *len) : SvPVbyte(sv, *len);
#else
    /* Older perls: the first read downgraded it already. */
    return nomg ? SvPV_nomg(sv, *len) : SvPVbyte(sv, *len);
#endif
}

/* Dies unless `s` may go on the wire as header name (k 0) or value (k 1)
 * number i. */
static void check_field(pTHX_ const unsigned char *s, STRLEN l, int k, SSize_t i) {
    STRLEN j;
    for (j = 0; j < l; j++) {
        unsigned char ch = s[j];
        if (ch >= 0x20 && ch != 0x7f) continue;
        if (ch == '\r' || ch == '\n' || ch == 0)
            croak(k ? "Invalid header value: contains CR, LF, or null byte\n"
                    : "Invalid header name: contains CR, LF, or null byte\n");
        if (!k)
            croak("Invalid header name: contains control characters\n");
    }
    if ((uint64_t)l > UINT32_MAX)
        croak("header %ld: %s is too long (%lu bytes)", (long)i, k ? "value" : "name",
              (unsigned long)l);
}

/* The [name, value] pair number i of av, checked for shape. */
static AV *header_pair(pTHX_ AV *av, SSize_t i, SV ***nv) {
    SV **pair = av_fetch(av, i, 0);
    AV *p;
    if (!pair || !SvROK(*pair) || SvTYPE(SvRV(*pair)) != SVt_PVAV)
        croak("header %ld must be a [name, value] array reference", (long)i);
    p = (AV *)SvRV(*pair);
    nv[0] = av_fetch(p, 0, 0);
    nv[1] = av_fetch(p, 1, 0);
    if (!nv[0] || !nv[1] || !SvOK(*nv[0]) || !SvOK(*nv[1]))
        croak("header %ld must have a defined name and value", (long)i);
    return p;
}

/* Reading it runs no Perl code (no get magic, no overloading). */
#define FIELD_PLAIN(sv) (!SvGMAGICAL(sv) && !SvROK(sv))

/* One pass into a new mortal buffer, each field read once, for lists
 * with a field whose reading may run Perl code (which may change the
 * list, or pack other headers). */
static char *pack_headers_once(pTHX_ AV *av, SSize_t count, STRLEN *out_len) {
    SV *buf = sv_2mortal(newSV(64 + count * 48));
    SSize_t i; uint32_t c = (uint32_t)count;
    char tmp[24];
    SvPOK_on(buf);
    SvCUR_set(buf, 0);
    sv_catpvn(buf, (const char *)&c, 4);
    for (i = 0; i < count; i++) {
        SV **nv[2]; int k;
        (void)header_pair(aTHX_ av, i, nv);
        for (k = 0; k < 2; k++) {
            STRLEN l; uint32_t l32;
            const char *s = field_bytes(aTHX_ *nv[k], tmp, &l, 0);
            check_field(aTHX_ (const unsigned char *)s, l, k, i);
            l32 = (uint32_t)l;
            sv_catpvn(buf, (const char *)&l32, 4);
            sv_catpvn(buf, s, l);
        }
    }
    *out_len = SvCUR(buf);
    return SvPVX(buf);
}

/* Packs [[name, value], ...] as u32 count + (u32 len, bytes) pairs, into
 * the interpreter's packing buffer (valid until the next call). Dies on a
 * malformed list or an unsafe name or value. */
static char *pack_headers(pTHX_ SV *headers, STRLEN *out_len) {
    AV *av; SSize_t i, count; STRLEN need; char *w; uint32_t c;
    char tmp[24];
    dMY_CXT;
    if (!SvROK(headers) || SvTYPE(SvRV(headers)) != SVt_PVAV)
        croak("headers must be an array reference of [name, value] pairs");
    av = (AV *)SvRV(headers);
    count = av_len(av) + 1;
    /* The core reads u32 counts and lengths here. */
    if ((uint64_t)count > UINT32_MAX)
        croak("too many headers (%ld)", (long)count);
    /* First the checks and the size, then one copy: only while no Perl
     * code can run in between. */
    need = 4;
    for (i = 0; i < count; i++) {
        SV **nv[2]; int k;
        (void)header_pair(aTHX_ av, i, nv);
        if (!FIELD_PLAIN(*nv[0]) || !FIELD_PLAIN(*nv[1]))
            return pack_headers_once(aTHX_ av, count, out_len);
        for (k = 0; k < 2; k++) {
            STRLEN l;
            const char *s = field_bytes(aTHX_ *nv[k], tmp, &l, 0);
            check_field(aTHX_ (const unsigned char *)s, l, k, i);
            need += 4 + l;
        }
    }
    if (need > MY_CXT.pack_cap) {
        MY_CXT.pack_cap = need < 256 ? 256 : need * 2;
        Renew(MY_CXT.pack, MY_CXT.pack_cap, char);
    }
    w = MY_CXT.pack;
    c = (uint32_t)count;
    memcpy(w, &c, 4); w += 4;
    for (i = 0; i < count; i++) {
        SV **nv[2]; int k;
        (void)header_pair(aTHX_ av, i, nv);
        for (k = 0; k < 2; k++) {
            STRLEN l;
            /* Byte strings now: the first pass downgraded them. */
            const char *s = field_bytes(aTHX_ *nv[k], tmp, &l, 1);
            uint32_t l32 = (uint32_t)l;
            memcpy(w, &l32, 4); w += 4;
            memcpy(w, s, l); w += l;
        }
    }
    *out_len = (STRLEN)(w - MY_CXT.pack);
    return MY_CXT.pack;
}

/* Hands body bytes to the core. A large body is read in place: the core
 * gets a scalar of its own that shares the app's buffer copy-on-write (so
 * nobody writes into that buffer while it is shared; a buffer that cannot
 * be shared is copied here) and gives it back when done. The COW flags are
 * the core's default for sv_setsv; outside the core they must be asked
 * for. `body` may be NULL (no body). What comes back is freed at the next
 * drain (a request that ends with scalars out wakes Perl for them). Dies
 * if the core has panicked; otherwise returns its code. */
static int32_t send_body_sv(pTHX_ PagiServer *s, uint64_t id, SV *body, int fin,
                            const uint8_t **log, size_t *log_len) {
    const char *b = ""; STRLEN len = 0; int32_t rc;
    if (body && SvPOK(body) && !SvGMAGICAL(body) && !SvUTF8(body) && SvCUR(body) >= PAGI_HELD_MIN) {
        SV *held = newSV(0);
        sv_setsv_flags(held, body, SV_COW_SHARED_HASH_KEYS | SV_COW_OTHER_PVS | SV_NOSTEAL);
        rc = pagi_send_body_held(s, id, held, (const uint8_t *)SvPVX(held), SvCUR(held),
                                 fin, log, log_len);
    }
    else {
        if (body && SvOK(body)) b = SvPVbyte(body, len);
        rc = pagi_send_body(s, id, (const uint8_t *)b, len, fin, log, log_len);
    }
    if (rc == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    return rc;
}

#include "request.h"
#include "http_fast.h"
#include "dispatch.h"

/* An offset or length of send_file for the core: -1 when undef (or
 * negative: the core treats both as "not given"). A value past int64 sets
 * *beyond and becomes INT64_MAX, never a cut value. */
static int64_t file_pos(pTHX_ SV *v, int *beyond) {
    NV n;
    *beyond = 0;
    SvGETMAGIC(v);
    if (!SvOK(v)) return -1;
    if (SvIOK(v) && !SvIsUV(v)) return SvIVX(v) < 0 ? -1 : (int64_t)SvIVX(v);
    if (SvIOK(v) && SvUVX(v) <= (UV)INT64_MAX) return (int64_t)SvUVX(v);
    if (!SvIOK(v) && SvPOK(v)) {
        /* Digits exactly, beyond the 2**53 an NV holds. */
        UV u = 0;
        int t = grok_number(SvPVX(v), SvCUR(v), &u);
        if ((t & IS_NUMBER_IN_UV) && !(t & IS_NUMBER_NEG) && u <= (UV)INT64_MAX)
            return (int64_t)u;
    }
    n = SvNV_nomg(v);
    if (n < 0) return -1;
    if (n < 9223372036854775808.0) return (int64_t)n;
    *beyond = 1;
    return INT64_MAX;
}

/* The core's numbers that Perl uses (src/abi.rs, xs/pagi_core.h), made
 * constant subs of PAGI::Server::Native at load time so Perl code compiled
 * afterwards inlines them like `use constant`. */
#define PAGI_NUMBER(n) { #n, PAGI_##n }
static const struct { const char *name; IV value; } pagi_numbers[] = {
    PAGI_NUMBER(OK), PAGI_NUMBER(PENDING), PAGI_NUMBER(GONE),
    PAGI_NUMBER(REC_REQUEST), PAGI_NUMBER(REC_BODY), PAGI_NUMBER(REC_DISCONNECT),
    PAGI_NUMBER(REC_DRAIN), PAGI_NUMBER(REC_LOG), PAGI_NUMBER(REC_IDLE),
    PAGI_NUMBER(REC_WS_MESSAGE), PAGI_NUMBER(REC_EOF),
    PAGI_NUMBER(F_BODY_EMPTY), PAGI_NUMBER(F_PATH_UTF8), PAGI_NUMBER(F_UNIX),
    PAGI_NUMBER(F_SSE), PAGI_NUMBER(F_EXPECT), PAGI_NUMBER(F_WEBSOCKET), PAGI_NUMBER(F_TLS),
    PAGI_NUMBER(LOG_ERROR), PAGI_NUMBER(LOG_WARN), PAGI_NUMBER(LOG_DEBUG),
    PAGI_NUMBER(SHUTDOWN_GRACEFUL), PAGI_NUMBER(SHUTDOWN_FORCE),
    PAGI_NUMBER(END_FORGET), PAGI_NUMBER(END_ABORT),
};
#undef PAGI_NUMBER

MODULE = PAGI::Server    PACKAGE = PAGI::Server::Native

PROTOTYPES: DISABLE

BOOT:
{
    HV *stash = gv_stashpvs("PAGI::Server::Native", GV_ADD);
    size_t i;
    for (i = 0; i < sizeof pagi_numbers / sizeof pagi_numbers[0]; i++)
        newCONSTSUB(stash, pagi_numbers[i].name, newSViv(pagi_numbers[i].value));
    cxt_boot(aTHX);
}

IV
new(cfg)
    SV *cfg
  PREINIT:
    STRLEN len; const char *c; PagiServer *s = NULL; char err[1024];
  CODE:
    c = SvPVbyte(cfg, len);
    err[0] = 0;
    if (pagi_server_new((const uint8_t *)c, len, &s, err, sizeof err) != PAGI_OK)
        croak("PAGI::Server: %s\n", err);
    RETVAL = PTR2IV(s);
  OUTPUT:
    RETVAL

SV *
check_log_format(fmt)
    SV *fmt
  PREINIT:
    STRLEN len; const char *f; char err[512];
  CODE:
    f = SvPVutf8(fmt, len);
    err[0] = 0;
    RETVAL = pagi_check_log_format((const uint8_t *)f, len, err, sizeof err) == PAGI_OK
        ? &PL_sv_undef : newSVpv(err, 0);
  OUTPUT:
    RETVAL

SV *
format_log(fmt, fields)
    SV *fmt
    SV *fields
  PREINIT:
    STRLEN len, flen; const char *f; char *packed; const uint8_t *out = NULL;
    size_t out_len = 0; char err[512];
  CODE:
    f = SvPVutf8(fmt, len);
    packed = pack_headers(aTHX_ fields, &flen);
    err[0] = 0;
    if (pagi_format_log((const uint8_t *)f, len, (const uint8_t *)packed, flen,
                        &out, &out_len, err, sizeof err) != PAGI_OK)
        croak("%s", err);
    RETVAL = newSVpvn((const char *)out, out_len);
  OUTPUT:
    RETVAL

SV *
bind_only(cfg)
    SV *cfg
  PREINIT:
    STRLEN len; const char *c; const uint8_t *out = NULL; size_t out_len = 0; char err[1024];
  CODE:
    c = SvPVbyte(cfg, len);
    err[0] = 0;
    if (pagi_bind_only((const uint8_t *)c, len, &out, &out_len, err, sizeof err) != PAGI_OK)
        croak("%s\n", err);
    RETVAL = newSVpvn((const char *)out, out_len);
  OUTPUT:
    RETVAL

void
free(h)
    IV h
  CODE:
    if (h) {
        /* Scalars still out with a connection when the server goes are
         * never given back: they are left alone rather than freed early. */
        free_returned(aTHX_ INT2PTR(PagiServer *, h));
        pagi_server_free(INT2PTR(PagiServer *, h));
    }

void
listen(h)
    SV *h
  PREINIT:
    PagiServer *s; const uint8_t *t = NULL; size_t n = 0; int32_t rc;
  PPCODE:
    s = handle_of(aTHX_ h);
    rc = pagi_server_listen(s, &t, &n);
    if (rc == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    EXTEND(SP, 2);
    mPUSHi(rc == PAGI_OK ? 1 : 0);
    mPUSHp((const char *)t, n);

int
fd(h)
    SV *h
  CODE:
    RETVAL = pagi_server_fd(handle_of(aTHX_ h));
  OUTPUT:
    RETVAL

int
connections(h)
    SV *h
  CODE:
    RETVAL = pagi_server_connections(handle_of(aTHX_ h));
  OUTPUT:
    RETVAL

void
shutdown(h, phase)
    SV *h
    int phase
  CODE:
    pagi_server_shutdown(handle_of(aTHX_ h), phase);

void
request_end(h, id, op)
    SV *h
    UV id
    int op
  CODE:
    pagi_request_end(handle_of(aTHX_ h), (uint64_t)id, op);

SV *
buffered(h, id)
    SV *h
    UV id
  PREINIT:
    PagiServer *s; uint64_t n = 0;
  CODE:
    s = handle_of(aTHX_ h);
    if (pagi_buffered(s, (uint64_t)id, &n) == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    RETVAL = n <= UV_MAX ? newSVuv((UV)n) : newSVnv((NV)n);
  OUTPUT:
    RETVAL

void
pause_accept(h, ms)
    SV *h
    UV ms
  CODE:
    pagi_server_pause_accept(handle_of(aTHX_ h), ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms);

void
body_ack(h, id, n)
    SV *h
    UV id
    UV n
  CODE:
    pagi_body_ack(handle_of(aTHX_ h), (uint64_t)id, (size_t)n);

int
send_start(h, id, status, headers)
    SV *h
    UV id
    int status
    SV *headers
  PREINIT:
    PagiServer *s; char *buf; STRLEN len;
  CODE:
    s = handle_of(aTHX_ h);
    buf = pack_headers(aTHX_ headers, &len);
    RETVAL = pagi_send_start(s, (uint64_t)id, (uint16_t)status, (const uint8_t *)buf, len);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

void
send_body(h, id, body, fin)
    SV *h
    UV id
    SV *body
    int fin
  PREINIT:
    PagiServer *s; const uint8_t *log = NULL; size_t log_len = 0; int32_t rc;
  PPCODE:
    s = handle_of(aTHX_ h);
    rc = send_body_sv(aTHX_ s, (uint64_t)id, body, fin, &log, &log_len);
    EXTEND(SP, 2);
    mPUSHi(rc);
    if (log_len) mPUSHp((const char *)log, log_len);

SV *
request_new(server, id, scope, flags, class)
    SV *server
    UV id
    SV *scope
    IV flags
    const char *class
  CODE:
    RETVAL = request_new(aTHX_ server, id, scope, flags, class);
  OUTPUT:
    RETVAL

int
req_start(self, status, headers, trailers)
    SV *self
    SV *status
    SV *headers
    SV *trailers
  CODE:
    if (!hash_of(self)) croak("req_start: a request object is needed");
    RETVAL = req_start(aTHX_ hash_of(self), status, headers, trailers);
  OUTPUT:
    RETVAL

int
req_body(self, body, more)
    SV *self
    SV *body
    int more
  CODE:
    if (!hash_of(self)) croak("req_body: a request object is needed");
    RETVAL = req_body(aTHX_ hash_of(self), body, more);
  OUTPUT:
    RETVAL

SV *
req_result(self, rc)
    SV *self
    int rc
  PREINIT:
    SV *r;
  CODE:
    /* What a send that got `rc` from the core returns (Request::_result). */
    if (!hash_of(self)) croak("req_result: a request object is needed");
    r = req_result(aTHX_ hash_of(self), rc);
    RETVAL = SvREFCNT_inc_simple_NN(r);
  OUTPUT:
    RETVAL

void
req_after_body(self, fin, more, log)
    SV *self
    int fin
    int more
    SV *log
  PREINIT:
    STRLEN len = 0; const char *l = "";
  CODE:
    if (!hash_of(self)) croak("req_after_body: a request object is needed");
    if (IS_DEFINED(log)) l = SvPVbyte(log, len);
    req_after_body(aTHX_ hash_of(self), fin, more, (const uint8_t *)l, len);

void
send_file(h, id, path, fd, offset, length, fin)
    SV *h
    UV id
    SV *path
    int fd
    SV *offset
    SV *length
    int fin
  PREINIT:
    PagiServer *s; const char *p = NULL; STRLEN plen = 0; const uint8_t *log = NULL;
    size_t log_len = 0; int32_t rc; char err[1024]; int64_t off; int beyond;
  PPCODE:
    /* A path is opened by the core; otherwise fd is duplicated. offset and
     * length are undef when not given. The path's bytes are the ones Perl's
     * own open() would use: a character string's internal (UTF-8) bytes,
     * never a Latin-1 downgrade of them. */
    s = handle_of(aTHX_ h);
    if (SvOK(path)) p = SvPV(path, plen);
    off = file_pos(aTHX_ offset, &beyond);
    /* No file can be read from there; a length that large just means the
     * rest of the file. */
    if (beyond) croak("http.response.body: offset %" SVf " is out of range\n", SVfARG(offset));
    err[0] = 0;
    rc = pagi_send_file(s, (uint64_t)id, (const uint8_t *)p, plen, fd,
                        off, file_pos(aTHX_ length, &beyond),
                        fin, &log, &log_len, err, sizeof err);
    if (rc == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    if (rc == PAGI_ERR) croak("%s\n", err);
    EXTEND(SP, 2);
    mPUSHi(rc);
    if (log_len) mPUSHp((const char *)log, log_len);

void
parse_head(buf, max_line, max_size, max_count)
    SV *buf
    UV max_line
    UV max_size
    UV max_count
  PREINIT:
    STRLEN len; const char *b; const uint8_t *out = NULL; size_t out_len = 0;
    int32_t rc; reader r; uint64_t consumed = 0;
  PPCODE:
    /* (undef, 0) incomplete; ({error, message}, n) refused; (\%request, n). */
    b = SvPVbyte(buf, len);
    rc = pagi_parse_head((const uint8_t *)b, len, max_line, max_size, max_count, &out, &out_len);
    r.p = out; r.end = out + out_len;
    EXTEND(SP, 2);
    if (rc == 0 || !rd_u64(&r, &consumed)) {
        PUSHs(&PL_sv_undef);
        mPUSHi(0);
    }
    else if (rc == 2) {
        uint16_t status = 0; SV *msg; HV *e = newHV();
        rd_u16(&r, &status);
        msg = rd_sv(aTHX_ &r);
        hv_stores(e, "error", newSViv(status));
        hv_stores(e, "message", msg ? msg : newSVpvs(""));
        mPUSHs(newRV_noinc((SV *)e));
        mPUSHu((UV)consumed);
    }
    else {
        uint8_t ver = 11, flags = 0; uint64_t cl = 0, nh = 0, i;
        SV *method, *path, *raw_path, *query; HV *req = newHV(); AV *headers = newAV();
        rd_u8(&r, &ver); rd_u8(&r, &flags); rd_u64(&r, &cl);
        method = rd_sv(aTHX_ &r); path = rd_sv(aTHX_ &r);
        raw_path = rd_sv(aTHX_ &r); query = rd_sv(aTHX_ &r);
        rd_u64(&r, &nh);
        for (i = 0; i < nh; i++) {
            SV *n = rd_sv(aTHX_ &r), *v = rd_sv(aTHX_ &r);
            if (!n || !v) break;
            av_push(headers, pair_av(aTHX_ n, v));
        }
        if (path && (flags & PAGI_HEAD_PATH_UTF8) && !is_ascii_string((U8 *)SvPVX(path), SvCUR(path)))
            SvUTF8_on(path);
        hv_stores(req, "method", method ? method : newSVpvs(""));
        hv_stores(req, "path", path ? path : newSVpvs("/"));
        hv_stores(req, "raw_path", raw_path ? raw_path : newSVpvs("/"));
        hv_stores(req, "query_string", query ? query : newSVpvs(""));
        hv_stores(req, "http_version", ver == 10 ? newSVpvs("1.0") : newSVpvs("1.1"));
        hv_stores(req, "headers", newRV_noinc((SV *)headers));
        hv_stores(req, "content_length", (flags & PAGI_HEAD_HAS_LENGTH) ? newSVuv((UV)cl) : newSV(0));
        hv_stores(req, "chunked", newSViv((flags & PAGI_HEAD_CHUNKED) ? 1 : 0));
        hv_stores(req, "expect_continue", newSViv((flags & PAGI_HEAD_EXPECT) ? 1 : 0));
        mPUSHs(newRV_noinc((SV *)req));
        mPUSHu((UV)consumed);
    }

void
send_trailers(h, id, headers)
    SV *h
    UV id
    SV *headers
  PREINIT:
    PagiServer *s; char *buf; STRLEN len; const uint8_t *log = NULL; size_t log_len = 0;
    int32_t rc;
  PPCODE:
    s = handle_of(aTHX_ h);
    buf = pack_headers(aTHX_ headers, &len);
    rc = pagi_send_trailers(s, (uint64_t)id, (const uint8_t *)buf, len, &log, &log_len);
    if (rc == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    EXTEND(SP, 2);
    mPUSHi(rc);
    if (log_len) mPUSHp((const char *)log, log_len);

int
ws_send(h, id, text, data)
    SV *h
    UV id
    int text
    SV *data
  PREINIT:
    PagiServer *s; const char *d; STRLEN len;
  CODE:
    s = handle_of(aTHX_ h);
    d = SvPVbyte(data, len);
    RETVAL = pagi_ws_send(s, (uint64_t)id, text, (const uint8_t *)d, len);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

void
ws_ack(h, id, n)
    SV *h
    UV id
    UV n
  CODE:
    pagi_ws_ack(handle_of(aTHX_ h), (uint64_t)id, (size_t)n);

void
ws_waiting(h, id, taken)
    SV *h
    UV id
    UV taken
  CODE:
    pagi_ws_waiting(handle_of(aTHX_ h), (uint64_t)id, (uint64_t)taken);

int
ws_accept(h, id, subprotocol, headers)
    SV *h
    UV id
    SV *subprotocol
    SV *headers
  PREINIT:
    PagiServer *s; const char *proto = NULL; STRLEN proto_len = 0; char *buf; STRLEN len;
  CODE:
    s = handle_of(aTHX_ h);
    if (SvOK(subprotocol))
        proto = SvPVbyte(subprotocol, proto_len);
    buf = pack_headers(aTHX_ headers, &len);
    RETVAL = pagi_ws_accept(s, (uint64_t)id, (const uint8_t *)proto, proto_len, (const uint8_t *)buf, len);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

int
ws_close(h, id, code, reason)
    SV *h
    UV id
    UV code
    SV *reason
  PREINIT:
    PagiServer *s; const char *d; STRLEN len;
  CODE:
    s = handle_of(aTHX_ h);
    d = SvPVbyte(reason, len);
    RETVAL = pagi_ws_close(s, (uint64_t)id, (uint16_t)code, (const uint8_t *)d, len);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

int
ws_keepalive(h, id, interval, timeout)
    SV *h
    UV id
    NV interval
    NV timeout
  PREINIT:
    PagiServer *s;
  CODE:
    s = handle_of(aTHX_ h);
    RETVAL = pagi_ws_keepalive(s, (uint64_t)id, interval, timeout);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

int
sse_stream(h, id, interval, frame)
    SV *h
    UV id
    NV interval
    SV *frame
  PREINIT:
    PagiServer *s; const char *f; STRLEN flen;
  CODE:
    /* Marks an SSE stream / sets its keepalive comment (already bytes). */
    s = handle_of(aTHX_ h);
    f = SvPVbyte(frame, flen);
    RETVAL = pagi_sse_stream(s, (uint64_t)id, interval, (const uint8_t *)f, flen);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

int
sse_touch(h, id)
    SV *h
    UV id
  PREINIT:
    PagiServer *s;
  CODE:
    /* An SSE event Perl keeps for now: the stream is not idle. */
    s = handle_of(aTHX_ h);
    RETVAL = pagi_sse_touch(s, (uint64_t)id);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

int
unstart(h, id)
    SV *h
    UV id
  PREINIT:
    PagiServer *s;
  CODE:
    s = handle_of(aTHX_ h);
    RETVAL = pagi_unstart(s, (uint64_t)id);
    if (RETVAL == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
  OUTPUT:
    RETVAL

void
flush(h)
    SV *h
  PREINIT:
    PagiServer *s;
  CODE:
    /* Ends the batch dispatch() began: held sends go out. */
    s = handle_of(aTHX_ h);
    if (pagi_server_flush(s) == PAGI_ERR_PANIC) croak_panic(aTHX_ s);

void
dispatch(server)
    SV *server
  CODE:
    /* Works through what the core queued since the last wake-up. The
     * core holds what is sent meanwhile until flush(). */
    dispatch_batch(aTHX_ server);
