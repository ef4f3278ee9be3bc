//! Load clients for the benches, small and fast enough that the figure is
//! the server's: one thread, no TLS, raw HTTP/1.1.
//!
//! ```text
//! pagi-loadgen sse PORT PATH SECONDS
//!     one SSE stream; prints "events N seconds S rate R"
//! pagi-loadgen ws PORT PATH CLIENTS SECONDS SIZE
//!     CLIENTS WebSockets, each sending a SIZE-byte text message and
//!     waiting for its echo, again and again; prints
//!     "echoes N seconds S rate R errors E"
//! ```

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, String>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Res<T> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {}", args[i]))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = match args.get(1).map(String::as_str) {
        Some("sse") => sse(&args).await,
        Some("ws") => ws(&args).await,
        _ => Err("usage: pagi-loadgen sse PORT PATH SECONDS | ws PORT PATH CLIENTS SECONDS SIZE".into()),
    };
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("pagi-loadgen: {e}");
            std::process::exit(1);
        }
    }
}

async fn connect(port: u16) -> Res<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to port {port}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Reads until the end of the response head; returns the head and what
/// came after it.
async fn read_head(s: &mut TcpStream) -> Res<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
    }
}

async fn sse(args: &[String]) -> Res<String> {
    let port: u16 = arg(args, 2, "PORT")?;
    let path: String = arg(args, 3, "PATH")?;
    let secs: f64 = arg(args, 4, "SECONDS")?;
    let mut s = connect(port).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let (head, rest) = read_head(&mut s).await?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response: {}", head.lines().next().unwrap_or("")));
    }
    // Events end with a blank line; chunk framing never contains "\n\n".
    let mut events = 0u64;
    let mut last = 0u8;
    let mut count = |b: &[u8], last: &mut u8| {
        for &c in b {
            if c == b'\n' && *last == b'\n' {
                events += 1;
            }
            if c != b'\r' {
                *last = c;
            }
        }
    };
    count(&rest, &mut last);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < end {
        match tokio::time::timeout_at(end.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => count(&buf[..n], &mut last),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    let took = start.elapsed().as_secs_f64();
    Ok(format!("events {events} seconds {took:.2} rate {:.0}", events as f64 / took))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x81);
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one whole unmasked server frame out of `buf` (refilled from `s`);
/// returns its payload length.
async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Res<usize> {
    let mut chunk = [0u8; 65536];
    loop {
        if buf.len() >= 2 {
            let (len, hdr) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => (usize::MAX, 0),
                n => (n as usize, 2),
            };
            if len != usize::MAX && buf.len() >= hdr + len {
                buf.drain(..hdr + len);
                return Ok(len);
            }
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn ws_client(port: u16, path: String, end: Instant, size: usize) -> Res<u64> {
    let mut s = connect(port).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let (head, mut buf) = read_head(&mut s).await?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("no upgrade: {}", head.lines().next().unwrap_or("")));
    }
    let msg = frame(&vec![b'x'; size]);
    let mut echoes = 0;
    while Instant::now() < end {
        s.write_all(&msg).await.map_err(|e| e.to_string())?;
        let got = read_frame(&mut s, &mut buf).await?;
        if got != size {
            return Err(format!("echo of {got} bytes, sent {size}"));
        }
        echoes += 1;
    }
    Ok(echoes)
}

async fn ws(args: &[String]) -> Res<String> {
    let port: u16 = arg(args, 2, "PORT")?;
    let path: String = arg(args, 3, "PATH")?;
    let clients: usize = arg(args, 4, "CLIENTS")?;
    let secs: f64 = arg(args, 5, "SECONDS")?;
    let size: usize = arg(args, 6, "SIZE")?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let set = tokio::task::LocalSet::new();
    let results = set
        .run_until(async {
            let tasks: Vec<_> = (0..clients)
                .map(|_| tokio::task::spawn_local(ws_client(port, path.clone(), end, size)))
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
            }
            all
        })
        .await;
    let took = start.elapsed().as_secs_f64();
    let echoes: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(e) = errors.first() {
        eprintln!("pagi-loadgen: {} clients failed, first: {e}", errors.len());
    }
    Ok(format!(
        "echoes {echoes} seconds {took:.2} rate {:.0} errors {}",
        echoes as f64 / took,
        errors.len()
    ))
}
