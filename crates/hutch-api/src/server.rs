//! The accept loop: which connections are served, and how long a client may take.
//!
//! Anyone who reaches the port can open connections and send requests slowly; without bounds,
//! a few thousand half-sent requests hold every file descriptor and `/healthz` goes silent.
//! Per accepted socket:
//! 1. Admission ([`Admission::admit`]): under the global cap and under the cap of the client's
//!    address (an IPv4 address, or an IPv6 /64), the connection is *normal*. Over either, it
//!    may take one of a few *reserve* places, kept for `GET /healthz` and the operator, if its
//!    address holds fewer than `reserve_per_client` connections in all (a health checker or
//!    an operator holds one or two; an attacker that filled the caps holds many). Otherwise it
//!    is answered 503 `unavailable` (server full) or 429 `too_many_connections` (address full)
//!    without being read, and closed.
//! 2. hyper serves it (HTTP/1.1) with a header read timeout: each request head must be complete
//!    within it, counted from the connection's start or from the end of the previous response,
//!    so it is also the keep-alive idle timeout. Reserve connections get a short one. hyper
//!    closes a connection that runs out of it without a reply.
//! 3. Each request body must keep to a minimum rate once its handler reads it ([`BodyRate`]);
//!    one that falls behind ends, and [`answer_slow_body`] answers 408 `request_timeout`.
//! 4. On a reserve connection, [`reserve_gate`] lets through `/healthz` and requests with the
//!    operator's key; anything else gets the refusal of step 1 and the connection closes.
//! 5. The connection's [`Ticket`] (its place under the caps) is held until its socket has
//!    finished lingering ([`crate::linger`]): a lingering socket still holds a descriptor.
//! 6. Once a surge of connections has passed, the memory they freed is given back to the
//!    system ([`crate::memory`]).
//!
//! A body declared larger than its route takes is refused before it is read
//! ([`crate::extract::JsonBody`]). Why a hand-written loop rather than `axum::serve`: the latter
//! has no header timeout, no caps and no per-connection state to mark a reserve connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hutch_api_types::ErrorBody;
use hutch_core::{Error, Role};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::error::{ApiError, status_of};
use crate::extract::{AppState, presented_key};
use crate::linger::LingeringStream;

/// How the server bounds its clients. [`Default`] is what `hutch serve` starts with;
/// [`ServeConfig::unbounded`] turns every bound off (tests show what each bound prevents).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a request head may take, and how long a kept-alive connection may idle.
    pub header_timeout: Option<Duration>,
    /// The slowest a request body may arrive.
    pub body_rate: Option<BodyRate>,
    /// Normal connections open at once.
    pub max_connections: Option<usize>,
    /// Normal connections open at once from one address (IPv4) or /64 (IPv6).
    pub max_connections_per_client: Option<usize>,
    /// Connections admitted beyond the caps for `/healthz` and the operator.
    pub reserve: usize,
    /// Only an address holding fewer connections than this (normal and reserve) gets a
    /// reserve place.
    pub reserve_per_client: usize,
    /// The header timeout of a reserve connection.
    pub reserve_header_timeout: Duration,
    /// The most a connection buffers of a request head (and reads at once): a head that does
    /// not fit is refused with 431.
    pub max_buf_size: usize,
}

/// hyper's own default read buffer bound (`max_buf_size`): 8 KiB + 100 × 4 KiB.
const HYPER_MAX_BUF_SIZE: usize = 8192 + 4096 * 100;

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_timeout: Some(Duration::from_secs(10)),
            body_rate: Some(BodyRate::default()),
            max_connections: Some(4096),
            max_connections_per_client: Some(256),
            reserve: 128,
            reserve_per_client: 2,
            reserve_header_timeout: Duration::from_secs(1),
            max_buf_size: 64 << 10,
        }
    }
}

impl ServeConfig {
    /// No timeouts, no caps, no reserve, hyper's buffer bound: `axum::serve`'s behaviour.
    pub fn unbounded() -> Self {
        Self {
            header_timeout: None,
            body_rate: None,
            max_connections: None,
            max_connections_per_client: None,
            reserve: 0,
            reserve_per_client: 0,
            reserve_header_timeout: Duration::from_secs(2),
            max_buf_size: HYPER_MAX_BUF_SIZE,
        }
    }
}

/// A body's minimum rate, as Apache's `mod_reqtimeout` (`body=20,MinRate=500`) has it: from
/// its first read, a body may take `grace` plus one second per `min_bytes_per_s` bytes
/// received. A rate averaged over the whole body, unlike a timeout between reads, which a
/// client defeats by sending a byte just before each expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRate {
    pub grace: Duration,
    pub min_bytes_per_s: u64,
}

