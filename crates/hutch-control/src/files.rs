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
use hutch_guest_client::{
    ClientError, GuestClient,
    fs::{Entry, FileKind},
};

use crate::exec::{guest_of, valid_user};
use crate::{Caller, Control, ControlError, Result};

/// Most entries a listing returns.
pub const MAX_ENTRIES: usize = 10_000;
const MAX_PATH: usize = 4096;

/// A guest's entry as the API shows it (step 4 of the module docs).
fn file_entry(e: Entry) -> FileEntry {
    let kind = match e.kind {
        FileKind::File => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Other => "other",
    };
    FileEntry {
        name: e.name,
        path: e.path,
        kind: kind.to_owned(),
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

/// A sandbox's files, borrowed from a [`Control`]: `control.files()`.
pub struct Files<'a> {
    pub(crate) control: &'a Control,
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

    /// Steps 1–2 for a filesystem call: the running target, then `call` on its guest.
    async fn file_call<T, F>(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
        call: impl FnOnce(GuestClient) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        let sid = self.file_target(caller, id, path, user).await?;
        let guest = guest_of(self, &sid)?;
        call(guest)
            .await
            .map_err(|e| ControlError::guest(&sid, "file", e))
    }
}

impl Files<'_> {
    /// A file's bytes, streamed as the consumer reads them.
    pub async fn download(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + use<>> {
        let sid = self.control.file_target(caller, id, path, user).await?;
        let guest = guest_of(self.control, &sid)?;
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
        let result = async {
            let sid = self.control.file_target(caller, id, path, user).await?;
            let guest = guest_of(self.control, &sid)?;
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
        self.control.audited_use(caller, id, result).await
    }

    pub async fn list(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<FileList> {
        let entries = self
            .control
            .file_call(caller, id, path, user, async |guest| {
                guest.list_dir(path, 1, user).await
            })
            .await?;
        Ok(FileList {
            entries: entries
                .into_iter()
                .take(MAX_ENTRIES)
                .map(file_entry)
                .collect(),
        })
    }

    pub async fn stat(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<FileEntry> {
        let entry = self
            .control
            .file_call(caller, id, path, user, async |guest| {
                guest.stat(path, user).await
            })
            .await?;
        Ok(file_entry(entry))
    }

    pub async fn make_dir(&self, caller: &Caller, id: &str, req: MakeDir) -> Result<FileEntry> {
        let user = req.user.as_deref();
        let result = self
            .control
            .file_call(caller, id, &req.path, user, async |guest| {
                guest.make_dir(&req.path, user).await
            })
            .await
            .map(file_entry);
        self.control.audited_use(caller, id, result).await
    }

    pub async fn rename(&self, caller: &Caller, id: &str, req: MoveFile) -> Result<FileEntry> {
        let user = req.user.as_deref();
        let result = async {
            check_path("destination", &req.destination)?;
            self.control
                .file_call(caller, id, &req.source, user, async |guest| {
                    guest.move_entry(&req.source, &req.destination, user).await
                })
                .await
                .map(file_entry)
        }
        .await;
        self.control.audited_use(caller, id, result).await
    }

    pub async fn remove(
        &self,
        caller: &Caller,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<()> {
        let result = self
            .control
            .file_call(caller, id, path, user, async |guest| {
                guest.remove(path, user).await
            })
            .await;
        self.control.audited_use(caller, id, result).await
    }
}
