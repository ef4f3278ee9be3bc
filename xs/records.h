/* Reading the Rust core's bridge records (layout: src/bridge/queue.rs and
 * src/bridge/request.rs) and building PAGI scopes from REQUEST records.
 * Included once, by Server.xs, after the Perl headers. */
#ifndef PAGI_RECORDS_H
#define PAGI_RECORDS_H

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} reader;

static int rd_u8(reader *r, uint8_t *v) {
    if (r->end - r->p < 1) return 0;
    *v = *r->p++;
    return 1;
}
static int rd_u16(reader *r, uint16_t *v) {
    if (r->end - r->p < 2) return 0;
    memcpy(v, r->p, 2); r->p += 2;
    return 1;
}
static int rd_u64(reader *r, uint64_t *v) {
    if (r->end - r->p < 8) return 0;
    memcpy(v, r->p, 8); r->p += 8;
    return 1;
}
/* A u64 length, then that many bytes (src/bridge/queue.rs). */
static int rd_bytes(reader *r, const char **s, STRLEN *len) {
    uint64_t n;
    if (!rd_u64(r, &n) || n > (uint64_t)(r->end - r->p)) return 0;
    *s = (const char *)r->p; *len = (STRLEN)n; r->p += n;
    return 1;
}
/* A u64 count of items that each take at least `min` more bytes: a count
 * the rest of the record cannot hold is a short record. */
static int rd_count(reader *r, uint64_t *n, size_t min) {
    return rd_u64(r, n) && *n <= (uint64_t)(r->end - r->p) / min;
}
static SV *rd_sv(pTHX_ reader *r) {
    const char *s; STRLEN n;
    if (!rd_bytes(r, &s, &n)) return NULL;
    return newSVpvn(s, n);
}

/* The next string: a copy of the shared string first..last (a range of
 * cxt.h's) it equals, which allocates no string, or a new one. */
static SV *rd_sv_shared(pTHX_ reader *r, int first, int last) {
    const char *s; STRLEN n; int k;
    dMY_CXT;
    if (!rd_bytes(r, &s, &n)) return NULL;
    for (k = first; k <= last; k++) {
        SV *c = SHARED(k);
        if (SvCUR(c) == n && memEQ(SvPVX(c), s, n)) return NEWK(k);
    }
    return newSVpvn(s, n);
}

static SV *pair_av(pTHX_ SV *a, SV *b) {
    /* Filled in place: av_push checks and grows for each element. */
#ifdef newAV_alloc_x
    AV *av = newAV_alloc_x(2);
#else
    AV *av = newAV();
    av_extend(av, 1);
#endif
    AvARRAY(av)[0] = a;
    AvARRAY(av)[1] = b;
    AvFILLp(av) = 1;
    return newRV_noinc((SV *)av);
}

/* The TLS facts that end a REQUEST record over TLS, as the spec's
 * extensions.tls hash; NULL if the record is short. */
static HV *build_tls(pTHX_ reader *r) {
    uint16_t version, cipher; uint8_t has_name; uint64_t n, i;
    SV *cert = NULL, *name = NULL; AV *chain; HV *tls;
    if (!rd_u16(r, &version) || !rd_u16(r, &cipher) || !(cert = rd_sv(aTHX_ r))
        || !rd_u8(r, &has_name) || !(name = rd_sv(aTHX_ r)) || !rd_count(r, &n, 8)) {
        SvREFCNT_dec(cert); SvREFCNT_dec(name);
        return NULL;
    }
    chain = newAV();
    for (i = 0; i < n; i++) {
        SV *c = rd_sv(aTHX_ r);
        if (!c) {
            SvREFCNT_dec(cert); SvREFCNT_dec(name); SvREFCNT_dec((SV *)chain);
            return NULL;
        }
        av_push(chain, c);
    }
    if (has_name && !is_ascii_string((U8 *)SvPVX(name), SvCUR(name))) SvUTF8_on(name);
    tls = newHV();
    hv_stores(tls, "server_cert", cert);
    hv_stores(tls, "client_cert_chain", newRV_noinc((SV *)chain));
    if (has_name) {
        hv_stores(tls, "client_cert_name", name);
    } else {
        SvREFCNT_dec(name);
        hv_stores(tls, "client_cert_name", newSV(0));
    }
    /* A client certificate that fails verification ends the handshake, so
     * a connection that got this far has no verification error. */
    hv_stores(tls, "client_cert_error", newSV(0));
    hv_stores(tls, "tls_version", version ? newSVuv(version) : newSV(0));
    hv_stores(tls, "cipher_suite", cipher ? newSVuv(cipher) : newSV(0));
    return tls;
}