impl Default for BodyRate {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            min_bytes_per_s: 1024,
        }
    }
}

impl BodyRate {
    fn deadline(&self, started: Instant, received: u64) -> Instant {
        let earned =
            Duration::from_millis(received.saturating_mul(1000) / self.min_bytes_per_s.max(1));
        started + self.grace + earned
    }
}

/// Where a connection was admitted; in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Normal,
    /// Over a cap: only `/healthz` and the operator; others get this refusal.
    Reserve(Refusal),
}

/// Why a connection is over the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    ClientFull { limit: usize },
}

impl Refusal {
    fn error(self) -> Error {
        match self {
            Refusal::ServerFull => {
                Error::Unavailable("the server has too many connections; retry later".to_owned())
            }
            Refusal::ClientFull { limit } => Error::TooManyConnections { limit },
        }
    }

    /// The whole reply, for a socket no HTTP connection is built on. Written by hand: a refused
    /// connection is not worth hyper's buffers, and nothing of its request is read.
    fn reply(self) -> Vec<u8> {
        let e = self.error();
        let status = status_of(e.code());
        let body = serde_json::to_string(&ErrorBody {
            code: e.code().as_str().to_owned(),
            message: e.to_string(),
        })
        .unwrap_or_default();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

/// The counts behind the caps (step 1 of the module docs).
pub struct Admission {
    global: Option<Arc<Semaphore>>,
    reserve: Arc<Semaphore>,
    per_client: Option<usize>,
    reserve_per_client: usize,
    clients: Mutex<HashMap<IpAddr, Held>>,
    surge: Mutex<Surge>,
    /// Called once a surge has passed ([`crate::memory::release_freed`]; tests count calls).
    release: fn(),
}

/// Open connections, and the most open since memory was last released.
#[derive(Debug, Default)]
struct Surge {
    open: usize,
    high_water: usize,
}

/// A surge is at least this many connections open at once; it has passed when a quarter of
/// its peak remain. After a release the count starts again from what remains, so the tail of
/// a large surge (a quarter of 4096 is still a surge) is released in turn.
const SURGE: usize = 64;

#[derive(Debug, Default)]
struct Held {
    normal: usize,
    reserve: usize,
}

/// A connection's place under the caps; dropping it gives the place back.
pub struct Ticket {
    place: Place,
    client: IpAddr,
    admission: Arc<Admission>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    pub fn place(&self) -> Place {
        self.place
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut clients = self.admission.lock();
            if let Some(held) = clients.get_mut(&self.client) {
                match self.place {
                    Place::Normal => held.normal -= 1,
                    Place::Reserve(_) => held.reserve -= 1,
                }
                if held.normal == 0 && held.reserve == 0 {
                    clients.remove(&self.client);
                }
            }
        }
        let passed = {
            let mut surge = self.admission.surge();
            surge.open -= 1;
            let passed = surge.high_water >= SURGE && surge.open <= surge.high_water / 4;
            if passed {
                surge.high_water = surge.open;
            }
            passed
        };
        if passed {
            tracing::debug!("a surge of connections has passed; releasing freed memory");
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(self.admission.release)),
                Err(_) => (self.admission.release)(),
            }
        }
    }
}

/// The address a cap counts: IPv4 as is; IPv6 by its /64, which one client usually holds whole.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

impl Admission {
    pub fn new(config: &ServeConfig) -> Arc<Self> {
        Arc::new(Self {
            global: config.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            reserve: Arc::new(Semaphore::new(config.reserve)),
            per_client: config.max_connections_per_client,
            reserve_per_client: config.reserve_per_client,
            clients: Mutex::new(HashMap::new()),
            surge: Mutex::new(Surge::default()),
            release: crate::memory::release_freed,
        })
    }

    fn surge(&self) -> std::sync::MutexGuard<'_, Surge> {
        self.surge.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Held>> {
        // The map is consistent after every statement: a panic elsewhere leaves it usable.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `peer`, or why there is none.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let client = client_of(peer);
        let mut clients = self.lock();
        let held = clients.entry(client).or_default();
        let refusal = match self.per_client {
            Some(limit) if held.normal >= limit => Refusal::ClientFull { limit },
            _ => match self.global.as_ref().map(|g| g.clone().try_acquire_owned()) {
                None => return Ok(self.ticket(held, Place::Normal, client, None)),
                Some(Ok(permit)) => {
                    return Ok(self.ticket(held, Place::Normal, client, Some(permit)));
                }
                Some(Err(_)) => Refusal::ServerFull,
            },
        };
        // Only a light client may use the reserve: an address already holding its share of
        // connections (an attacker over its cap, typically) would fill it in no time.
        if held.normal + held.reserve < self.reserve_per_client
            && let Ok(permit) = self.reserve.clone().try_acquire_owned()
        {
            let place = Place::Reserve(refusal);
            return Ok(self.ticket(held, place, client, Some(permit)));
        }
        if held.normal == 0 && held.reserve == 0 {
            clients.remove(&client);
        }
        Err(refusal)
    }

