//! A process's events read to its end give their connection back to the
//! pool; dropped before the end, hyper closes the connection and the next
//! call connects again.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::StreamBody;
use hutch_envd::{
    connect::{Codec, end_stream, envelope},
    process::{
        ProcessEvent, StartResponse,
        process_event::{EndEvent, Event, StartEvent},
    },
};
use hutch_guest_client::{Endpoint, GuestClient, process};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

fn message(event: Event) -> Bytes {
    envelope(
        0,
        &Codec::Json.encode(&StartResponse {
            event: Some(ProcessEvent { event: Some(event) }),
        }),
    )
}

/// A guest stand-in answering every call with `start`, `end` at once and
/// the end-of-stream message 10 ms later, as a guest whose last write comes
/// a little after the end event. Returns the count of accepted connections.
fn serve(listener: tokio::net::UnixListener) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let (tx, rx) =
                        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                    tokio::spawn(async move {
                        let _ = tx
                            .send(Ok(Frame::data(message(Event::Start(StartEvent {
                                pid: 7,
                            })))))
                            .await;
                        let end = EndEvent {
                            exit_code: 0,
                            exited: true,
                            status: "exit status 0".into(),
                            error: None,
                        };
                        let _ = tx.send(Ok(Frame::data(message(Event::End(end))))).await;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let _ = tx.send(Ok(Frame::data(end_stream(None)))).await;
                    });
                    let body = StreamBody::new(tokio_stream_from(rx));
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/connect+json")
                            .body(body)
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    accepted
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Makes 5 calls, each read to its end event, or dropped after its start.
async fn calls(to_the_end: bool) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("guest.sock");
    let accepted = serve(tokio::net::UnixListener::bind(&sock).expect("bind"));
    let client = GuestClient::new(Endpoint::Unix(sock));
    for _ in 0..5 {
        let mut events = client.start(process::Spec::default()).await.expect("call");
        loop {
            let event = events
                .next()
                .await
                .expect("event")
                .expect("not the end yet");
            match event {
                process::Event::Started { .. } if !to_the_end => break,
                process::Event::End(_) => break,
                _ => {}
            }
        }
        drop(events);
        // Spacing (not a readiness wait): the end-of-stream message comes
        // 10 ms after the end event, and a finished stream's drain needs it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_to_the_end_give_their_connection_back() {
    assert_eq!(
        calls(true).await,
        1,
        "every call reused the first connection"
    );
}

/// The twin: dropped before the end, every call pays a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_before_the_end_cost_a_connection_per_call() {
    assert_eq!(calls(false).await, 5);
}