/* Builds the HTTP scope of a REQUEST record; NULL if the record is short
 * (every SV made for it so far is freed). */
static SV *build_scope(pTHX_ reader *r, int *req_flags) {
    uint8_t ver, flags; uint16_t cport, sport; uint64_t nh, i;
    SV *scheme = NULL, *method = NULL, *path = NULL, *raw_path = NULL, *query = NULL,
       *chost = NULL, *shost = NULL;
    HV *scope, *pagi, *tls = NULL; AV *headers = NULL;
    dMY_CXT;
    if (!rd_u8(r, &ver) || !rd_u8(r, &flags)) return NULL;
    /* The common values (an http scheme, a GET, a path of /, an empty
     * query, a loopback address) share their strings. */
    if (!(scheme = rd_sv_shared(aTHX_ r, V_HTTP, V_WSS)) || !(method = rd_sv_shared(aTHX_ r, V_GET, V_PATCH))
        || !(path = rd_sv_shared(aTHX_ r, V_SLASH, V_SLASH)) || !(raw_path = rd_sv_shared(aTHX_ r, V_SLASH, V_SLASH))
        || !(query = rd_sv_shared(aTHX_ r, V_EMPTY, V_EMPTY))
        || !(chost = rd_sv_shared(aTHX_ r, V_LOCALHOST, V_LOCALHOST)) || !rd_u16(r, &cport)
        || !(shost = rd_sv_shared(aTHX_ r, V_LOCALHOST, V_LOCALHOST)) || !rd_u16(r, &sport)
        || !rd_count(r, &nh, 16))  /* a header: two u64 lengths at least */
        goto short_record;

    if ((flags & PAGI_F_PATH_UTF8) && !is_ascii_string((U8 *)SvPVX(path), SvCUR(path)))
        SvUTF8_on(path);

    headers = newAV();
    if (nh) av_extend(headers, (SSize_t)(nh - 1));
    for (i = 0; i < nh; i++) {
        SV *n = rd_sv_shared(aTHX_ r, H_HOST, H_REFERER), *v = n ? rd_sv(aTHX_ r) : NULL;
        if (!v) {
            SvREFCNT_dec(n);
            goto short_record;
        }
        av_push(headers, pair_av(aTHX_ n, v));
    }
    if ((flags & PAGI_F_TLS) && !(tls = build_tls(aTHX_ r)))
        goto short_record;

    pagi = newHV();
    PUTK(pagi, K_VERSION, NEWK(V_PAGI_VERSION));
    PUTK(pagi, K_SPEC_VERSION, NEWK(V_PAGI_VERSION));

    scope = newHV();
    /* Room for every key a request's scope gets (no split on the way). */
    hv_ksplit(scope, 20);
    PUTK(scope, K_PAGI, newRV_noinc((SV *)pagi));
    PUTK(scope, K_HTTP_VERSION, NEWK(ver == 10 ? V_HTTP10 : ver == 20 ? V_HTTP2 : V_HTTP11));
    /* The core spells the scheme as the scope has it (ws/wss for a
     * WebSocket). */
    PUTK(scope, K_SCHEME, scheme);
    if (flags & PAGI_F_WEBSOCKET) {
        /* A WebSocket scope has no method. */
        PUTK(scope, K_TYPE, NEWK(V_WEBSOCKET));
        SvREFCNT_dec(method);
    } else {
        PUTK(scope, K_TYPE, NEWK((flags & PAGI_F_SSE) ? V_SSE : V_HTTP));
        PUTK(scope, K_METHOD, method);
    }
    PUTK(scope, K_PATH, path);
    PUTK(scope, K_RAW_PATH, raw_path);
    PUTK(scope, K_QUERY_STRING, query);
    PUTK(scope, K_ROOT_PATH, NEWK(V_EMPTY));
    PUTK(scope, K_HEADERS, newRV_noinc((SV *)headers));
    if (flags & PAGI_F_UNIX) {
        SvREFCNT_dec(chost);
        PUTK(scope, K_SERVER, pair_av(aTHX_ shost, newSV(0)));
    } else {
        PUTK(scope, K_CLIENT, pair_av(aTHX_ chost, newSVuv(cport)));
        PUTK(scope, K_SERVER, pair_av(aTHX_ shost, newSVuv(sport)));
    }
    if (tls) {
        /* The connection's own extension; PAGI::Server::Request adds the
         * server's extensions to this hash. */
        HV *ext = newHV();
        hv_stores(ext, "tls", newRV_noinc((SV *)tls));
        PUTK(scope, K_EXTENSIONS, newRV_noinc((SV *)ext));
    }
    *req_flags = flags;
    return newRV_noinc((SV *)scope);

short_record:
    SvREFCNT_dec(scheme); SvREFCNT_dec(method); SvREFCNT_dec(path); SvREFCNT_dec(raw_path);
    SvREFCNT_dec(query); SvREFCNT_dec(chost); SvREFCNT_dec(shost);
    SvREFCNT_dec((SV *)headers);
    return NULL;
}

