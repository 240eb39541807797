//! `GET /files` and `POST /files`: plain-HTTP file transfer, as envd.yaml
//! describes it, streamed both ways with bounded memory whatever the size.
//!
//! Download (`GET /files?path=&username=`):
//! 1. `auth` has checked the token or the signed URL; `RequestUser` names
//!    the user (401 for an unknown one).
//! 2. The path is resolved and opened *as the user* (`fs::identity`), so a
//!    file the user may not read is a 403; a directory is a 400, a missing
//!    file a 404, anything but a regular file a 400.
//! 3. `Accept-Encoding` is negotiated like envd (q-values; identity unless
//!    refused): gzip compresses on the fly, and a request that refuses
//!    identity without accepting gzip is a 406.
//! 4. The body is read from the descriptor in fixed-size chunks as the client
//!    takes them: nothing but one chunk (and the gzip window) is in memory.
//!
//! Upload (`POST /files`):
//! 1. As above for auth and user; `Content-Encoding: gzip` is decoded on the
//!    fly, any other encoding is a 400.
//! 2. `multipart/form-data`: every part named `file` is one file; its target
//!    is `path` when given, else the part's filename (the full path the SDK
//!    sends). Other parts are skipped. `application/octet-stream` (or any
//!    other type): the body is the file and `path` is required.
//! 3. Each file: parents are created (as the user, so they are the user's),
//!    the target is opened in place (created, or truncated keeping its inode,
//!    mode, owner and hard links, as envd does: watchers see the target's own
//!    events, never a temp name), the bytes are written by one blocking writer
//!    fed through a small bounded channel, then `X-Metadata-*` headers become
//!    `user.e2b.*` xattrs. A failed upload (or the client going away) removes
//!    a file it created; an existing file keeps what was written, as in envd.
//! 4. Reply `[{"path", "name", "type": "file"}]`. Errors are envd.yaml's
//!    `{"code": <status>, "message"}`: 400 bad request, 403 permission, 404,
//!    413 over `max_upload_bytes`, 507 disk full (the SDK's
//!    NotEnoughSpaceException).

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    pin::Pin,
};

use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder};
use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::{io::AsyncRead, sync::mpsc};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::{
    GuestState,
    auth::{RequestUser, query_param},
    fs::{
        FsError,
        handlers::{make_dirs, resolve_for},
        identity::blocking_as,
    },
    users::User,
};

/// Bytes read from a file per chunk of a download.
const DOWNLOAD_CHUNK: usize = 256 << 10;
/// Bytes gathered before handing a buffer to the writer thread.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Buffers in flight between the request body and the writer thread.
const UPLOAD_QUEUE: usize = 4;
/// How much of an upload's remaining body is read and dropped after it was
/// refused or a write failed (e.g. a full disk), and for how long at most, so
/// the error reply reaches the client: closing a socket with unread data sends
/// a reset, which the client, still sending, sees instead of the reply.
const DRAIN_AFTER_ERROR: u64 = 64 << 20;
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most files one multipart request may carry.
const MAX_FILES: usize = 1000;
/// Most `X-Metadata-*` headers, and the largest value, accepted.
const MAX_METADATA: usize = 64;
const MAX_METADATA_VALUE: usize = 4096;

pub fn routes() -> Router<GuestState> {
    Router::new().route("/files", get(download).post(upload))
}

