//! Answering a refused request without losing the answer.
//!
//! A refused request (401, 404, 413...) is answered as soon as its headers are read, while the
//! client may still be sending its body. hyper then closes the connection under the client,
//! whose next write fails (EPIPE or a reset): an HTTP client that stops at a failed write
//! reports "broken pipe" or "incomplete message" instead of the error that says what it did
//! wrong. CI saw exactly that for a 413 to a 2 MiB create body. Two measures, outermost first:
//!
//! - [`drain_refused`] (middleware): after an error response, reads what is left of the request
//!   body, at most [`DRAIN_BYTES`] within [`DRAIN_TIME`], before the response goes out — as Go's
//!   net/http does (with 256 KiB). The connection then stays usable. A body larger than that is
//!   left unread and the response says `Connection: close`.
//! - [`LingeringListener`]: a connection hyper closes is not closed at once; its write side is
//!   shut (the client sees the response end) and whatever the client still sends is read and
//!   thrown away until it closes its side, for at most [`LINGER_TIME`] and [`LINGER_BYTES`] —
//!   nginx's `lingering_close`. Without it, bytes arriving at a closed socket are answered with
//!   a reset, which also makes the client's kernel drop a response it had not read yet.
//!
//! hyper and axum have neither (hyper drains only what has already arrived), hence this module.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::server::Ticket;

/// How much of a refused request's body is read before its error response.
pub const DRAIN_BYTES: u64 = 8 << 20;
/// How long that reading may take.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A request body that, dropped before its end, hands itself back to [`drain_refused`].
struct Returning {
    inner: Option<Body>,
    back: Option<oneshot::Sender<Body>>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map(http_body::Body::size_hint)
            .unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.inner.take(), self.back.take())
            && !http_body::Body::is_end_stream(&body)
        {
            let _ = back.send(body);
        }
    }
}

/// Middleware: see the module docs.
pub async fn drain_refused(req: Request, next: Next) -> Response {
    // Not worth waiting for: a body declared larger than the drain reads (it would end in
    // `Connection: close` anyway, after up to `DRAIN_TIME`), and one the client holds back
    // until told to send it (`Expect: 100-continue`: reading would ask for it).
    let hopeless = crate::extract::declared_length(req.headers()).is_some_and(|n| n > DRAIN_BYTES)
        || req
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (back, mut returned) = oneshot::channel();
    let req = req.map(|inner| {
        Body::new(Returning {
            inner: Some(inner),
            back: Some(back),
        })
    });
    let mut resp = next.run(req).await;
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return resp;
    }
    // Read to its end, or still held by the handler (which owns it then): nothing to drain.
    let Ok(body) = returned.try_recv() else {
        return resp;
    };
    if hopeless || resp.headers().get(http::header::CONNECTION) == Some(&CLOSE) {
        resp.headers_mut().insert(http::header::CONNECTION, CLOSE);
        return resp;
    }
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        use futures::StreamExt as _;
        let mut stream = body.into_data_stream();
        let mut seen = 0u64;
        while seen <= DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => seen += chunk.len() as u64,
                Some(Err(_)) => return false,
                None => return true,
            }
        }
        false
    })
    .await;
    if drained != Ok(true) {
        resp.headers_mut().insert(http::header::CONNECTION, CLOSE);
    }
    resp
}

const CLOSE: http::HeaderValue = http::HeaderValue::from_static("close");

/// How long a closed connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much it reads at most before closing anyway.
pub const LINGER_BYTES: u64 = 64 << 20;

/// A TCP listener whose connections close by lingering (see the module docs), with Nagle's
/// algorithm off (exec events are small writes that should leave at once).
pub struct LingeringListener {
    inner: TcpListener,
}

