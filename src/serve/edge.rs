//! The service's edge: accepting connections and reading requests up to the point the router
//! takes over.
//!
//! The service accepts its own connections (instead of leaving that to axum-server) for two
//! things only an accept loop can do. It caps open connections per client address and in total,
//! so a few hundred slow clients cannot take every socket and file descriptor: a connection over
//! a cap gets a short 503 saying which cap, and is closed. And it sees how each connection ended:
//! hyper answers a malformed request line or header itself (400), a URI too long (414) or a
//! header section too large (431), and drops a client that sends no complete request within the
//! header timeout (slowloris), all before any route runs, so no access-log line would ever show
//! them. [`EdgeStats`] counts each kind for `/metrics` and the console, and [`EdgeStats::report`]
//! sums them up for a rate-limited line on stderr, so an operator sees attack traffic.
//!
//! Connections are served by hyper-util's auto builder (HTTP/1.1, and HTTP/2 where TLS offers
//! it), with hyper's timer for the header timeout. Stopping is graceful: no new connections,
//! each open one finishes its request in flight, and after the grace period the rest are cut.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsAcceptor;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Caps and timeouts at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Open connections in total (503 and closed beyond).
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_per_client: usize,
    /// How long a client has to send a complete request head (from connecting, and between
    /// requests on a kept-alive connection) before it is dropped.
    pub header_timeout: Duration,
}

impl Default for EdgeLimits {
    /// 1024 connections, 256 per client address (a quarter: one address cannot take them all,
    /// while a load generator or a proxy on one address still can open a few hundred), 10 s for
    /// a request head. 1024 stays under the usual limit of open files.
    fn default() -> Self {
        EdgeLimits { max_connections: 1024, max_per_client: 256, header_timeout: Duration::from_secs(10) }
    }
}

/// Why the edge turned a connection or a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A malformed request line or header: hyper answered 400.
    BadRequest,
    /// hyper answered 414.
    UriTooLong,
    /// hyper answered 431.
    HeadersTooLarge,
    /// No complete request head within the header timeout.
    SlowHeaders,
    /// The TLS handshake failed or timed out.
    Tls,
    /// Over the per-client connection cap.
    ClientCap,
    /// Over the total connection cap.
    TotalCap,
}

impl Rejection {
    pub const ALL: [Rejection; 7] = [
        Rejection::BadRequest,
        Rejection::UriTooLong,
        Rejection::HeadersTooLarge,
        Rejection::SlowHeaders,
        Rejection::Tls,
        Rejection::ClientCap,
        Rejection::TotalCap,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::BadRequest => "bad_request",
            Rejection::UriTooLong => "uri_too_long",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::SlowHeaders => "slow_headers",
            Rejection::Tls => "tls",
            Rejection::ClientCap => "client_cap",
            Rejection::TotalCap => "total_cap",
        }
    }

    /// Whether it refused a whole connection (the caps) rather than a request on one.
    pub fn is_connection(self) -> bool {
        matches!(self, Rejection::ClientCap | Rejection::TotalCap)
    }

    fn describe(self) -> &'static str {
        match self {
            Rejection::BadRequest => "malformed requests (400)",
            Rejection::UriTooLong => "URIs too long (414)",
            Rejection::HeadersTooLarge => "header sections too large (431)",
            Rejection::SlowHeaders => "clients too slow to send a request head",
            Rejection::Tls => "failed TLS handshakes",
            Rejection::ClientCap => "connections over the per-client cap",
            Rejection::TotalCap => "connections over the total cap",
        }
    }

    fn index(self) -> usize {
        Rejection::ALL.iter().position(|r| *r == self).expect("every kind is in ALL")
    }
}

/// What the edge saw: open connections and what it turned away, by kind.
#[derive(Debug, Default)]
pub struct EdgeStats {
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    counts: [AtomicU64; 7],
    /// The latest rejection: from whom, and what hyper said.
    last: Mutex<Option<(SocketAddr, String)>>,
    /// Counts at the last [`EdgeStats::report`].
    reported: Mutex<[u64; 7]>,
    /// Refusal answers being written now (bounded, so a flood cannot pile them up).
    refusing: AtomicUsize,
}