/* One bridge record read into Perl values: kind, id and two values whose
 * meaning depends on the kind (see PAGI::Server::_on_record). */
typedef struct {
    uint8_t kind;
    uint64_t id;
    SV *a, *b;
} record;

enum { REC_SHORT = 0, REC_READ = 1, REC_SKIP = 2 };

/* Reads the next record at r. REC_READ: rec holds it (a and b owned by the
 * caller); REC_SKIP: nothing for Perl in it; REC_SHORT: a malformed record
 * (nothing is left allocated), the rest of the batch is unreadable. */
static int read_record(pTHX_ reader *r, record *rec) {
    SV *a = NULL, *b = NULL;
    rec->kind = 0;
    rec->a = rec->b = NULL;
    if (!rd_u8(r, &rec->kind) || !rd_u64(r, &rec->id)) return REC_SHORT;
    switch (rec->kind) {
    case PAGI_REC_REQUEST: {
        /* a: the scope; b: the PAGI_F_* flags. */
        int req_flags = 0;
        a = build_scope(aTHX_ r, &req_flags);
        if (a) b = newSViv(req_flags);
        break;
    }
    case PAGI_REC_BODY: {
        uint8_t more = 0;
        a = rd_sv(aTHX_ r);
        if (a && rd_u8(r, &more)) b = newSViv(more);
        break;
    }
    case PAGI_REC_DISCONNECT: {
        /* b: the WebSocket close code, undef for HTTP. A WebSocket
         * reason is UTF-8 text (the core checked it). */
        uint16_t code = 0;
        a = rd_sv(aTHX_ r);
        if (a && rd_u16(r, &code)) {
            if (code && !is_ascii_string((U8 *)SvPVX(a), SvCUR(a))) SvUTF8_on(a);
            b = code ? newSVuv(code) : newSV(0);
        }
        break;
    }
    case PAGI_REC_WS_MESSAGE: {
        /* a: the payload, decoded text when b is 1 (the core checked
         * the UTF-8), raw bytes when b is 0. */
        uint8_t text = 0;
        if (!rd_u8(r, &text)) break;
        a = rd_sv(aTHX_ r);
        if (a && text) SvUTF8_on(a);
        if (a) b = newSViv(text);
        break;
    }
    case PAGI_REC_LOG: {
        uint8_t lvl = 0;
        if (rd_u8(r, &lvl) && (b = rd_sv(aTHX_ r))) a = newSViv(lvl);
        break;
    }
    case PAGI_REC_RETURNED:
        /* Only a wake-up: the scalars are freed at every drain. */
        return REC_SKIP;
    case PAGI_REC_DRAIN:
    case PAGI_REC_IDLE:
    case PAGI_REC_EOF:
        /* Nothing but the kind and id: no values to make (one DRAIN comes
         * per wait of a streaming app). */
        a = b = &PL_sv_undef;
        break;
    default:
        break;
    }
    if (!a || !b) {
        SvREFCNT_dec(a); SvREFCNT_dec(b);
        return REC_SHORT;
    }
    rec->a = a; rec->b = b;
    return REC_READ;
}

#endif
