/* PAGI::Server::Request's hot path, in C: what every request adds to its
 * scope (state, extensions, pagi.connection, pagi.transport), the request
 * object, the $receive/$send XSUBs bound to it, and the two sends nearly
 * every response is made of. SSE, WebSocket and validate_events requests
 * get their object at once (request_new); a plain HTTP request only when
 * it needs one (xs/http_fast.h).
 *
 * The request is the blessed hash PAGI::Server::Request works on; what is
 * not on the fast path (file bodies, trailers, backpressure waits, every
 * error) is left to its Perl methods. Included by Server.xs after cxt.h,
 * handle_of, croak_panic, pack_headers and send_body_sv. */
#ifndef PAGI_REQUEST_H
#define PAGI_REQUEST_H

static SV *hv_get(pTHX_ HV *hv, const char *k, I32 klen) {
    SV **v = hv_fetch(hv, k, klen, 0);
    return v ? *v : NULL;
}
#define GETS(hv, k) hv_get(aTHX_ (hv), "" k "", (I32)(sizeof(k) - 1))
#define IS_TRUE(sv) ((sv) && SvTRUE(sv))
#define IS_DEFINED(sv) ((sv) && SvOK(sv))

/* The hash behind a hash reference, or NULL. */
static HV *hash_of(SV *rv) {
    return rv && SvROK(rv) && SvTYPE(SvRV(rv)) == SVt_PVHV ? (HV *)SvRV(rv) : NULL;
}

/* A new copy of a value that may be missing (undef then). */
static SV *copy_of(pTHX_ SV *sv) {
    return newSVsv(sv ? sv : &PL_sv_undef);
}

/* The result of every send that need not wait (Request.pm's $DONE). */
static SV *done_future(pTHX) {
    dMY_CXT;
    return MY_CXT.done;
}

/* $obj->METHOD(@args) in scalar context; the result outlives the call's
 * temporaries (it is mortal in the caller's scope). */
static SV *call_obj(pTHX_ SV *obj, const char *method, SV *a1, SV *a2) {
    dSP;
    SV *r;
    int n;
    ENTER; SAVETMPS;
    PUSHMARK(SP);
    EXTEND(SP, 3);
    PUSHs(obj);
    if (a1) PUSHs(a1);
    if (a2) PUSHs(a2);
    PUTBACK;
    n = call_method(method, G_SCALAR);
    SPAGAIN;
    r = n ? SvREFCNT_inc(POPs) : &PL_sv_undef;
    if (!n) SvREFCNT_inc_simple_void(r);
    PUTBACK;
    FREETMPS; LEAVE;
    return sv_2mortal(r);
}

/* $req->METHOD(@args), `req` being the request's hash. */
static SV *call_req(pTHX_ HV *req, const char *method, SV *a1, SV *a2) {
    return call_obj(aTHX_ sv_2mortal(newRV_inc((SV *)req)), method, a1, a2);
}

static PagiServer *req_core(pTHX_ HV *req, uint64_t *id) {
    SV *h = GETS(req, "native"), *i = GETS(req, "id");
    if (!h) croak("PAGI::Server: the request has no native server handle");
    *id = i ? (uint64_t)SvUV(i) : 0;
    return handle_of(aTHX_ h);
}

/* After each write it accepted, the server has the transport state look
 * at the backlog (as the reference does). Only its callbacks can tell
 * that it did, so it is asked only when some are registered. */
static void tstate_written(pTHX_ SV *tstate, int rc) {
    HV *ts = hash_of(tstate);
    dMY_CXT;
    if (ts && (rc == PAGI_OK || rc == PAGI_PENDING)
        && (hv_exists_ent(ts, SHARED(K_ON_HIGH), 0) || hv_exists_ent(ts, SHARED(K_ON_DRAIN), 0)))
        call_obj(aTHX_ tstate, "_check_watermarks", NULL, NULL);
}

/* What a send returns: $DONE, or a Future that waits for the client. */
static SV *req_result(pTHX_ HV *req, int rc) {
    tstate_written(aTHX_ GETS(req, "tstate"), rc);
    return rc == PAGI_PENDING ? call_req(aTHX_ req, "_wait_drain", NULL, NULL) : done_future(aTHX);
}