    fn ticket(
        self: &Arc<Self>,
        held: &mut Held,
        place: Place,
        client: IpAddr,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Ticket {
        match place {
            Place::Normal => held.normal += 1,
            Place::Reserve(_) => held.reserve += 1,
        }
        let mut surge = self.surge();
        surge.open += 1;
        surge.high_water = surge.high_water.max(surge.open);
        Ticket {
            place,
            client,
            admission: self.clone(),
            _permit: permit,
        }
    }
}

/// Middleware, step 4 of the module docs.
pub async fn reserve_gate(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(Place::Reserve(refusal)) = req.extensions().get::<Place>().copied() else {
        return next.run(req).await;
    };
    let allowed = req.uri().path() == "/healthz"
        || match presented_key(req.headers()) {
            Some(key) => app
                .control
                .authenticate(key)
                .await
                .is_ok_and(|p| p.role == Role::Operator),
            None => false,
        };
    if allowed {
        return next.run(req).await;
    }
    let mut resp = ApiError::from(refusal.error()).into_response();
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// Set in a request's extensions when its body fell below its [`BodyRate`].
#[derive(Debug, Clone)]
struct SlowBody {
    fell_behind: Arc<AtomicBool>,
    rate: BodyRate,
}

/// Middleware, step 3 of the module docs: whatever the handler made of its failed body read
/// (a 400 from a JSON extractor, an aborted upload), the client is told it was too slow.
pub async fn answer_slow_body(req: Request, next: Next) -> Response {
    let slow = req.extensions().get::<SlowBody>().cloned();
    let resp = next.run(req).await;
    match slow {
        Some(slow) if slow.fell_behind.load(Ordering::Relaxed) => {
            let mut resp = ApiError::from(Error::RequestTimeout {
                min_rate: slow.rate.min_bytes_per_s,
            })
            .into_response();
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            resp
        }
        _ => resp,
    }
}

/// A request body held to a [`BodyRate`]; once behind, it fails for good.
struct Paced {
    inner: Incoming,
    rate: BodyRate,
    started: Option<Instant>,
    received: u64,
    timer: Pin<Box<Sleep>>,
    fell_behind: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body below {0} bytes/s")]
struct TooSlow(u64);

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if this.fell_behind.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(TooSlow(this.rate.min_bytes_per_s).into())));
        }
        if this.started.is_none() {
            let now = Instant::now();
            this.started = Some(now);
            this.timer.as_mut().reset(this.rate.deadline(now, 0));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let started = this.started.unwrap_or_else(Instant::now);
                    let deadline = this.rate.deadline(started, this.received);
                    this.timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                this.fell_behind.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(TooSlow(this.rate.min_bytes_per_s).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `req` as the router takes it: its body paced if it has one, its connection's place noted.
fn prepare(req: http::Request<Incoming>, place: Place, rate: Option<BodyRate>) -> Request {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(place);
    let body = match rate {
        Some(rate) if !http_body::Body::is_end_stream(&body) => {
            let fell_behind = Arc::new(AtomicBool::new(false));
            parts.extensions.insert(SlowBody {
                fell_behind: fell_behind.clone(),
                rate,
            });
            Body::new(Paced {
                inner: body,
                rate,
                started: None,
                received: 0,
                timer: Box::pin(tokio::time::sleep(rate.grace)),
                fell_behind,
            })
        }
        _ => Body::new(body),
    };
    Request::from_parts(parts, body)
}

fn http1(
    config: &ServeConfig,
    header_timeout: Option<Duration>,
) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(config.max_buf_size.max(8192));
    b
}

/// Serves `router` on `listener` within `config`'s bounds until `shutdown` resolves, then
/// lets the connections finish what they are doing (as `axum::serve` does).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let admission = Admission::new(&config);
    let normal = http1(&config, config.header_timeout);
    let reserve = http1(&config, Some(config.reserve_header_timeout));
    // Every connection task holds a receiver: `closed()` below waits for the last one.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                refuse(stream, refusal);
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let place = ticket.place();
        let builder = match place {
            Place::Normal => &normal,
            Place::Reserve(_) => &reserve,
        };
        let rate = config.body_rate;
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            router.clone().oneshot(prepare(req, place, rate))
        });
        let io = TokioIo::new(LingeringStream::new(stream, Some(ticket)));
        let conn = builder.serve_connection(io, service).with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let done = tokio::select! {
                done = conn.as_mut() => done,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}

