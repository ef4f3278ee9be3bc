//! Unit tests of `server`: the send calls and their states.

use super::*;

fn core() -> ServerCore {
    let cfg =
        Config::parse("listen=tcp:127.0.0.1:0\nwrite_high_watermark=10\nwrite_low_watermark=4")
            .expect("config");
    ServerCore::new(cfg).expect("core")
}

fn response(rx: &mut oneshot::Receiver<Reply>) -> Head {
    match rx.try_recv() {
        Ok(Reply::Response(h)) => h,
        _ => panic!("no response head"),
    }
}

#[test]
fn send_lifecycle_and_backpressure() {
    let c = core();
    let (shared, mut head_rx, mut body_rx) = c.register(None);
    let id = shared.id;
    assert_eq!(
        c.send_start(id, 200, &[(&b"Content-Type"[..], &b"text/plain"[..])]),
        SendState::Ready
    );
    assert!(
        head_rx.try_recv().is_err(),
        "held until the first body frame"
    );
    // A second start is refused.
    assert_eq!(c.send_start(id, 500, &[]), SendState::Gone);
    assert_eq!(
        c.send_body(id, Bytes::from_static(b"12345"), false).0,
        SendState::Ready
    );
    let head = response(&mut head_rx);
    assert_eq!(head.status, 200);
    assert_eq!(head.headers.len(), 1);
    assert!(!c.unstart(id), "the head is on its way");
    assert!(!shared.want_drain.load(Ordering::SeqCst), "under the mark");
    // 5 bytes wait, under the mark of 10: the next write is accepted too
    // (a drain is wanted: the backlog reached the mark), and the one after
    // that, which finds 11 waiting, must wait.
    assert_eq!(
        c.send_body(id, Bytes::from_static(b"678901"), false).0,
        SendState::Ready
    );
    assert!(shared.want_drain.load(Ordering::SeqCst));
    assert_eq!(
        c.send_body(id, Bytes::from_static(b"2"), false).0,
        SendState::Pending
    );
    assert!(shared.want_drain.load(Ordering::SeqCst));
    assert_eq!(c.send_body(id, Bytes::new(), true).0, SendState::Ready);
    assert!(shared.fin.load(Ordering::SeqCst));
    assert_eq!(
        c.send_body(id, Bytes::from_static(b"x"), true).0,
        SendState::Gone
    );
    let mut frames = 0;
    while let Ok(f) = body_rx.try_recv() {
        frames += 1;
        if frames == 4 {
            assert!(matches!(f, Out::End));
        }
    }
    assert_eq!(frames, 4);
}

#[test]
fn injected_header_values_are_dropped() {
    let c = core();
    let (shared, mut head_rx, _b) = c.register(None);
    c.send_start(
        shared.id,
        200,
        &[
            (&b"x-ok"[..], &b"fine"[..]),
            (&b"x-bad"[..], &b"a\r\nSet-Cookie: evil"[..]),
            (&b"transfer-encoding"[..], &b"chunked"[..]),
        ],
    );
    c.send_body(shared.id, Bytes::new(), false);
    let head = response(&mut head_rx);
    let names: Vec<_> = head.headers.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(names, vec![&b"x-ok"[..]]);
}

#[test]
fn a_held_head_can_be_taken_back_or_released() {
    let c = core();
    // Taken back (a file body could not be opened): the app starts again.
    let (shared, mut head_rx, _b) = c.register(None);
    assert_eq!(c.send_start(shared.id, 200, &[]), SendState::Ready);
    assert!(c.unstart(shared.id));
    assert!(!c.unstart(shared.id), "only once");
    assert_eq!(c.send_start(shared.id, 404, &[]), SendState::Ready);
    c.send_body(shared.id, Bytes::from_static(b"gone"), true);
    assert_eq!(response(&mut head_rx).status, 404);

    // An abort still lets the head go out before the connection closes.
    let (shared, mut head_rx, mut body_rx) = c.register(None);
    c.send_start(shared.id, 200, &[]);
    c.abort(shared.id);
    assert_eq!(response(&mut head_rx).status, 200);
    assert!(matches!(body_rx.try_recv(), Ok(Out::Abort)));

    // A stream setting sends the head at once, as does a 1xx.
    let (shared, mut head_rx, mut body_rx) = c.register(None);
    c.send_start(shared.id, 200, &[]);
    let s = crate::sse::Settings::new(0.0, Bytes::new());
    assert_eq!(c.stream_control(shared.id, Out::Sse(s)), SendState::Ready);
    assert!(head_rx.try_recv().is_ok());
    assert!(matches!(body_rx.try_recv(), Ok(Out::Sse(_))));
    let (shared, mut head_rx, _b) = c.register(None);
    c.send_start(shared.id, 101, &[]);
    assert_eq!(response(&mut head_rx).status, 101);
}
#[test]
fn a_websocket_accept_goes_out_once_with_the_subprotocol_last() {
    let c = core();
    let (shared, mut head_rx, _b) = c.register(None);
    let hdrs = [
        (&b"X-A"[..], &b"1"[..]),
        (&b"Transfer-Encoding"[..], &b"x"[..]),
    ];
    assert_eq!(
        c.ws_accept(shared.id, Some(b"chat"), &hdrs),
        SendState::Ready
    );
    assert_eq!(c.ws_accept(shared.id, None, &[]), SendState::Gone);
    let Ok(Reply::WsAccept(a)) = head_rx.try_recv() else {
        panic!("no accept");
    };
    let names: Vec<_> = a.fields.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(names, vec![&b"X-A"[..], b"Sec-WebSocket-Protocol"]);
    // A denial already under way cannot be turned into an accept.
    let (shared, _h, _b) = c.register(None);
    c.send_start(shared.id, 403, &[]);
    assert_eq!(c.ws_accept(shared.id, None, &[]), SendState::Gone);
}

#[test]
fn request_ids_spread_over_the_table() {
    use std::hash::BuildHasher;
    // Sequential ids must differ in the low bits (the bucket) and the top
    // seven (the tag).
    // A window of live ids fills a table's buckets one each, whatever the
    // table's size, and their tags take many values.
    for bits in [6u32, 14, 17] {
        let size = 1u64 << bits;
        let start = 1_000_003u64;
        let h: Vec<u64> = (start..start + size)
            .map(|id| IdHash.hash_one(id))
            .collect();
        let buckets: std::collections::HashSet<u64> = h.iter().map(|x| x & (size - 1)).collect();
        assert_eq!(buckets.len() as u64, size, "buckets of a 2^{bits} table");
        let tags: std::collections::HashSet<u64> = h.iter().map(|x| x >> 57).collect();
        assert!(
            tags.len() >= 32.min(size as usize / 2),
            "{} tags",
            tags.len()
        );
    }
}