/// An error of `/files`, sent as envd.yaml's `{"code": int, "message"}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<FsError> for HttpError {
    fn from(e: FsError) -> Self {
        if let FsError::Io { source, .. } = &e {
            tracing::warn!(error = %e, cause = %source, "file transfer failed");
        }
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Picks the response encoding from `Accept-Encoding` (envd's rules: highest
/// q first, `*` means gzip only when identity is refused, identity is
/// acceptable unless refused with `q=0`). `None`: nothing acceptable (406).
pub fn negotiate(accept: Option<&str>) -> Option<Encoding> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some(Encoding::Identity);
    };
    let mut offers: Vec<(String, f64)> = accept
        .split(',')
        .take(64)
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .find_map(|q| q.trim().parse::<f64>().ok())
                .filter(|q| q.is_finite())
                .unwrap_or(1.0);
            (name, q)
        })
        .collect();
    offers.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let identity_refused = offers.iter().any(|(n, q)| n == "identity" && *q <= 0.0);
    for (name, q) in &offers {
        if *q <= 0.0 {
            continue;
        }
        match name.as_str() {
            "identity" => return Some(Encoding::Identity),
            "*" => {
                return Some(if identity_refused {
                    Encoding::Gzip
                } else {
                    Encoding::Identity
                });
            }
            "gzip" | "x-gzip" => return Some(Encoding::Gzip),
            _ => {}
        }
    }
    (!identity_refused).then_some(Encoding::Identity)
}

fn http_date(t: std::time::SystemTime) -> Option<HeaderValue> {
    let t = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    HeaderValue::from_str(&t.format(&f).ok()?).ok()
}

async fn download(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    let raw = query_param(uri.query(), "path").unwrap_or_default();
    let path = resolve_for(&state, &user, &raw)?;
    let (file, meta) = blocking_as(&user, move || {
        // O_NONBLOCK: opening a FIFO must not hang the thread; it is then
        // refused as not a regular file.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| FsError::io("opening", &path, e))?;
        let m = f.metadata().map_err(|e| FsError::io("stat", &path, e))?;
        if m.is_dir() {
            return Err(FsError::IsADirectory(path.display().to_string()));
        }
        if !m.is_file() {
            return Err(FsError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok((f, m))
    })
    .await?;
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let Some(encoding) = negotiate(accept) else {
        return Err(HttpError::new(
            StatusCode::NOT_ACCEPTABLE,
            "no acceptable encoding: this server sends gzip or identity",
        ));
    };
    let file = tokio::fs::File::from_std(file);
    let mut resp = match encoding {
        Encoding::Identity => {
            let mut r = Response::new(Body::from_stream(ReaderStream::with_capacity(
                file,
                DOWNLOAD_CHUNK,
            )));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
            r
        }
        Encoding::Gzip => {
            let reader = tokio::io::BufReader::with_capacity(DOWNLOAD_CHUNK, file);
            let gz = GzipEncoder::new(reader);
            let mut r = Response::new(Body::from_stream(ReaderStream::with_capacity(
                gz,
                DOWNLOAD_CHUNK,
            )));
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(d) = meta.modified().ok().and_then(http_date) {
        h.insert(header::LAST_MODIFIED, d);
    }
    Ok(resp)
}

/// One written file, as the SDK's `WriteInfo.from_dict` reads it.
#[derive(Debug, Serialize)]
pub struct WriteInfo {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `X-Metadata-<key>: value` headers, validated like the SDK does (keys are
/// header tokens, lowercased; values printable ASCII).
fn metadata_of(headers: &HeaderMap) -> Result<Vec<(String, Vec<u8>)>, HttpError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        if key.is_empty() || key.len() > 200 {
            return Err(HttpError::bad_request(
                "metadata keys must be 1 to 200 characters",
            ));
        }
        let v = value.as_bytes();
        if v.len() > MAX_METADATA_VALUE || !v.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Err(HttpError::bad_request(format!(
                "metadata value of {key:?} must be printable ASCII of at most {MAX_METADATA_VALUE} bytes"
            )));
        }
        out.push((key.to_owned(), v.to_vec()));
        if out.len() > MAX_METADATA {
            return Err(HttpError::bad_request(format!(
                "at most {MAX_METADATA} metadata headers"
            )));
        }
    }
    Ok(out)
}

/// Removes a file this upload created if the upload fails (also when the
/// request future is dropped because the client went away). A file that
/// existed before is left as the failed write left it, as envd does.
struct CreatedFile(Option<PathBuf>);

impl Drop for CreatedFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || {
                        let _ = std::fs::remove_file(&p);
                    });
                }
                Err(_) => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

/// Opens a target for writing in place (blocking, as user): parents made,
/// an existing file truncated, keeping its inode, mode, owner and hard
/// links, as envd's upload does. Returns whether the file is new.
fn prepare(target: &Path) -> Result<(std::fs::File, bool), FsError> {
    let parent = target
        .parent()
        .ok_or_else(|| FsError::IsADirectory("/".into()))?;
    make_dirs(parent)?;
    let existed = match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => return Err(FsError::IsADirectory(target.display().to_string())),
        Ok(m) if !m.is_file() => {
            return Err(FsError::Invalid(format!(
                "{} exists and is not a regular file",
                target.display()
            )));
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(FsError::io("stat", target, e)),
    };
    refuse_kernel_interface(parent, target)?;
    // Writing through a symlink writes its target, as envd's open does; the
    // guest runs inside the sandbox, so that target is the sandbox's own.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(target)
        .map_err(|e| FsError::io(if existed { "opening" } else { "creating" }, target, e))?;
    Ok((file, !existed))
}

/// Reads and drops a bounded rest of a refused upload's body (see [`DRAIN_AFTER_ERROR`]).
async fn drain<S, E>(body: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        let mut drained = 0u64;
        while drained < DRAIN_AFTER_ERROR {
            match body.next().await {
                Some(Ok(c)) => drained += c.len() as u64,
                _ => break,
            }
        }
    })
    .await;
}