/// Writes `refusal`'s reply if the socket takes it at once, and closes.
fn refuse(stream: TcpStream, refusal: Refusal) {
    tracing::debug!(?refusal, "connection refused");
    let _ = stream.try_write(&refusal.reply());
}

async fn accept_failed(e: io::Error) {
    match e.kind() {
        // A connection that went away between SYN and accept: try the next one.
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {}
        // Out of file descriptors or memory: accepting again at once would spin.
        _ => {
            tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(global: usize, per_client: usize, reserve: usize, share: usize) -> Arc<Admission> {
        Admission::new(&ServeConfig {
            max_connections: Some(global),
            max_connections_per_client: Some(per_client),
            reserve,
            reserve_per_client: share,
            ..ServeConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn an_address_over_its_cap_gets_the_reserve_while_it_holds_few_connections() {
        let a = admission(100, 2, 10, 4);
        let client = ip("10.0.0.1");
        let normal: Vec<_> = (0..2).map(|_| a.admit(client).expect("normal")).collect();
        assert!(normal.iter().all(|t| t.place() == Place::Normal));
        let full = Refusal::ClientFull { limit: 2 };
        let reserve: Vec<_> = (0..2).map(|_| a.admit(client).expect("reserve")).collect();
        assert!(reserve.iter().all(|t| t.place() == Place::Reserve(full)));
        assert_eq!(a.admit(client).err(), Some(full));
        // Another address is untouched.
        assert_eq!(
            a.admit(ip("10.0.0.2")).expect("other").place(),
            Place::Normal
        );
        // A normal place given back is a normal place again.
        drop(normal);
        assert_eq!(a.admit(client).expect("again").place(), Place::Normal);
        // An address at its cap with more than the share gets no reserve place.
        let b = admission(100, 5, 10, 4);
        let _held: Vec<_> = (0..5).map(|_| b.admit(client).expect("normal")).collect();
        assert_eq!(
            b.admit(client).err(),
            Some(Refusal::ClientFull { limit: 5 })
        );
    }

    #[test]
    fn over_the_global_cap_connections_go_to_the_reserve_until_it_is_full() {
        let a = admission(2, 100, 3, 3);
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2"]
            .map(|c| a.admit(ip(c)).expect("normal"))
            .into_iter()
            .collect();
        let reserve: Vec<_> = ["10.0.0.3", "10.0.0.4", "10.0.0.5"]
            .map(|c| a.admit(ip(c)).expect("reserve"))
            .into_iter()
            .collect();
        assert!(
            reserve
                .iter()
                .all(|t| t.place() == Place::Reserve(Refusal::ServerFull))
        );
        assert_eq!(a.admit(ip("10.0.0.6")).err(), Some(Refusal::ServerFull));
        drop(held);
        drop(reserve);
        assert!(a.lock().is_empty(), "every count given back");
    }

    static RELEASED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn memory_is_released_once_a_surge_has_passed() {
        let a = Arc::new(Admission {
            release: || {
                RELEASED.fetch_add(1, Ordering::Relaxed);
            },
            ..Arc::into_inner(admission(10_000, 10_000, 0, 0)).expect("sole owner")
        });
        let mut open: Vec<_> = (0..SURGE)
            .map(|_| a.admit(ip("10.0.0.1")).expect("normal"))
            .collect();
        open.truncate(SURGE / 4 + 1);
        assert_eq!(RELEASED.load(Ordering::Relaxed), 0, "not yet at a quarter");
        open.pop();
        assert_eq!(RELEASED.load(Ordering::Relaxed), 1);
        drop(open);
        assert_eq!(RELEASED.load(Ordering::Relaxed), 1, "once per surge");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = admission(100, 1, 0, 0);
        let _t = a.admit(ip("2001:db8:1:2::1")).expect("first");
        assert!(a.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(client_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn a_body_earns_time_with_each_byte() {
        let rate = BodyRate {
            grace: Duration::from_secs(10),
            min_bytes_per_s: 1000,
        };
        let t0 = Instant::now();
        assert_eq!(rate.deadline(t0, 0), t0 + Duration::from_secs(10));
        assert_eq!(rate.deadline(t0, 5000), t0 + Duration::from_secs(15));
        assert_eq!(rate.deadline(t0, 500), t0 + Duration::from_millis(10_500));
    }

    #[test]
    fn refusal_replies_are_complete_http_with_a_stable_code() {
        let r = String::from_utf8(Refusal::ClientFull { limit: 4 }.reply()).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{r}");
        let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{r}"
        );
        assert!(body.contains("\"code\":\"too_many_connections\""), "{r}");
        let r = String::from_utf8(Refusal::ServerFull.reply()).expect("utf-8");
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("\"code\":\"unavailable\""), "{r}");
    }
}
