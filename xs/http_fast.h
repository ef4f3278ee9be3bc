/* A plain HTTP request (not SSE, validate_events off) run from its
 * REQUEST record to its app's return with its state in a C struct on
 * http_start's stack instead of a Perl request object. Most requests
 * answer with one http.response.start and one http.response.body and
 * never need the object: its hash, its registration in the server's
 * requests and the lookups of every send were a good part of what the
 * server's Perl side cost per request.
 *
 * The Perl object (PAGI::Server::Request) is made the moment anything
 * else is needed (fast_materialize): the app's first $receive, any other
 * event or state, a send that must wait for the client, a batch drained
 * while the app runs, an app that has not finished when it returns, or
 * closures the app keeps. From then on the closures are the ones of
 * request.h. Included by Server.xs after request.h. */
#ifndef PAGI_HTTP_FAST_H
#define PAGI_HTTP_FAST_H

typedef struct fastreq {
    SV *server_rv;        /* held by dispatch's caller */
    PagiServer *core;
    UV id;
    IV flags;             /* the record's PAGI_F_* flags */
    /* The scope's pagi.connection and pagi.transport values (counted):
     * placeholders until somebody reads them (see lazy_vtbl). */
    SV *cstate, *tstate;
    SV *body;             /* the first piece of the body, not yet queued */
    int more;
    CV *receive, *send;   /* the app's closures (alive while http_start runs) */
    SV *self;             /* the Perl request once made, else NULL */
    int after_app;        /* the app has returned: self is mortal */
    unsigned started : 1, done : 1, body_done : 1, trailers : 1;
    struct fastreq *outer; /* the one whose app was running when this began */
} fastreq;

XS_INTERNAL(fast_http_receive);
XS_INTERNAL(fast_http_send);

/* pagi.connection and pagi.transport are made when first read: most apps
 * never look at them, and making and freeing two blessed hashes was a
 * good part of a request's cost. Until then the scope holds a
 * placeholder with this magic (mg_ptr: the fastreq, mg_private: which
 * one); reading it (a copy, a method call, a test) makes the object in
 * its place, as it would stand now. Nothing outlives the request with
 * live magic: when it ends, http_start makes the objects of placeholders
 * that can still be reached and takes the magic off the others. */
static int lazy_get(pTHX_ SV *sv, MAGIC *mg);
static int lazy_set(pTHX_ SV *sv, MAGIC *mg);
static MGVTBL lazy_vtbl = { lazy_get, lazy_set, NULL, NULL, NULL, NULL, NULL, NULL };
enum { LAZY_CONNECTION, LAZY_TRANSPORT };

static SV *lazy_new(pTHX_ fastreq *fr, int which) {
    SV *ph = newSV(0);
    MAGIC *mg = sv_magicext(ph, NULL, PERL_MAGIC_ext, &lazy_vtbl, (const char *)fr, 0);
    mg->mg_private = (U16)which;
    return ph;
}

/* The placeholder's lazy magic, if it still has a live one. */
static MAGIC *lazy_mg(pTHX_ SV *ph) {
    /* Not SvMAGICAL: mg_get turns that off while a get runs. */
    MAGIC *mg = SvTYPE(ph) >= SVt_PVMG ? mg_findext(ph, PERL_MAGIC_ext, &lazy_vtbl) : NULL;
    return mg && mg->mg_ptr ? mg : NULL;
}

/* Takes the magic off. mg_get reads the entry again after its callback
 * unless no magic is left, so with other magic on the SV (a weakened
 * reference's backref, a tie) it is only made inert. */
static void lazy_drop(pTHX_ SV *ph, MAGIC *mg) {
    if (SvMAGIC(ph) == mg && !mg->mg_moremagic)
        sv_unmagicext(ph, PERL_MAGIC_ext, &lazy_vtbl);
    else
        mg->mg_ptr = NULL;
}