impl EdgeStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How many of one kind so far.
    pub fn count(&self, kind: Rejection) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Requests rejected before routing (every kind but the connection caps).
    pub fn rejected_requests(&self) -> u64 {
        Rejection::ALL.iter().filter(|k| !k.is_connection()).map(|k| self.count(*k)).sum()
    }

    /// Connections refused by the caps.
    pub fn refused_connections(&self) -> u64 {
        Rejection::ALL.iter().filter(|k| k.is_connection()).map(|k| self.count(*k)).sum()
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &EdgeLimits) -> Result<Slot, Rejection> {
        let mut per = self.per_client.lock().expect("the connection table lock is never poisoned");
        if self.open.load(Ordering::Relaxed) >= limits.max_connections {
            return Err(Rejection::TotalCap);
        }
        let n = per.entry(ip).or_insert(0);
        if *n >= limits.max_per_client {
            return Err(Rejection::ClientCap);
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { stats: self.clone(), ip })
    }

    fn reject(&self, kind: Rejection, peer: SocketAddr, detail: String) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        *self.last.lock().expect("never poisoned") = Some((peer, detail));
    }

    /// One line on what was turned away since the last call, or `None` when nothing was: for
    /// an operator's log at most every few seconds, however much attack traffic arrives.
    pub fn report(&self) -> Option<String> {
        let mut seen = self.reported.lock().expect("never poisoned");
        let now: [u64; 7] = std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed));
        let parts: Vec<String> = Rejection::ALL
            .iter()
            .zip(now.iter().zip(seen.iter()))
            .filter(|(_, (n, s))| n > s)
            .map(|(k, (n, s))| format!("{} {}", n - s, k.describe()))
            .collect();
        if parts.is_empty() {
            return None;
        }
        *seen = now;
        let last = match &*self.last.lock().expect("never poisoned") {
            Some((peer, detail)) => format!("; the last from {peer}: {detail}"),
            None => String::new(),
        };
        Some(format!("turned away before routing: {}{last}", parts.join(", ")))
    }
}

/// An open connection's place under the caps; given back when the connection ends.
struct Slot {
    stats: Arc<EdgeStats>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self.stats.per_client.lock().expect("the connection table lock is never poisoned");
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`serve`] needs.
pub struct Edge {
    pub listener: TcpListener,
    pub app: Router,
    pub tls: Option<RustlsAcceptor>,
    pub limits: EdgeLimits,
    pub stats: Arc<EdgeStats>,
    /// How long open connections get to finish once `stop` is set.
    pub grace: Duration,
}