/// [`drain`] for a multipart body: the rest of every part.
async fn drain_multipart(multipart: &mut multer::Multipart<'_>) {
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        let mut drained = 0u64;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(c)) = field.chunk().await {
                drained += c.len() as u64;
                if drained >= DRAIN_AFTER_ERROR {
                    return;
                }
            }
        }
    })
    .await;
}

/// Refuses a target on one of the kernel's interface filesystems (`/proc`, `/sys`, cgroups,
/// ...): their "files" are controls, not data (`/proc/1/mem` is the guest's own memory), and
/// an upload is a file transfer.
fn refuse_kernel_interface(parent: &Path, target: &Path) -> Result<(), FsError> {
    // From linux/magic.h.
    const KERNEL_INTERFACES: &[(u32, &str)] = &[
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x7363_6673, "securityfs"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0xcafe_4a11, "bpf"),
        (0x6265_6570, "configfs"),
        (0x6165_676c, "pstore"),
        (0xde5e_81e4, "efivarfs"),
        (0xf97c_ff8c, "selinuxfs"),
    ];
    let fs = rustix::fs::statfs(parent).map_err(|e| FsError::io("stat", parent, e.into()))?;
    // `f_type` is signed on some targets; the magic numbers are its bits.
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let magic = fs.f_type as u32;
    match KERNEL_INTERFACES.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => Err(FsError::Invalid(format!(
            "{} is on the kernel's {name} filesystem, not a file the files API writes",
            target.display()
        ))),
        None => Ok(()),
    }
}