impl LingeringListener {
    pub fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl axum::serve::Listener for LingeringListener {
    type Io = LingeringStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%addr, error = %e, "could not set TCP_NODELAY");
                    }
                    return (LingeringStream::new(stream, None), addr);
                }
                // A connection that went away between SYN and accept: try the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                // Out of file descriptors or memory: accepting again at once would spin.
                Err(e) => {
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; dropping it starts the lingering close.
pub struct LingeringStream {
    /// `None` only once dropped.
    inner: Option<TcpStream>,
    /// The connection's place under the caps ([`crate::server`]), given back when the
    /// lingering ends: a lingering socket still holds a file descriptor.
    ticket: Option<Ticket>,
}

impl LingeringStream {
    pub(crate) fn new(inner: TcpStream, ticket: Option<Ticket>) -> Self {
        Self {
            inner: Some(inner),
            ticket,
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        // Only `drop` takes the stream, and nothing polls a dropped value.
        Pin::new(self.inner.as_mut().expect("stream polled after drop"))
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        // Outside a runtime (never, under axum) the stream just closes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(stream, self.ticket.take()));
        }
    }
}

/// Shuts the write side, then reads and discards until the client closes or a bound is hit;
/// `_ticket` is released at the end.
async fn linger(mut stream: TcpStream, _ticket: Option<Ticket>) {
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut (&mut stream).take(LINGER_BYTES), &mut sink).await;
    })
    .await;
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;

    /// Refuses every request at its headers, as a failed key check does.
    fn refusing_router() -> Router {
        Router::new().route(
            "/upload",
            post(|| async { (http::StatusCode::UNAUTHORIZED, "no") }),
        )
    }

    /// A 1 MiB JSON limit: a larger body is refused after reading 1 MiB of it.
    fn json_router() -> Router {
        Router::new()
            .route("/upload", post(|_: axum::Json<serde_json::Value>| async {}))
            .layer(DefaultBodyLimit::max(1 << 20))
    }

    async fn serve<L: axum::serve::Listener>(listener: L, router: Router)
    where
        L::Addr: std::fmt::Debug,
    {
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    }

    async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// Sends a 2 MiB JSON body with reqwest up to `tries` times; the statuses it got, or the
    /// first failure.
    async fn post_big_json(addr: SocketAddr, tries: usize) -> Result<Vec<u16>, reqwest::Error> {
        let http = reqwest::Client::new();
        let body = format!("{{\"k\": \"{}\"}}", "x".repeat(2 << 20));
        let mut statuses = Vec::new();
        for _ in 0..tries {
            let resp = http
                .post(format!("http://{addr}/upload"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            statuses.push(resp.status().as_u16());
        }
        Ok(statuses)
    }

    /// A 2 MiB body and, on the same connection, a second request; everything answered.
    async fn oversized_then_small(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = vec![b' '; 2 << 20];
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        // A server that closed after its 413 may reset this write or the read below.
        let _ = s
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                  Content-Length: 2\r\nConnection: close\r\n\r\n{}",
            )
            .await;
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply).await;
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_body_gets_its_413_on_a_connection_that_stays_open() {
        let (listener, addr) = bind().await;
        let router = json_router().layer(axum::middleware::from_fn(drain_refused));
        serve(LingeringListener::new(listener), router).await;
        let statuses = post_big_json(addr, 50).await.expect("every answer read");
        assert!(statuses.iter().all(|s| *s == 413), "{statuses:?}");
        let reply = oversized_then_small(addr).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(
            reply.contains("HTTP/1.1 200"),
            "second request answered: {reply}"
        );
    }

    /// Twin: without the drain, hyper closes the connection after the 413, under the client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_drain_the_connection_is_closed_under_the_client() {
        let (listener, addr) = bind().await;
        serve(LingeringListener::new(listener), json_router()).await;
        let reply = oversized_then_small(addr).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(!reply.contains("HTTP/1.1 200"), "{reply}");
    }

    /// Sends the headers of a 16 MiB upload, waits until the server has answered them, then
    /// sends the body; the reply, or the failed write.
    async fn upload_after_the_answer(addr: SocketAddr) -> io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        let body = vec![b'x'; 16 << 20];
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        let mut probe = [0u8; 1];
        s.peek(&mut probe).await?;
        s.write_all(&body).await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_connection_reads_what_the_client_still_sends() {
        let (listener, addr) = bind().await;
        serve(LingeringListener::new(listener), refusing_router()).await;
        for _ in 0..3 {
            let reply = upload_after_the_answer(addr).await.expect("body sent");
            assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
            assert!(reply.ends_with("no"), "{reply}");
        }
    }

    /// Twin: closed at once, the connection resets the client's writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plainly_closed_connection_resets_the_client() {
        let (listener, addr) = bind().await;
        serve(listener, refusing_router()).await;
        let outcome = upload_after_the_answer(addr).await;
        assert!(
            matches!(&outcome, Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)),
            "{outcome:?}"
        );
    }
}
