//! HTTP glue: extract, authenticate, call a `Processes` method, reply.

use axum::{extract::State, response::Response};
use hutch_envd::process::{
    CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
    ListResponse, SendInputRequest, SendInputResponse, SendSignalRequest, SendSignalResponse,
    StartRequest, StartResponse, StreamInputRequest, StreamInputResponse, UpdateRequest,
    UpdateResponse, stream_input_request::Event,
};

use super::{
    ProcessError, output,
    spec::{self, parse_timeout},
};
use crate::{
    GuestState,
    auth::RequestUser,
    rpc::{
        ClientStream, Headers, RpcError, StreamRequest, Unary, UnaryReply, server_stream,
        stream_error, stream_response,
    },
};

type UnaryResult<M> = Result<UnaryReply<M>, RpcError>;

pub async fn start(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    Headers(headers): Headers,
    req: StreamRequest<StartRequest>,
) -> Response {
    let codec = req.codec;
    let result = async {
        let timeout = parse_timeout(
            headers
                .get("connect-timeout-ms")
                .and_then(|v| v.to_str().ok()),
        )?;
        let spec =
            spec::validate_start(req.msg, user, &state.config, &state.processes.path, timeout)?;
        state.processes.start(spec).await
    }
    .await;
    match result {
        Ok((_pid, rx)) => {
            let (sender, reply) = server_stream::<StartResponse>(codec);
            output::spawn_forwarder(sender, rx, req.keepalive);
            stream_response(Ok(reply))
        }
        Err(e) => stream_error(codec, e.into()),
    }
}

pub async fn connect(
    State(state): State<GuestState>,
    req: StreamRequest<ConnectRequest>,
) -> Response {
    match state.processes.attach(req.msg.process.as_ref()) {
        Ok((_pid, rx)) => {
            let (sender, reply) = server_stream::<ConnectResponse>(req.codec);
            output::spawn_forwarder(sender, rx, req.keepalive);
            stream_response(Ok(reply))
        }
        Err(e) => stream_error(req.codec, e.into()),
    }
}

pub async fn list(
    State(state): State<GuestState>,
    req: Unary<ListRequest>,
) -> UnaryResult<ListResponse> {
    Ok(UnaryReply {
        codec: req.codec,
        msg: ListResponse {
            processes: state.processes.list(),
        },
    })
}

pub async fn send_input(
    State(state): State<GuestState>,
    req: Unary<SendInputRequest>,
) -> UnaryResult<SendInputResponse> {
    let SendInputRequest { process, input } = req.msg;
    state
        .processes
        .send_input(process.as_ref(), input.and_then(|i| i.input))
        .await?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: SendInputResponse {},
    })
}

pub async fn close_stdin(
    State(state): State<GuestState>,
    req: Unary<CloseStdinRequest>,
) -> UnaryResult<CloseStdinResponse> {
    state.processes.close_stdin(req.msg.process.as_ref())?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: CloseStdinResponse {},
    })
}

pub async fn send_signal(
    State(state): State<GuestState>,
    req: Unary<SendSignalRequest>,
) -> UnaryResult<SendSignalResponse> {
    state
        .processes
        .send_signal(req.msg.process.as_ref(), req.msg.signal)?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: SendSignalResponse {},
    })
}

pub async fn update(
    State(state): State<GuestState>,
    req: Unary<UpdateRequest>,
) -> UnaryResult<UpdateResponse> {
    let size = req
        .msg
        .pty
        .as_ref()
        .map(|p| spec::pty_size(p.size.as_ref()))
        .transpose()?;
    state.processes.resize(req.msg.process.as_ref(), size)?;
    Ok(UnaryReply {
        codec: req.codec,
        msg: UpdateResponse {},
    })
}

/// Client stream: `start{process}` first, then `data{input}` and
/// `keepalive{}` events; replies once the client ends its stream.
pub async fn stream_input(
    State(state): State<GuestState>,
    mut req: ClientStream<StreamInputRequest>,
) -> Response {
    let codec = req.codec;
    match stream_input_inner(&state, &mut req).await {
        Ok(()) => {
            let (sender, reply) = server_stream::<StreamInputResponse>(codec);
            // A fresh stream channel has room for one message.
            tokio::spawn(async move {
                let _ = sender.send(&StreamInputResponse {}).await;
            });
            stream_response(Ok(reply))
        }
        Err(e) => stream_error(codec, e.0),
    }
}

async fn stream_input_inner(
    state: &GuestState,
    req: &mut ClientStream<StreamInputRequest>,
) -> Result<(), RpcError> {
    let mut proc = None;
    while let Some(msg) = req.next().await? {
        match msg.event {
            Some(Event::Start(start)) => proc = Some(state.processes.find(start.process.as_ref())?),
            Some(Event::Data(data)) => {
                let Some(p) = &proc else {
                    return Err(ProcessError::invalid(
                        "the first message of StreamInput must be `start`",
                    )
                    .into());
                };
                state
                    .processes
                    .write_input(p, data.input.and_then(|i| i.input))
                    .await?;
            }
            Some(Event::Keepalive(_)) => {}
            None => {
                return Err(ProcessError::invalid(
                    "a StreamInput message must hold start, data or keepalive",
                )
                .into());
            }
        }
    }
    Ok(())
}
