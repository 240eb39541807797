//! Files of a running sandbox, through its guest: streamed download and upload, list, stat,
//! mkdir, move, remove.
//!
//! 1. Authorise (`sandbox.use`), check the sandbox is `running`, validate the path (1–4096
//!    bytes, no NUL).
//! 2. Call the guest, which resolves the path *inside the sandbox* as the user (so a symlink
//!    to `/` leads to the sandbox's own root, never the host's).
//! 3. Downloads stream the guest's body as the client reads it; uploads feed the guest from a
//!    small bounded channel. Neither holds more than a few chunks in memory.
//! 4. Replies are untrusted (R15): list and stat entries are copied field by field into
//!    [`FileEntry`], with a bounded number of entries.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hutch_api_types::{FileEntry, FileList, MakeDir, MoveFile};
use hutch_core::{Action, Error, SandboxId, SandboxState};
use hutch_envd::filesystem::{
    EntryInfo, FileType, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, StatRequest, StatResponse,
};
use serde::Serialize;

use crate::exec::{guest_as, valid_user};
use crate::{Caller, Control, ControlError, Result};

/// Most entries a listing returns.
pub const MAX_ENTRIES: usize = 10_000;
const MAX_PATH: usize = 4096;

/// A guest's entry copied field by field (step 4 of the module docs).
fn file_entry(e: EntryInfo) -> FileEntry {
    let kind = match FileType::try_from(e.r#type) {
        Ok(FileType::File) => "file",
        Ok(FileType::Directory) => "dir",
        Ok(FileType::Symlink) => "symlink",
        _ => "other",
    };
    FileEntry {
        name: e.name,
        path: e.path,
        kind: if e.is_symlink { "symlink" } else { kind }.to_owned(),
        size: e.size,
        mode: e.mode,
    }
}

fn check_path(field: &str, path: &str) -> Result<()> {
    if path.is_empty() || path.len() > MAX_PATH || path.contains('\0') {
        return Err(Error::InvalidInput(format!(
            "{field}: must be 1 to {MAX_PATH} bytes without NUL"
        ))
        .into());
    }
    Ok(())
}

fn check_user(user: Option<&str>) -> Result<()> {
    match user {
        Some(u) if !valid_user(u) => {
            Err(Error::InvalidInput("user: must be a user name of the sandbox".to_owned()).into())
        }
        _ => Ok(()),
    }
}