/* Makes the object of placeholder `ph`, if it is one still. */
static void lazy_resolve(pTHX_ fastreq *fr, SV *ph) {
    MAGIC *mg = lazy_mg(aTHX_ ph);
    HV *server, *obj;
    int which, ro;
    dMY_CXT;
    if (!mg) return;
    which = mg->mg_private;
    server = (HV *)SvRV(fr->server_rv);
    obj = which == LAZY_CONNECTION ? new_cstate(aTHX_ server) : new_tstate(aTHX_ server, fr->id);
    lazy_drop(aTHX_ ph, mg);
    /* Hash::Util::lock_hash makes the values read-only; they stay so. */
    ro = SvREADONLY(ph);
    if (ro) SvREADONLY_off(ph);
#ifdef sv_setrv_noinc
    sv_setrv_noinc(ph, (SV *)obj);
#else
    {
        SV *rv = newRV_noinc((SV *)obj);
        sv_setsv_nomg(ph, rv);
        SvREFCNT_dec(rv);
    }
#endif
    if (ro) SvREADONLY_on(ph);
    sv_bless(ph, which == LAZY_CONNECTION ? MY_CXT.cs_stash : MY_CXT.ts_stash);
    if (which == LAZY_CONNECTION && fr->started) cstate_started(aTHX_ ph);
}

/* A placeholder left unread when its frame goes loses its magic: if
 * anybody reaches it after all, it reads undef, not a dead frame. */
static void lazy_disarm(pTHX_ SV *ph) {
    MAGIC *mg = lazy_mg(aTHX_ ph);
    if (mg) lazy_drop(aTHX_ ph, mg);
}

static int lazy_get(pTHX_ SV *sv, MAGIC *mg) {
    if (mg->mg_ptr) lazy_resolve(aTHX_ (fastreq *)mg->mg_ptr, sv);
    return 0;
}

/* Assigned over before it was read: the app's value stays. */
static int lazy_set(pTHX_ SV *sv, MAGIC *mg) {
    if (mg->mg_ptr) lazy_drop(aTHX_ sv, mg);
    return 0;
}

/* The request's Perl object, made (and registered) if it is not yet. */
static HV *fast_materialize(pTHX_ fastreq *fr) {
    HV *req;
    dMY_CXT;
    if (fr->self) return (HV *)SvRV(fr->self);
    /* The Perl request works with the objects. */
    lazy_resolve(aTHX_ fr, fr->cstate);
    lazy_resolve(aTHX_ fr, fr->tstate);
    fr->self = request_hash(aTHX_ (HV *)SvRV(fr->server_rv), fr->id, fr->flags, MY_CXT.req_stash, fr->cstate, fr->tstate);
    /* Before the app returns, the temporaries of whatever called this may
     * go first: http_start makes it mortal then. */
    if (fr->after_app) sv_2mortal(fr->self);
    req = (HV *)SvRV(fr->self);
    if (fr->started) {
        (void)hv_stores(req, "started", newSViv(1));
        (void)hv_stores(req, "trailers", newSViv(fr->trailers));
    }
    if (fr->body_done) (void)hv_stores(req, "body_done", newSViv(1));
    if (fr->done) (void)hv_stores(req, "done", newSViv(1));
    bind_request(aTHX_ fr->receive, pagi_http_receive, req);
    bind_request(aTHX_ fr->send, pagi_http_send, req);
    if (fr->body) {
        SV *body = fr->body;
        fr->body = NULL;
        call_req(aTHX_ req, "body", body, sv_2mortal(newSViv(fr->more)));
    }
    return req;
}

/* Every request whose app is running now (a batch drained meanwhile
 * may have records for them, and the server may let go of the core). */
static void fast_materialize_running(pTHX) {
    fastreq *fr;
    dMY_CXT;
    for (fr = MY_CXT.current; fr; fr = fr->outer) fast_materialize(aTHX_ fr);
}

static SV *fast_result(pTHX_ fastreq *fr, int rc) {
    tstate_written(aTHX_ fr->tstate, rc);
    return rc == PAGI_PENDING ? call_req(aTHX_ fast_materialize(aTHX_ fr), "_wait_drain", NULL, NULL)
                              : done_future(aTHX);
}

/* $receive: Request::_receive. */
XS_INTERNAL(fast_http_receive) {
    dXSARGS;
    PERL_UNUSED_VAR(items);
    ST(0) = call_req(aTHX_ fast_materialize(aTHX_ (fastreq *)CvXSUBANY(cv).any_ptr), "_receive", NULL, NULL);
    XSRETURN(1);
}