/// Accepts and serves connections until `stop` turns true (or its sender goes), then stops
/// gracefully.
pub async fn serve(edge: Edge, mut stop: watch::Receiver<bool>) {
    let Edge { listener, app, tls, limits, stats, grace } = edge;
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(v) => v,
            // Out of file descriptors or similar: wait a moment instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let slot = match stats.admit(peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(kind) => {
                let why = match kind {
                    Rejection::ClientCap => format!(
                        "too many connections from {} (the service allows {} per client address)",
                        peer.ip(),
                        limits.max_per_client
                    ),
                    _ => format!("too many connections (the service allows {})", limits.max_connections),
                };
                stats.reject(kind, peer, why.clone());
                // A plain-text answer means nothing inside TLS: those are just closed.
                if tls.is_none() && stats.refusing.load(Ordering::Relaxed) < 64 {
                    stats.refusing.fetch_add(1, Ordering::Relaxed);
                    let stats = stats.clone();
                    tasks.spawn(async move {
                        refuse(tcp, &why).await;
                        stats.refusing.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                continue;
            }
        };
        // TCP_NODELAY: a response goes out as soon as it is written, instead of waiting for the
        // client's delayed ACK (Nagle), which otherwise adds tens of milliseconds to some answers.
        let _ = tcp.set_nodelay(true);
        let conn =
            Conn { peer, app: app.clone(), builder: builder.clone(), stats: stats.clone(), limits, slot };
        let stop = stop.clone();
        match &tls {
            None => {
                tasks.spawn(conn.serve(tcp, stop));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tasks.spawn(async move {
                    match acceptor.accept(tcp, ()).await {
                        Ok((stream, _)) => conn.serve(stream, stop).await,
                        Err(e) => conn.stats.reject(Rejection::Tls, peer, e.to_string()),
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

/// Answers a connection over a cap with a 503 and closes it, after reading (briefly) what the
/// client sends, so that closing with unread data does not reset the connection before the
/// client has read the answer.
async fn refuse(mut tcp: TcpStream, why: &str) {
    let body = serde_json::json!({ "error": format!("{why}; close some connections and retry") }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    stats: Arc<EdgeStats>,
    limits: EdgeLimits,
    slot: Slot,
}

impl Conn {
    async fn serve<I>(self, io: I, mut stop: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn { peer, app, builder, stats, limits, slot } = self;
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        // hyper times the head of each HTTP/1 request, but not the protocol detection before
        // the first one: a client that connects and sends nothing is timed here.
        let first = tokio::time::sleep(limits.header_timeout);
        tokio::pin!(first);
        let (mut first_checked, mut graceful) = (false, false);
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = &mut first, if !first_checked => {
                    first_checked = true;
                    if !started.load(Ordering::Relaxed) {
                        let why = format!("no request within {} s", limits.header_timeout.as_secs_f64());
                        stats.reject(Rejection::SlowHeaders, peer, why);
                        return;
                    }
                }
                _ = stop.wait_for(|s| *s), if !graceful => {
                    graceful = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        drop(slot);
        if let Err(e) = result
            && let Some(e) = e.downcast_ref::<hyper::Error>()
            && let Some(kind) = classify(e)
        {
            stats.reject(kind, peer, e.to_string());
        }
    }
}

/// The rejections hyper makes itself; other connection errors (a client that hung up) are not
/// attack traffic and are not counted.
fn classify(e: &hyper::Error) -> Option<Rejection> {
    if e.is_parse_too_large() {
        // hyper tells the two apart only in its message ("URI too long" / "message head is too
        // large"), as it does in the status it answered.
        return Some(if e.to_string().contains("URI") {
            Rejection::UriTooLong
        } else {
            Rejection::HeadersTooLarge
        });
    }
    if e.is_parse() {
        return Some(Rejection::BadRequest);
    }
    if e.is_timeout() {
        return Some(Rejection::SlowHeaders);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_count_per_address_and_in_total_and_give_slots_back() {
        let stats = Arc::new(EdgeStats::default());
        let limits = EdgeLimits { max_connections: 3, max_per_client: 2, ..EdgeLimits::default() };
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = stats.admit(a, &limits).unwrap();
        let _s2 = stats.admit(a, &limits).unwrap();
        assert_eq!(stats.admit(a, &limits).err(), Some(Rejection::ClientCap));
        let _s3 = stats.admit(b, &limits).unwrap();
        assert_eq!(stats.admit(b, &limits).err(), Some(Rejection::TotalCap));
        drop(s1);
        assert_eq!(stats.open(), 2);
        assert!(stats.admit(a, &limits).is_ok(), "a slot given back is free again");
    }

    #[test]
    fn the_report_says_what_is_new_once() {
        let stats = EdgeStats::default();
        assert_eq!(stats.report(), None);
        let peer: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        stats.reject(Rejection::BadRequest, peer, "invalid HTTP header parsed".into());
        stats.reject(Rejection::BadRequest, peer, "invalid HTTP header parsed".into());
        stats.reject(Rejection::ClientCap, peer, "too many".into());
        let line = stats.report().unwrap();
        assert!(line.contains("2 malformed requests (400)"), "{line}");
        assert!(line.contains("1 connections over the per-client cap"), "{line}");
        assert!(line.ends_with("the last from 127.0.0.2:4000: too many"), "{line}");
        assert_eq!(stats.report(), None, "nothing new since");
        assert_eq!((stats.rejected_requests(), stats.refused_connections()), (2, 1));
    }
}