/// Streams `body` into `target` (steps 3 of the upload docs); returns the
/// final path.
async fn write_file<S, E>(
    state: &GuestState,
    user: &User,
    target: PathBuf,
    metadata: &[(String, Vec<u8>)],
    mut body: S,
) -> Result<PathBuf, HttpError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<HttpError>,
{
    let (file, created) = {
        let t = target.clone();
        blocking_as(user, move || prepare(&t)).await?
    };
    let mut guard = CreatedFile(created.then(|| target.clone()));
    let limit = state.config.max_upload_bytes;
    let shown = target.display().to_string();

    // One blocking writer per file, fed through a small bounded channel.
    let (tx, mut rx) = mpsc::channel::<Bytes>(UPLOAD_QUEUE);
    let writer_target = shown.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = file;
        while let Some(buf) = rx.blocking_recv() {
            file.write_all(&buf)
                .map_err(|e| FsError::io("writing", Path::new(&writer_target), e))?;
        }
        Ok::<_, FsError>(file)
    });
    let mut total: u64 = 0;
    let mut pending = BytesMut::with_capacity(UPLOAD_CHUNK);
    let fed: Result<(), HttpError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Into::into)?;
            total += chunk.len() as u64;
            if let Some(max) = limit
                && total > max
            {
                return Err(
                    FsError::TooLarge(format!("upload exceeds the limit of {max} bytes")).into(),
                );
            }
            pending.extend_from_slice(&chunk);
            if pending.len() >= UPLOAD_CHUNK && tx.send(pending.split().freeze()).await.is_err() {
                // The writer stopped: its error is reported below.
                drain(&mut body).await;
                return Ok(());
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(pending.split().freeze()).await;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(FsError::from)?;
    // A write error (e.g. ENOSPC) explains a stopped feed better than the feed.
    let file = written?;
    fed?;

    for (k, v) in metadata {
        let name = format!(
            "{}{}",
            crate::fs::entry::XATTR_PREFIX,
            k.to_ascii_lowercase()
        );
        if let Err(e) =
            rustix::fs::fsetxattr(&file, name.as_str(), v, rustix::fs::XattrFlags::empty())
        {
            tracing::warn!(error = %e, key = %k, "storing file metadata failed");
        }
    }
    drop(file);
    guard.0 = None;
    Ok(target)
}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        // Errors of the request body: a broken gzip stream or a client that
        // went away.
        if e.kind() == std::io::ErrorKind::InvalidData
            || e.kind() == std::io::ErrorKind::UnexpectedEof
        {
            HttpError::bad_request(format!("invalid request body: {e}"))
        } else {
            HttpError::bad_request(format!("reading the request body failed: {e}"))
        }
    }
}

impl From<multer::Error> for HttpError {
    fn from(e: multer::Error) -> Self {
        match e {
            multer::Error::StreamReadFailed(inner) => {
                HttpError::bad_request(format!("reading the request body failed: {inner}"))
            }
            e => HttpError::bad_request(format!("malformed multipart body: {e}")),
        }
    }
}

type BodyReader = Pin<Box<dyn AsyncRead + Send>>;