/* $send: as pagi_http_send, on the struct. */
XS_INTERNAL(fast_http_send) {
    dXSARGS;
    fastreq *fr = (fastreq *)CvXSUBANY(cv).any_ptr;
    HV *e;
    dMY_CXT;
    SV *ev = items > 0 ? ST(0) : &PL_sv_undef;
    int kind = event_kind(aTHX_ ev, &e), rc;
    if (kind == EV_BODY && fr->started) {
        const uint8_t *log = NULL; size_t log_len = 0;
        int more, fin;
        if (fr->done || fr->body_done) {
            ST(0) = done_future(aTHX);
            XSRETURN(1);
        }
        more = IS_TRUE(GETK(e, K_MORE));
        fin = !more && !fr->trailers;
        rc = send_body_sv(aTHX_ fr->core, fr->id, GETK(e, K_BODY), fin, &log, &log_len);
        if (fin) {
            fr->done = 1;
            if (log_len)
                call_obj(aTHX_ fr->server_rv, "_write_access_log",
                         sv_2mortal(newSVpvn((const char *)log, log_len)), NULL);
        }
        else if (!more) {
            fr->body_done = 1;
        }
        ST(0) = fast_result(aTHX_ fr, rc);
        XSRETURN(1);
    }
    if (kind == EV_START && !fr->started && !fr->done) {
        SV *headers = GETK(e, K_HEADERS);
        uint16_t status = start_status(aTHX_ GETK(e, K_STATUS), headers);
        rc = core_start(aTHX_ fr->core, fr->id, status, headers);
        cstate_started(aTHX_ fr->cstate);
        fr->started = 1;
        fr->trailers = IS_TRUE(GETK(e, K_TRAILERS));
        ST(0) = fast_result(aTHX_ fr, rc);
        XSRETURN(1);
    }
    ST(0) = call_req(aTHX_ fast_materialize(aTHX_ fr), "_send", ev, NULL);
    XSRETURN(1);
}

static CV *fast_closure(pTHX_ XSUBADDR_t body, fastreq *fr) {
    CV *cv;
    dMY_CXT;
    cv = MY_CXT.nspare ? MY_CXT.spare[--MY_CXT.nspare] : newXS_flags(NULL, body, __FILE__, NULL, 0);
    CvXSUB(cv) = body;
    CvXSUBANY(cv).any_ptr = fr;
    return cv;
}

/* A closure that only this frame holds, and that nobody blessed, named or
 * put magic on, is kept for the next request. */
static void fast_closure_done(pTHX_ CV *cv) {
    dMY_CXT;
    if (SvREFCNT(cv) == 1 && !SvMAGICAL((SV *)cv) && !SvOBJECT((SV *)cv) && CvANON(cv)
        && MY_CXT.nspare < (int)(sizeof MY_CXT.spare / sizeof MY_CXT.spare[0])) {
        CvXSUBANY(cv).any_ptr = NULL;
        MY_CXT.spare[MY_CXT.nspare++] = (CV *)SvREFCNT_inc_simple_NN((SV *)cv);
    }
}

/* A plain http request, from its REQUEST record to the app's return;
 * `body`/`more`: the first piece of its body, when that came with it
 * (else NULL; it outlives this call). When the app has answered
 * completely and its Future is done, the request ends here (what
 * _app_finished does in that case); otherwise Request::_app_ran takes
 * over. */