/* The status of an http.response.start, checked with its headers; dies
 * (nothing is sent) on a bad one. */
static uint16_t start_status(pTHX_ SV *status, SV *headers) {
    STRLEN sl; const char *st;
    uint16_t code;
    /* An integer (as nearly every app gives it) is read as one: spelling
     * it out costs a string. */
    if (status && SvIOK(status) && !SvPOK(status) && !SvGMAGICAL(status) && !SvIsUV(status)
        && SvIVX(status) >= 100 && SvIVX(status) <= 599)
        code = (uint16_t)SvIVX(status);
    else {
        st = IS_DEFINED(status) ? SvPV(status, sl) : (sl = 0, "");
        if (sl != 3 || st[0] < '1' || st[0] > '5' || !isDIGIT(st[1]) || !isDIGIT(st[2]))
            croak("http.response.start: status must be an integer between 100 and 599\n");
        code = (uint16_t)((st[0] - '0') * 100 + (st[1] - '0') * 10 + (st[2] - '0'));
    }
    if (IS_DEFINED(headers)
        && !(SvROK(headers) && SvTYPE(SvRV(headers)) == SVt_PVAV && !SvOBJECT(SvRV(headers))))
        croak("http.response.start: headers must be an array reference\n");
    return code;
}

/* Hands a checked response head to the core. Returns the core's code. */
static int core_start(pTHX_ PagiServer *s, uint64_t id, uint16_t status, SV *headers) {
    STRLEN len; int rc;
    char *buf = IS_DEFINED(headers) ? pack_headers(aTHX_ headers, &len) : (len = 4, "\0\0\0\0");
    rc = pagi_send_start(s, id, status, (const uint8_t *)buf, len);
    if (rc == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    return rc;
}

/* ConnectionState::_mark_response_started, which only sets this. */
static void cstate_started(pTHX_ SV *rv) {
    HV *cs = hash_of(rv);
    dMY_CXT;
    if (cs) PUTK(cs, K_STARTED, newSViv(1));
}

/* http.response.start; dies (leaving the response unstarted) on a bad
 * status or bad headers. Returns the core's code. */
static int req_start(pTHX_ HV *req, SV *status, SV *headers, SV *trailers) {
    uint64_t id;
    uint16_t code = start_status(aTHX_ status, headers);
    PagiServer *s = req_core(aTHX_ req, &id);
    int rc = core_start(aTHX_ s, id, code, headers);
    cstate_started(aTHX_ GETS(req, "cstate"));
    (void)hv_stores(req, "started", newSViv(1));
    (void)hv_stores(req, "trailers", newSViv(IS_TRUE(trailers) ? 1 : 0));
    return rc;
}

/* Request::_forget: the server lets go of a request once its app has
 * returned. */
static void req_forget(pTHX_ HV *req) {
    HV *server, *reqs;
    SV *id = GETS(req, "id");
    if (id && IS_TRUE(GETS(req, "app_done")) && (server = hash_of(GETS(req, "server")))
        && (reqs = hash_of(GETS(server, "requests"))))
        (void)hv_delete_ent(reqs, id, G_DISCARD, 0);
}

/* After the final frame: the request is done; its access-log line (if
 * any) is written, and it is forgotten once the app has returned too. */
static void req_finish(pTHX_ HV *req, const uint8_t *log, size_t log_len) {
    (void)hv_stores(req, "done", newSViv(1));
    if (log_len)
        call_req(aTHX_ req, "_log_access", sv_2mortal(newSVpvn((const char *)log, log_len)), NULL);
    req_forget(aTHX_ req);
}

/* The state a body frame leaves: the final one finishes the request; one
 * with more => 0 while trailers are due ends the body. */
static void req_after_body(pTHX_ HV *req, int fin, int more, const uint8_t *log, size_t log_len) {
    if (fin)
        req_finish(aTHX_ req, log, log_len);
    else if (!more)
        (void)hv_stores(req, "body_done", newSViv(1));
}

/* http.response.body with bytes (not a file). Returns the core's code. */
static int req_body(pTHX_ HV *req, SV *body, int more) {
    uint64_t id;
    const uint8_t *log = NULL; size_t log_len = 0; int rc;
    int fin = !more && !IS_TRUE(GETS(req, "trailers"));
    PagiServer *s = req_core(aTHX_ req, &id);
    rc = send_body_sv(aTHX_ s, id, body, fin, &log, &log_len);
    req_after_body(aTHX_ req, fin, more, log, log_len);
    return rc;
}

/* Whether `f`, an object of class Future itself, is done. Future::PP's
 * is_done reads three keys of its hash; those are read here when it is
 * the implementation in use (not Future::XS). */
static int future_is_done(pTHX_ SV *f) {
    HV *h = (HV *)SvRV(f);
    dMY_CXT;
    if (MY_CXT.pp_future < 0) {
        GV *gv = gv_fetchmethod_autoload(SvSTASH((SV *)h), "is_done", 0);
        CV *pp = get_cv("Future::PP::is_done", 0);
        MY_CXT.pp_future = gv && isGV(gv) && pp && GvCV(gv) == pp;
    }
    if (MY_CXT.pp_future && SvTYPE((SV *)h) == SVt_PVHV)
        return IS_TRUE(GETK(h, K_READY)) && !IS_TRUE(GETK(h, K_FAILURE)) && !IS_TRUE(GETK(h, K_CANCELLED));
    return SvTRUE(call_obj(aTHX_ f, "is_done", NULL, NULL));
}

/* The request an app's $receive or $send belongs to: magic on the CV
 * holds a counted reference, CvXSUBANY the quick way to it. `body` is
 * the CV's XSUB. */
static MGVTBL req_closure_vtbl;

static void bind_request(pTHX_ CV *cv, XSUBADDR_t body, HV *req) {
    sv_magicext((SV *)cv, (SV *)req, PERL_MAGIC_ext, &req_closure_vtbl, NULL, 0);
    CvXSUBANY(cv).any_ptr = req;
    CvXSUB(cv) = body;
}

/* $receive of an http scope: Request::_receive. */
XS_INTERNAL(pagi_http_receive) {
    dXSARGS;
    PERL_UNUSED_VAR(items);
    ST(0) = call_req(aTHX_ (HV *)CvXSUBANY(cv).any_ptr, "_receive", NULL, NULL);
    XSRETURN(1);
}

/* The $send events C handles: a plain hash of type http.response.start,
 * or http.response.body with bytes (not a file). */
enum { EV_OTHER, EV_START, EV_BODY };

static int event_kind(pTHX_ SV *ev, HV **e) {
    SV *type;
    STRLEN tl = 0;
    const char *t;
    dMY_CXT;
    if (!(*e = hash_of(ev)) || SvOBJECT((SV *)*e)) return EV_OTHER;
    type = GETK(*e, K_TYPE);
    t = IS_DEFINED(type) ? SvPV(type, tl) : "";
    if (tl == 19 && memEQ(t, "http.response.start", 19)) return EV_START;
    if (tl == 18 && memEQ(t, "http.response.body", 18) && !IS_DEFINED(GETK(*e, K_FILE))
        && !IS_DEFINED(GETK(*e, K_FH)))
        return EV_BODY;
    return EV_OTHER;
}

/* $send of an http scope: the common events, in the common state, are
 * handled here; the rest (and every error message) by Request::_send. */
XS_INTERNAL(pagi_http_send) {
    dXSARGS;
    HV *req = (HV *)CvXSUBANY(cv).any_ptr, *e;
    SV *ev = items > 0 ? ST(0) : &PL_sv_undef;
    int kind = event_kind(aTHX_ ev, &e);
    if (kind == EV_BODY && IS_TRUE(GETS(req, "started"))) {
        if (IS_TRUE(GETS(req, "done")) || IS_DEFINED(GETS(req, "gone")) || IS_TRUE(GETS(req, "body_done")))
            ST(0) = done_future(aTHX);
        else
            ST(0) = req_result(aTHX_ req, req_body(aTHX_ req, GETS(e, "body"), IS_TRUE(GETS(e, "more"))));
        XSRETURN(1);
    }
    if (kind == EV_START && !IS_TRUE(GETS(req, "started")) && !IS_TRUE(GETS(req, "done"))
        && !IS_DEFINED(GETS(req, "gone"))) {
        ST(0) = req_result(aTHX_ req, req_start(aTHX_ req, GETS(e, "status"), GETS(e, "headers"),
                                                GETS(e, "trailers")));
        XSRETURN(1);
    }
    ST(0) = call_req(aTHX_ req, "_send", ev, NULL);
    XSRETURN(1);
}

/* A copy of a hash, or an empty one ({%$h} for a hash that may be
 * missing). */
static HV *hv_copy(pTHX_ HV *h) {
    return h && HvUSEDKEYS(h) ? newHVhv(h) : newHV();
}

/* The two state objects of a request's scope, blessed hashes as their
 * classes' _for_request/new make them: ConnectionState (OPEN, the loop)
 * and TransportState measuring the core's count for request `id`. */
static HV *new_cstate(pTHX_ HV *server) {
    HV *cs = newHV();
    dMY_CXT;
    PUTK(cs, K_STATE, newSViv(0));
    PUTK(cs, K_LOOP, copy_of(aTHX_ GETK(server, K_LOOP_CACHE)));
    return cs;
}

static HV *new_tstate(pTHX_ HV *server, UV id) {
    HV *ts = newHV();
    dMY_CXT;
    PUTK(ts, K_NATIVE, copy_of(aTHX_ GETK(server, K_NATIVE)));
    PUTK(ts, K_ID, newSVuv(id));
    PUTK(ts, K_HIGH, copy_of(aTHX_ GETK(server, K_HIGH_MARK)));
    PUTK(ts, K_LOW, copy_of(aTHX_ GETK(server, K_LOW_MARK)));
    return ts;
}

/* What every request adds to its scope: the server's lifespan state
 * (copied) and extensions, and, unless cstate/tstate are NULL (the
 * caller puts them in itself), pagi.connection (http scopes only, per
 * the spec) and pagi.transport. The two state objects are returned (not
 * counted: the scope holds them); *cstate is NULL when there is none. */
static void scope_prepare(pTHX_ HV *server, HV *scope, UV id, IV flags, SV **cstate, SV **tstate) {
    HV *ext, *own;
    SV *tls = NULL;
    dMY_CXT;

    PUTK(scope, K_STATE, newRV_noinc((SV *)hv_copy(aTHX_ hash_of(GETK(server, K_STATE)))));
    /* Over TLS the core has put the connection's own `tls` entry in the
     * scope's extensions; the server-wide `tls` entry (a marker) never
     * reaches an app. */
    ext = hash_of(GETK(server, K_EXTENSIONS));
    own = hash_of(GETK(scope, K_EXTENSIONS));
    if (own) tls = copy_of(aTHX_ GETS(own, "tls"));
    {
        HV *mine = hv_copy(aTHX_ ext);
        if (ext && hv_exists(ext, "tls", 3)) (void)hv_delete(mine, "tls", 3, G_DISCARD);
        if (tls) (void)hv_stores(mine, "tls", tls);
        PUTK(scope, K_EXTENSIONS, newRV_noinc((SV *)mine));
    }
    if (!cstate) return;

    *cstate = NULL;
    if (!(flags & (PAGI_F_SSE | PAGI_F_WEBSOCKET))) {
        *cstate = sv_bless(newRV_noinc((SV *)new_cstate(aTHX_ server)), MY_CXT.cs_stash);
        PUTK(scope, K_CONNECTION, *cstate);
    }
    *tstate = sv_bless(newRV_noinc((SV *)new_tstate(aTHX_ server, id)), MY_CXT.ts_stash);
    PUTK(scope, K_TRANSPORT, *tstate);
}

/* The request object: a hash blessed into `stash`, registered in the
 * server's requests, with the scope's state objects (RVs; cstate may be
 * NULL). */
static SV *request_hash(pTHX_ HV *server, UV id, IV flags, HV *stash, SV *cstate, SV *tstate) {
    HV *req = newHV(), *reqs;
    SV *self, *id_sv = newSVuv(id), *srv;
    int ws = (flags & PAGI_F_WEBSOCKET) != 0;
    dMY_CXT;
    (void)hv_stores(req, "id", id_sv);
    srv = newRV_inc((SV *)server);
    sv_rvweaken(srv);
    (void)hv_stores(req, "server", srv);
    (void)hv_stores(req, "native", copy_of(aTHX_ GETK(server, K_NATIVE)));
    (void)hv_stores(req, "loop", copy_of(aTHX_ GETK(server, K_LOOP_CACHE)));
    if (flags & PAGI_F_SSE) (void)hv_stores(req, "sse", newSViv(1));
    /* The one http.request of a request without a body is implied. */
    if ((flags & PAGI_F_BODY_EMPTY) && !ws) (void)hv_stores(req, "empty", newSViv(1));
    /* The client waits for "100 Continue", which the core sends once the
     * app first asks for the body. */
    if ((flags & PAGI_F_EXPECT) && !ws) (void)hv_stores(req, "expect", newSViv(1));
    if (cstate) (void)hv_stores(req, "cstate", newSVsv(cstate));
    (void)hv_stores(req, "tstate", newSVsv(tstate));
    self = sv_bless(newRV_noinc((SV *)req), stash);
    if ((reqs = hash_of(GETS(server, "requests"))))
        (void)hv_store_ent(reqs, id_sv, newSVsv(self), 0);
    return self;
}

/* A new request (Native::request_new, for SSE, WebSocket and
 * validate_events): its object, blessed into `class`
 * (PAGI::Server::Request or its subclass PAGI::Server::WebSocket), and
 * what it adds to its scope. */
static SV *request_new(pTHX_ SV *server_rv, UV id, SV *scope_rv, IV flags, const char *class) {
    HV *server = hash_of(server_rv), *scope = hash_of(scope_rv);
    SV *cstate, *tstate;
    dMY_CXT;
    if (!server || !scope) croak("PAGI::Server::Request: a server and a scope hash are needed");
    scope_prepare(aTHX_ server, scope, id, flags, &cstate, &tstate);
    return request_hash(aTHX_ server, id, flags,
                        strEQ(class, "PAGI::Server::Request") ? MY_CXT.req_stash : gv_stashpv(class, GV_ADD),
                        cstate, tstate);
}

/* ConnectionState::_mark_complete for a request nobody asked to be told
 * about (no callbacks, no Future): OPEN becomes DONE. Otherwise the Perl
 * method runs. */
static void cstate_complete(pTHX_ SV *rv) {
    HV *cs = hash_of(rv);
    SV *st;
    dMY_CXT;
    if (!cs) return;
    if (!SvOBJECT((SV *)cs) || SvSTASH((SV *)cs) != MY_CXT.cs_stash
        || hv_exists_ent(cs, SHARED(K_ON_DONE), 0) || hv_exists_ent(cs, SHARED(K_ON_GONE), 0)) {
        call_obj(aTHX_ rv, "_mark_complete", NULL, NULL);
        return;
    }
    st = GETK(cs, K_STATE);
    if (st && SvIV(st) == 0) sv_setiv(st, 1);
}

/* TransportState::_detach for one the server made (plain marks, no
 * callbacks): it stops measuring. Otherwise the Perl method runs. */
static void tstate_detach(pTHX_ SV *rv) {
    HV *ts = hash_of(rv);
    SV *high, *low;
    dMY_CXT;
    if (!ts || IS_TRUE(GETS(ts, "detached"))) return;
    high = GETS(ts, "high"); low = GETS(ts, "low");
    if (!SvOBJECT((SV *)ts) || SvSTASH((SV *)ts) != MY_CXT.ts_stash
        || (high && SvROK(high)) || (low && SvROK(low)) || hv_exists_ent(ts, SHARED(K_ON_HIGH), 0)
        || hv_exists_ent(ts, SHARED(K_ON_DRAIN), 0) || hv_exists(ts, "arm", 3) || hv_exists(ts, "measure", 7)) {
        call_obj(aTHX_ rv, "_detach", NULL, NULL);
        return;
    }
    (void)hv_stores(ts, "detached", newSViv(1));
    (void)hv_delete(ts, "native", 6, G_DISCARD);
    (void)hv_delete(ts, "high_now", 8, G_DISCARD);
}

#endif
