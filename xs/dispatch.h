/* Working through one drained batch of bridge records. A plain HTTP
 * request (the record nearly every batch is made of) goes straight to
 * http_start, a DRAIN to its request's drained method; every other record
 * goes, in order, to the server's Perl method _on_record. Doing the loop
 * here spares each request the Perl values of its record and a Perl loop
 * turn and sub call.
 * Included by Server.xs after http_fast.h. */
#ifndef PAGI_DISPATCH_H
#define PAGI_DISPATCH_H

/* $server->_on_record($kind, $id, $a, $b[, $body, $more]). */
static void on_record(pTHX_ SV *server_rv, const record *rec, const record *body) {
    dSP;
    ENTER; SAVETMPS;
    PUSHMARK(SP);
    EXTEND(SP, 7);
    PUSHs(server_rv);
    mPUSHi(rec->kind);
    mPUSHu((UV)rec->id);
    PUSHs(rec->a);
    PUSHs(rec->b);
    if (body) {
        PUSHs(body->a);
        PUSHs(body->b);
    }
    PUTBACK;
    call_method("_on_record", G_DISCARD);
    FREETMPS; LEAVE;
}

/* A DRAIN record: the request's backlog fell back to the low mark, and
 * its waiting sends (and on_drain callbacks) go on ($req->drained). Its
 * Perl object exists if anyone waits: a send that waited made it, and so
 * did an app that was still running when it returned. One comes for about
 * every other chunk a streaming app sends. */
static void on_drain(pTHX_ HV *server, uint64_t id) {
    HV *reqs = hash_of(GETS(server, "requests"));
    SV **req;
    char key[24];
    int len = my_snprintf(key, sizeof key, "%" UVuf, (UV)id);
    if (reqs && (req = hv_fetch(reqs, key, len, 0)) && SvROK(*req))
        /* A counted copy: what drained runs may forget the request. */
        call_obj(aTHX_ sv_2mortal(newSVsv(*req)), "drained", NULL, NULL);
}

/* The BODY record of request `id` right behind its REQUEST record (the
 * core read a small body along with the head), if there is one: read
 * into `body`, else the reader is left where it was. */
static int next_body(pTHX_ reader *r, uint64_t id, record *body) {
    reader peek = *r;
    uint8_t kind; uint64_t next_id;
    if (!rd_u8(&peek, &kind) || !rd_u64(&peek, &next_id) || kind != PAGI_REC_BODY || next_id != id)
        return 0;
    peek = *r;
    if (read_record(aTHX_ &peek, body) != REC_READ) return 0;
    sv_2mortal(body->a); sv_2mortal(body->b);
    *r = peek;
    return 1;
}

/* Works through the records of one drain of the server's core. */
static void dispatch_batch(pTHX_ SV *server_rv) {
    HV *server = hash_of(server_rv);
    PagiServer *s; SV *copy; reader r;
    const uint8_t *buf = NULL; size_t len = 0;
    SV *native;
    int validate, retire;
    dMY_CXT;
    native = server ? GETK(server, K_NATIVE) : NULL;
    if (!IS_DEFINED(native)) return;
    /* Settings of the server's life, read once per batch. */
    validate = IS_TRUE(GETK(server, K_VALIDATE));
    retire = IS_TRUE(GETK(server, K_RETIRE));
    /* Drained while apps run: what comes may concern their requests. */
    fast_materialize_running(aTHX);
    s = handle_of(aTHX_ native);
    free_returned(aTHX_ s);
    if (pagi_server_drain(s, &buf, &len) == PAGI_ERR_PANIC) croak_panic(aTHX_ s);
    if (!len) return;
    /* The core's buffer is reused by the next drain, which an app run from
     * here may cause (a shutdown drains what is queued). */
    copy = sv_2mortal(newSVpvn((const char *)buf, len));
    r.p = (const uint8_t *)SvPVX(copy); r.end = r.p + len;
    while (r.p < r.end) {
        record rec, body;
        int got, has_body = 0;
        /* An app run by an earlier record may have released the core. */
        if (!IS_DEFINED(GETK(server, K_NATIVE))) break;
        got = read_record(aTHX_ &r, &rec);
        if (got == REC_SKIP) continue;
        if (got == REC_SHORT) {
            warn("PAGI::Server: malformed bridge record (kind %d); rest of batch dropped", (int)rec.kind);
            break;
        }
        ENTER; SAVETMPS;
        sv_2mortal(rec.a); sv_2mortal(rec.b);
        if (rec.kind == PAGI_REC_REQUEST) {
            IV flags = SvIV(rec.b);
            if (!(flags & PAGI_F_WEBSOCKET)) has_body = next_body(aTHX_ &r, rec.id, &body);
            if (!(flags & (PAGI_F_WEBSOCKET | PAGI_F_SSE)) && !validate)
                http_start(aTHX_ server_rv, (UV)rec.id, rec.a, flags, has_body ? body.a : NULL,
                           has_body ? SvIV(body.b) : 0);
            else
                on_record(aTHX_ server_rv, &rec, has_body ? &body : NULL);
            if (retire)
                call_obj(aTHX_ server_rv, "_on_request_complete", NULL, NULL);
        }
        else if (rec.kind == PAGI_REC_DRAIN) {
            on_drain(aTHX_ server, rec.id);
        }
        else {
            on_record(aTHX_ server_rv, &rec, NULL);
        }
        FREETMPS; LEAVE;
    }
}

#endif