static void http_start(pTHX_ SV *server_rv, UV id, SV *scope_rv, IV flags, SV *body, int more) {
    HV *server = hash_of(server_rv), *scope = hash_of(scope_rv), *req, *cs;
    SV *app, *f, *err = NULL, *receive, *send;
    fastreq fr;
    int n, fast = 0, kept, held_t;
    dSP;
    dMY_CXT;
    if (!server || !scope) croak("PAGI::Server: a server and a scope hash are needed");
    if (!(app = GETK(server, K_APP))) croak("PAGI::Server: no app");
    Zero(&fr, 1, fastreq);
    fr.server_rv = server_rv;
    fr.core = handle_of(aTHX_ GETK(server, K_NATIVE));
    fr.id = id;
    fr.flags = flags;
    fr.body = body;
    fr.more = more;
    scope_prepare(aTHX_ server, scope, id, flags, NULL, NULL);
    fr.cstate = lazy_new(aTHX_ &fr, LAZY_CONNECTION);
    fr.tstate = lazy_new(aTHX_ &fr, LAZY_TRANSPORT);
    PUTK(scope, K_CONNECTION, fr.cstate);
    PUTK(scope, K_TRANSPORT, fr.tstate);
    /* The app may take them out of its scope. */
    sv_2mortal(SvREFCNT_inc_simple_NN(fr.cstate));
    sv_2mortal(SvREFCNT_inc_simple_NN(fr.tstate));
    receive = sv_2mortal(newRV_noinc((SV *)(fr.receive = fast_closure(aTHX_ fast_http_receive, &fr))));
    send = sv_2mortal(newRV_noinc((SV *)(fr.send = fast_closure(aTHX_ fast_http_send, &fr))));

    fr.outer = MY_CXT.current;
    MY_CXT.current = &fr;
    ENTER; SAVETMPS;
    PUSHMARK(SP);
    EXTEND(SP, 3);
    PUSHs(scope_rv); PUSHs(receive); PUSHs(send);
    PUTBACK;
    n = call_sv(app, G_SCALAR | G_EVAL);
    SPAGAIN;
    f = n ? POPs : &PL_sv_undef;
    SvREFCNT_inc_simple_void(f);
    PUTBACK;
    if (SvTRUE(ERRSV)) err = newSVsv(ERRSV);
    FREETMPS; LEAVE;
    MY_CXT.current = fr.outer;
    fr.after_app = 1;
    if (fr.self) sv_2mortal(fr.self);
    sv_2mortal(f);
    if (err) sv_2mortal(err);

    req = fr.self ? (HV *)SvRV(fr.self) : NULL;
    if (!err && (req ? IS_TRUE(GETS(req, "done")) : fr.done) && sv_isobject(f)
        && strEQ(HvNAME(SvSTASH(SvRV(f))), "Future"))
        fast = future_is_done(aTHX_ f);
    if (!fast) {
        call_req(aTHX_ fast_materialize(aTHX_ &fr), "_app_ran", f, err ? err : &PL_sv_undef);
        return;
    }
    /* A placeholder that somebody can still reach gets its object now,
     * before this frame goes: when the scope is kept (by its hash, or by
     * the reference the app was called with), when closures that will
     * make the request object are kept, or when the value itself is held
     * by more than this frame and (while it still holds it) the scope.
     * The others lose their magic unread, before any callback runs: if
     * something reached one after all, it would read undef, never a dead
     * frame. */
    kept = SvREFCNT(scope_rv) > 1 || SvREFCNT(SvRV(scope_rv)) > 1
           || (!req && (SvREFCNT(fr.receive) > 1 || SvREFCNT(fr.send) > 1));
    held_t = kept || SvREFCNT(fr.tstate) > 1 + (GETK(scope, K_TRANSPORT) == fr.tstate);
    if (kept || SvREFCNT(fr.cstate) > 1 + (GETK(scope, K_CONNECTION) == fr.cstate))
        lazy_resolve(aTHX_ &fr, fr.cstate);
    /* The connection state's callbacks (run by cstate_complete) may reach
     * the scope through a weak reference. */
    if (held_t
        || ((cs = hash_of(fr.cstate))
            && (hv_exists_ent(cs, SHARED(K_ON_DONE), 0) || hv_exists_ent(cs, SHARED(K_ON_GONE), 0))))
        lazy_resolve(aTHX_ &fr, fr.tstate);
    lazy_disarm(aTHX_ fr.cstate);
    lazy_disarm(aTHX_ fr.tstate);
    cstate_complete(aTHX_ fr.cstate);
    /* Detaching is only seen by those who hold the transport state (or
     * its object): nobody when only its scope and this frame do. */
    if (SvROK(fr.tstate) && (held_t || SvREFCNT(SvRV(fr.tstate)) > 1))
        tstate_detach(aTHX_ fr.tstate);
    /* Closures the app kept must go on working (a late send is ignored)
     * once this frame, which they point to, is gone. */
    if (!req && (SvREFCNT(fr.receive) > 1 || SvREFCNT(fr.send) > 1)) req = fast_materialize(aTHX_ &fr);
    if (req) {
        (void)hv_stores(req, "app_done", newSViv(1));
        req_forget(aTHX_ req);
        return;
    }
    fast_closure_done(aTHX_ fr.receive);
    fast_closure_done(aTHX_ fr.send);
}

#endif
