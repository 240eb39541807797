//! The guest's files, typed: the `filesystem` service's list, stat, mkdir,
//! move and remove, and `/files` download and upload as streams.
//!
//! Owns: [`Entry`] (what the guest says of a file, copied field by field out
//! of its reply, R15) and the user a call acts as, which the guest resolves
//! paths as, inside the sandbox.
//! Must not: validate or resolve paths itself (the caller checks their
//! shape, the guest resolves them), or buffer a transfer: downloads and
//! uploads stream as the other side reads and writes.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Method, header};
use http_body_util::{BodyExt, BodyStream};
use hutch_envd::filesystem::{
    EntryInfo, FileType, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, StatRequest, StatResponse,
};

use crate::{ClientError, GuestClient, full};

const LIST_DIR: &str = "/filesystem.Filesystem/ListDir";
const STAT: &str = "/filesystem.Filesystem/Stat";
const MAKE_DIR: &str = "/filesystem.Filesystem/MakeDir";
const MOVE: &str = "/filesystem.Filesystem/Move";
const REMOVE: &str = "/filesystem.Filesystem/Remove";

/// Largest error body of an upload read.
const MAX_UPLOAD_REPLY: usize = 64 << 10;

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A device, socket or pipe, or a type the guest did not name.
    Other,
}

/// A file or directory inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: String,
    /// `Symlink` for a link, whatever it points to.
    pub kind: FileKind,
    pub size: i64,
    /// Unix mode bits.
    pub mode: u32,
}

impl From<EntryInfo> for Entry {
    fn from(e: EntryInfo) -> Self {
        let kind = match FileType::try_from(e.r#type) {
            _ if e.is_symlink => FileKind::Symlink,
            Ok(FileType::File) => FileKind::File,
            Ok(FileType::Directory) => FileKind::Directory,
            Ok(FileType::Symlink) => FileKind::Symlink,
            _ => FileKind::Other,
        };
        Entry {
            name: e.name,
            path: e.path,
            kind,
            size: e.size,
            mode: e.mode,
        }
    }
}

/// The entry a stat, mkdir or move answers with; a reply without one is
/// malformed.
fn entry(e: Option<EntryInfo>) -> Result<Entry, ClientError> {
    e.map(Entry::from)
        .ok_or_else(|| ClientError::Protocol("a reply without its entry".to_owned()))
}

/// `/files?path=...&username=...`.
fn files_query(path: &str, user: Option<&str>) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let mut q = format!(
        "/files?path={}",
        utf8_percent_encode(path, NON_ALPHANUMERIC)
    );
    if let Some(u) = user {
        q.push_str(&format!(
            "&username={}",
            utf8_percent_encode(u, NON_ALPHANUMERIC)
        ));
    }
    q
}

impl GuestClient {
    /// `ListDir`: the entries under `path`, `depth` levels down (1: its
    /// children).
    pub async fn list_dir(
        &self,
        path: &str,
        depth: u32,
        user: Option<&str>,
    ) -> Result<Vec<Entry>, ClientError> {
        let req = ListDirRequest {
            path: path.to_owned(),
            depth,
        };
        let resp: ListDirResponse = self.unary(LIST_DIR, user, &req).await?;
        Ok(resp.entries.into_iter().map(Entry::from).collect())
    }

    /// `Stat`: the entry at `path`.
    pub async fn stat(&self, path: &str, user: Option<&str>) -> Result<Entry, ClientError> {
        let req = StatRequest {
            path: path.to_owned(),
        };
        let resp: StatResponse = self.unary(STAT, user, &req).await?;
        entry(resp.entry)
    }

    /// `MakeDir`: creates the directory `path` and its missing parents.
    pub async fn make_dir(&self, path: &str, user: Option<&str>) -> Result<Entry, ClientError> {
        let req = MakeDirRequest {
            path: path.to_owned(),
        };
        let resp: MakeDirResponse = self.unary(MAKE_DIR, user, &req).await?;
        entry(resp.entry)
    }

    /// `Move`: renames `source` to `destination`; the entry at its new place.
    pub async fn move_entry(
        &self,
        source: &str,
        destination: &str,
        user: Option<&str>,
    ) -> Result<Entry, ClientError> {
        let req = MoveRequest {
            source: source.to_owned(),
            destination: destination.to_owned(),
        };
        let resp: MoveResponse = self.unary(MOVE, user, &req).await?;
        entry(resp.entry)
    }

    /// `Remove`: removes a file, or a directory with what it holds.
    pub async fn remove(&self, path: &str, user: Option<&str>) -> Result<(), ClientError> {
        let req = RemoveRequest {
            path: path.to_owned(),
        };
        let _: RemoveResponse = self.unary(REMOVE, user, &req).await?;
        Ok(())
    }

    /// `GET /files?path=`: the file's bytes as a stream.
    pub async fn download(
        &self,
        path: &str,
        user: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let req = self
            .request(Method::GET, &files_query(path, user), None)
            .body(full(Bytes::new()))?;
        let resp = self.call(req).await?;
        Ok(
            BodyStream::new(resp.into_body()).filter_map(|f| async move {
                match f {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(e) => Some(Err(ClientError::Body(e))),
                }
            }),
        )
    }

    /// `POST /files?path=` with an octet-stream body, streamed: the file is
    /// created, or replaced whole.
    pub async fn upload<S>(
        &self,
        path: &str,
        user: Option<&str>,
        body: S,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let body = BodyExt::boxed(http_body_util::StreamBody::new(
            body.map(|r| r.map(hyper::body::Frame::data)),
        ));
        let req = self
            .request(Method::POST, &files_query(path, user), None)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)?;
        let resp = self.call(req).await?;
        self.read_bounded(resp.into_body(), MAX_UPLOAD_REPLY)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_is_a_symlink_whatever_it_points_to() {
        let info = |r#type: FileType, is_symlink: bool| EntryInfo {
            r#type: r#type.into(),
            is_symlink,
            ..Default::default()
        };
        let kind = |e: EntryInfo| Entry::from(e).kind;
        assert_eq!(kind(info(FileType::File, false)), FileKind::File);
        assert_eq!(kind(info(FileType::Directory, false)), FileKind::Directory);
        assert_eq!(kind(info(FileType::Directory, true)), FileKind::Symlink);
        assert_eq!(kind(info(FileType::Unspecified, false)), FileKind::Other);
        let mut odd = info(FileType::File, false);
        odd.r#type = 42;
        assert_eq!(kind(odd), FileKind::Other);
    }
}