/// The request body as a reader, gzip-decoded when it says so.
fn body_reader(headers: &HeaderMap, body: Body) -> Result<BodyReader, HttpError> {
    let raw = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match enc.as_str() {
        "" | "identity" => Ok(Box::pin(raw)),
        "gzip" | "x-gzip" => {
            let mut dec = GzipDecoder::new(tokio::io::BufReader::new(raw));
            dec.multiple_members(true);
            Ok(Box::pin(dec))
        }
        other => Err(HttpError::bad_request(format!(
            "unsupported Content-Encoding {:?}: supported are gzip and identity",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

fn info(path: &Path) -> WriteInfo {
    WriteInfo {
        path: path.display().to_string(),
        name: crate::fs::path::base_name(path),
        kind: "file",
    }
}

async fn upload(
    State(state): State<GuestState>,
    RequestUser(user): RequestUser,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Json<Vec<WriteInfo>>, HttpError> {
    let query_path = query_param(uri.query(), "path").filter(|p| !p.is_empty());
    let metadata = metadata_of(&headers)?;
    let reader = body_reader(&headers, body)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");

    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        let Some(raw) = query_path else {
            return Err(HttpError::bad_request(
                "the path query parameter is required for a raw-body upload",
            ));
        };
        let mut stream = ReaderStream::with_capacity(reader, UPLOAD_CHUNK);
        let written = async {
            let target = resolve_for(&state, &user, &raw)?;
            write_file(&state, &user, target, &metadata, &mut stream).await
        }
        .await;
        return match written {
            Ok(path) => Ok(Json(vec![info(&path)])),
            Err(e) => {
                drain(&mut stream).await;
                Err(e)
            }
        };
    }

    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| HttpError::bad_request(format!("bad multipart Content-Type: {e}")))?;
    let mut multipart =
        multer::Multipart::new(ReaderStream::with_capacity(reader, UPLOAD_CHUNK), boundary);
    let result = upload_parts(&state, &user, query_path, &metadata, &mut multipart).await;
    if result.is_err() {
        drain_multipart(&mut multipart).await;
    }
    result
}

/// The files of a multipart upload (step 2 of the upload docs).
async fn upload_parts(
    state: &GuestState,
    user: &User,
    query_path: Option<String>,
    metadata: &[(String, Vec<u8>)],
    multipart: &mut multer::Multipart<'_>,
) -> Result<Json<Vec<WriteInfo>>, HttpError> {
    let mut written: Vec<WriteInfo> = Vec::new();
    while let Some(mut field) = multipart.next_field().await? {
        if field.name() != Some("file") {
            while field.chunk().await?.is_some() {}
            continue;
        }
        if written.len() >= MAX_FILES {
            return Err(HttpError::bad_request(format!(
                "at most {MAX_FILES} files per upload"
            )));
        }
        let raw = match (&query_path, field.file_name()) {
            (Some(p), _) => p.clone(),
            (None, Some(name)) if !name.is_empty() => name.to_owned(),
            _ => {
                return Err(HttpError::bad_request(
                    "a file part needs a filename (its target path) or the path query parameter",
                ));
            }
        };
        let target = resolve_for(state, user, &raw)?;
        if written.iter().any(|w| Path::new(&w.path) == target) {
            return Err(HttpError::bad_request(format!(
                "cannot upload several files to the same path {} in one request",
                target.display()
            )));
        }
        let path = write_file(state, user, target, metadata, &mut field).await?;
        written.push(info(&path));
    }
    if written.is_empty() {
        return Err(HttpError::bad_request(
            "the multipart body holds no part named \"file\"",
        ));
    }
    Ok(Json(written))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uploads_into_kernel_interfaces_are_refused() {
        let proc_target = Path::new("/proc/1/mem");
        let e = refuse_kernel_interface(Path::new("/proc/1"), proc_target).unwrap_err();
        assert!(matches!(e, FsError::Invalid(_)), "{e}");
        assert!(
            refuse_kernel_interface(Path::new("/sys/kernel"), Path::new("/sys/kernel/x")).is_err()
        );
        let dir = tempfile::tempdir().unwrap();
        refuse_kernel_interface(dir.path(), &dir.path().join("f")).unwrap();
    }

    #[test]
    fn busy_and_invalid_errnos_are_the_clients_errors() {
        let p = Path::new("/.hutch/config");
        for errno in [libc::EBUSY, libc::ETXTBSY] {
            let e = FsError::io("moving", p, std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.http_status(), 409, "{e}");
        }
        let e = FsError::io("moving", p, std::io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(e.http_status(), 400, "{e}");
    }

    #[test]
    fn accept_encoding_table() {
        let cases: &[(Option<&str>, Option<Encoding>)] = &[
            (None, Some(Encoding::Identity)),
            (Some(""), Some(Encoding::Identity)),
            (Some("gzip"), Some(Encoding::Gzip)),
            (Some("br"), Some(Encoding::Identity)),
            (Some("br, identity;q=0"), None),
            (Some("gzip;q=0.5, identity"), Some(Encoding::Identity)),
            (Some("*"), Some(Encoding::Identity)),
            (Some("*, identity;q=0"), Some(Encoding::Gzip)),
            (Some("GZIP;Q=1"), Some(Encoding::Gzip)),
            (Some("gzip;q=0"), Some(Encoding::Identity)),
            (Some("gzip;q=nan"), Some(Encoding::Gzip)),
        ];
        for (h, want) in cases {
            assert_eq!(negotiate(*h), *want, "{h:?}");
        }
    }
}
