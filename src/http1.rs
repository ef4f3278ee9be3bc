//! HTTP/1.1 connections, served by hyper; each request becomes a REQUEST
//! record for Perl and waits for the head Perl sends back.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access_log::LogInfo;
use crate::bridge::level;
use crate::request::{push_request, read_body};
use crate::response::{Aborted, RespBody};
use crate::server::{ReqShared, ServerCore, FORCE, GRACEFUL, RUNNING};

#[derive(Clone)]
pub enum Peer {
    Tcp {
        client: SocketAddr,
        server: Option<SocketAddr>,
    },
    Unix {
        path: Arc<str>,
    },
}

impl Peer {
    fn log_host(&self) -> String {
        match self {
            Peer::Tcp { client, .. } => client.ip().to_string(),
            Peer::Unix { .. } => "unix".to_string(),
        }
    }
}

/// Requests of one connection that may still need a disconnect event.
type Active = Arc<Mutex<Vec<Arc<ReqShared>>>>;

/// Runs a future, turning a panic into an error message instead of unwinding.
pub struct CatchUnwind(pub Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<(), String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p.map(Ok),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

thread_local! {
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Replaces Rust's default panic printing (straight to stderr, past Perl's
/// `warn` and `quiet`): the location is kept for `panic_message`, and every
/// catch site logs through the bridge or croaks.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANIC_AT.with(|p| *p.borrow_mut() = at);
        }));
    });
}

pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    };
    let at = PANIC_AT.with(|p| std::mem::take(&mut *p.borrow_mut()));
    format!("{msg}{at}")
}

pub fn spawn<IO>(core: Arc<ServerCore>, io: IO, peer: Peer)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    core.connection_opened();
    tokio::spawn(async move {
        let active: Active = Arc::default();
        let served = CatchUnwind(Box::pin(serve(core.clone(), io, peer, active.clone()))).await;
        let reason = match served {
            Ok(()) => "client_closed",
            Err(msg) => {
                core.bridge.log(
                    level::ERROR,
                    &format!("PAGI::Server internal error (connection closed): {msg}"),
                );
                "server_error"
            }
        };
        finish_connection(&core, &active, reason);
        core.connection_closed();
    });
}

fn finish_connection(core: &ServerCore, active: &Active, reason: &str) {
    let pending: Vec<_> = active
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for sh in pending {
        core.disconnected(&sh, reason);
    }
}

async fn serve<IO>(core: Arc<ServerCore>, io: IO, peer: Peer, active: Active)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let (core, active) = (core.clone(), active.clone());
        service_fn(move |req| handle(core.clone(), peer.clone(), active.clone(), req))
    };
    let conn = http1::Builder::new()
        .half_close(false)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut sd = core.shutdown_watch();
    if *sd.borrow() != RUNNING {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            r = sd.changed() => {
                let phase = if r.is_ok() { *sd.borrow() } else { FORCE };
                if phase == GRACEFUL {
                    conn.as_mut().graceful_shutdown();
                } else if phase == FORCE {
                    finish_connection(&core, &active, "server_shutdown");
                    return;
                }
            }
        }
    }
}

async fn handle(
    core: Arc<ServerCore>,
    peer: Peer,
    active: Active,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Aborted> {
    if let Some(p) = core.cfg.panic_path.as_deref() {
        if req.uri().path() == p {
            panic!("test panic requested for {p}");
        }
    }
    let (parts, body) = req.into_parts();
    let log = core.cfg.access_log.then(|| LogInfo {
        client: peer.log_host(),
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        version: match parts.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            _ => "1.1",
        }
        .into(),
        headers: core
            .cfg
            .log_format
            .headers
            .iter()
            .map(|h| {
                parts
                    .headers
                    .get(h.as_str())
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            })
            .collect(),
        start: Instant::now(),
        status: 0,
        bytes: 0,
    });
    let (shared, head_rx, body_rx) = core.register(log);
    {
        let mut a = active.lock().unwrap_or_else(|e| e.into_inner());
        a.retain(|s| !s.fin.load(Ordering::SeqCst));
        a.push(shared.clone());
    }
    let empty = hyper::body::Body::is_end_stream(&body);
    push_request(&core, &shared, &parts, &peer, empty);
    if !empty {
        let (c, sh) = (core.clone(), shared.clone());
        tokio::spawn(async move {
            let reader = CatchUnwind(Box::pin(read_body(c.clone(), sh.clone(), body)));
            if let Err(msg) = reader.await {
                c.bridge.log(
                    level::ERROR,
                    &format!("PAGI::Server internal error (request body): {msg}"),
                );
                c.disconnected(&sh, "server_error");
            }
        });
    }
    let head = head_rx.await.map_err(|_| Aborted)?;
    let mut resp = Response::new(RespBody::new(body_rx, shared, core));
    *resp.status_mut() =
        StatusCode::from_u16(head.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    for (n, v) in head.headers {
        h.append(n, v);
    }
    Ok(resp)
}