impl Control {
    /// Step 1 of the module docs.
    async fn file_target(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<SandboxId> {
        let record = self.lookup(caller, Action::SandboxUse, id).await?;
        if record.state != SandboxState::Running {
            return Err(
                Error::Conflict(format!("the sandbox is {}, not running", record.state)).into(),
            );
        }
        check_path("path", path)?;
        check_user(user)?;
        self.touch(&record.id);
        Ok(record.id)
    }

    /// A file's bytes, streamed as the consumer reads them.
    pub async fn download(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let sid = self.file_target(caller, id, path, user).await?;
        let guest = guest_as(self, &sid, None)?;
        let body = guest
            .download(path, user)
            .await
            .map_err(|e| ControlError::guest(&sid, "file", e))?;
        Ok(body.map(move |chunk| {
            chunk.map_err(|e| {
                tracing::warn!(error = %crate::error::chain(&e), "download from a guest broke");
                std::io::Error::other("the sandbox's guest stopped sending")
            })
        }))
    }

    /// Writes a file from a stream of bytes (created or replaced atomically by the guest).
    pub async fn upload<S>(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let ws = caller.principal.workspace_id.clone();
        let result = async {
            let sid = self.file_target(caller, id, path, user).await?;
            let guest = guest_as(self, &sid, None)?;
            // The guest client wants a `Sync` stream; a bounded channel makes one and keeps
            // at most a few chunks in flight.
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
            let pump = tokio::spawn(async move {
                let mut body = std::pin::pin!(body);
                while let Some(chunk) = body.next().await {
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
            });
            let result = guest
                .upload(path, user, tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|e| ControlError::guest(&sid, "file", e));
            pump.abort();
            result
        }
        .await;
        self.audited(
            caller,
            Some(&ws),
            Action::SandboxUse,
            Some(id.to_owned()),
            result,
        )
        .await
    }

    /// Steps 1–2 for a unary filesystem call: the running target, then
    /// `method` on its guest as `user`.
    async fn file_rpc<Req, Resp>(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
        method: &str,
        req: &Req,
    ) -> Result<(SandboxId, Resp)>
    where
        Req: prost::Message + Serialize,
        Resp: prost::Message + serde::de::DeserializeOwned + Default,
    {
        let sid = self.file_target(caller, id, path, user).await?;
        let guest = guest_as(self, &sid, user)?;
        let resp = guest
            .unary(method, req)
            .await
            .map_err(|e| ControlError::guest(&sid, "file", e))?;
        Ok((sid, resp))
    }

    /// Records a file call that changes the sandbox, with its outcome.
    async fn audited_use<T>(&self, caller: &Caller, id: &str, result: Result<T>) -> Result<T> {
        let ws = caller.principal.workspace_id.clone();
        self.audited(
            caller,
            Some(&ws),
            Action::SandboxUse,
            Some(id.to_owned()),
            result,
        )
        .await
    }

    pub async fn list_files(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<FileList> {
        let req = ListDirRequest {
            path: path.to_owned(),
            depth: 1,
        };
        let (_, resp): (_, ListDirResponse) = self
            .file_rpc(
                caller,
                id,
                path,
                user,
                "filesystem.Filesystem/ListDir",
                &req,
            )
            .await?;
        Ok(FileList {
            entries: resp
                .entries
                .into_iter()
                .take(MAX_ENTRIES)
                .map(file_entry)
                .collect(),
        })
    }

    pub async fn stat_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<FileEntry> {
        let req = StatRequest {
            path: path.to_owned(),
        };
        let (sid, resp): (_, StatResponse) = self
            .file_rpc(caller, id, path, user, "filesystem.Filesystem/Stat", &req)
            .await?;
        entry(&sid, resp.entry)
    }

    pub async fn make_dir(&self, caller: &Caller, id: &str, req: MakeDir) -> Result<FileEntry> {
        let user = req.user.as_deref();
        let rpc = MakeDirRequest {
            path: req.path.clone(),
        };
        let result = async {
            let (sid, resp): (_, MakeDirResponse) = self
                .file_rpc(
                    caller,
                    id,
                    &req.path,
                    user,
                    "filesystem.Filesystem/MakeDir",
                    &rpc,
                )
                .await?;
            entry(&sid, resp.entry)
        }
        .await;
        self.audited_use(caller, id, result).await
    }

    pub async fn move_file(&self, caller: &Caller, id: &str, req: MoveFile) -> Result<FileEntry> {
        let user = req.user.as_deref();
        let rpc = MoveRequest {
            source: req.source.clone(),
            destination: req.destination.clone(),
        };
        let result = async {
            check_path("destination", &req.destination)?;
            let (sid, resp): (_, MoveResponse) = self
                .file_rpc(
                    caller,
                    id,
                    &req.source,
                    user,
                    "filesystem.Filesystem/Move",
                    &rpc,
                )
                .await?;
            entry(&sid, resp.entry)
        }
        .await;
        self.audited_use(caller, id, result).await
    }

    pub async fn remove_file(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<()> {
        let rpc = RemoveRequest {
            path: path.to_owned(),
        };
        let result = async {
            let _: (_, RemoveResponse) = self
                .file_rpc(caller, id, path, user, "filesystem.Filesystem/Remove", &rpc)
                .await?;
            Ok(())
        }
        .await;
        self.audited_use(caller, id, result).await
    }
}

fn entry(id: &SandboxId, e: Option<EntryInfo>) -> Result<FileEntry> {
    e.map(file_entry).ok_or_else(|| ControlError::Hidden {
        public: Error::Unavailable("the sandbox's guest did not answer as expected".to_owned()),
        context: "guest call",
        detail: format!("sandbox {id}: a reply without its entry"),
    })
}
