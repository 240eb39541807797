//! [`BlobStore`] over any `object_store::ObjectStore`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use hutch_core::Digest;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
use rand::Rng;
use sha2::{Digest as _, Sha256};

use crate::{BlobError, BlobStore, BlobStream, ByteStream, PutOutcome};

/// Bytes buffered before a part is sent: the bound on a put's memory (about two parts: the one
/// being filled and the one being written). At least S3's 5 MiB minimum part size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Content-addressed blobs in an object store, under `<prefix>/sha256/<hex>`, with temporary
/// uploads under `<prefix>/tmp/`.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
}

fn backend(op: &'static str) -> impl FnOnce(object_store::Error) -> BlobError {
    move |source| BlobError::Backend { op, source }
}

impl ObjectBlobStore {
    /// Blobs in `inner` under `prefix` (empty for the root).
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self { inner, prefix }
    }

    /// Blobs in a local directory, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir).map_err(|e| BlobError::Backend {
            op: "create blob directory",
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            },
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(backend("open blob directory"))?;
        Ok(Self::new(Arc::new(fs), Path::default()))
    }

    /// Where the blob with `digest` lives.
    pub fn path_of(&self, digest: &Digest) -> Path {
        self.prefix.child("sha256").child(digest.hex())
    }

    fn temp_path(&self) -> Path {
        let mut rng = rand::rng();
        let name: String = (0..24)
            .map(|_| char::from(hutch_core::id::ALPHABET[rng.random_range(0..32)]))
            .collect();
        self.prefix.child("tmp").child(name)
    }

    /// Deletes temporary uploads last modified before `cutoff` (left by a crash). Returns how
    /// many were removed.
    pub async fn sweep_temp(&self, cutoff: hutch_core::Timestamp) -> Result<usize, BlobError> {
        let tmp = self.prefix.child("tmp");
        let mut listing = self.inner.list(Some(&tmp));
        let mut removed = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(backend("list temporary uploads"))?;
            let modified =
                hutch_core::Timestamp::from_unix_ms(meta.last_modified.timestamp_millis());
            if modified < cutoff {
                match self.inner.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(backend("delete temporary upload")(e)),
                }
            }
        }
        Ok(removed)
    }

    /// Steps 1–2 of the write protocol: stream `data` into `upload` (opened on demand at
    /// `tmp` once a full part exists), hashing; verify. Returns the outcome and the bytes of
    /// the last, partial part (all the bytes when no multipart upload was needed).
    async fn stream_in(
        &self,
        tmp: &Path,
        mut data: ByteStream,
        expected: Option<Digest>,
        upload: &mut Option<Box<dyn MultipartUpload>>,
    ) -> Result<(PutOutcome, Vec<Bytes>), BlobError> {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut part: Vec<Bytes> = Vec::new();
        let mut part_len = 0usize;
        while let Some(chunk) = data.next().await {
            let mut chunk = chunk.map_err(BlobError::Input)?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            while !chunk.is_empty() {
                let take = (PART_SIZE - part_len).min(chunk.len());
                part.push(chunk.split_to(take));
                part_len += take;
                if part_len == PART_SIZE {
                    let up = match upload {
                        Some(up) => up,
                        None => upload.insert(
                            self.inner
                                .put_multipart(tmp)
                                .await
                                .map_err(backend("start upload"))?,
                        ),
                    };
                    let payload: PutPayload = std::mem::take(&mut part).into_iter().collect();
                    part_len = 0;
                    up.put_part(payload).await.map_err(backend("upload part"))?;
                }
            }
        }
        let actual = Digest::from_bytes(hasher.finalize().into());
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(BlobError::DigestMismatch { expected, actual });
        }
        Ok((
            PutOutcome {
                digest: actual,
                size,
            },
            part,
        ))
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put_stream(
        &self,
        data: ByteStream,
        expected: Option<Digest>,
    ) -> Result<PutOutcome, BlobError> {
        let tmp = self.temp_path();
        let mut upload = None;
        let (outcome, rest) = match self.stream_in(&tmp, data, expected, &mut upload).await {
            Ok(v) => v,
            Err(e) => {
                if let Some(mut up) = upload
                    && let Err(abort) = up.abort().await
                {
                    tracing::warn!(error = %abort, path = %tmp, "aborting a blob upload failed");
                }
                return Err(e);
            }
        };
        // Step 3 (part 1): finish writing the temporary object.
        let rest: PutPayload = rest.into_iter().collect();
        match upload {
            None => {
                self.inner
                    .put(&tmp, rest)
                    .await
                    .map_err(backend("write blob"))?;
            }
            Some(mut up) => {
                let finished = async {
                    if rest.content_length() > 0 {
                        up.put_part(rest).await?;
                    }
                    up.complete().await
                }
                .await;
                if let Err(e) = finished {
                    if let Err(abort) = up.abort().await {
                        tracing::warn!(error = %abort, path = %tmp, "aborting a blob upload failed");
                    }
                    return Err(backend("finish upload")(e));
                }
            }
        }
        // Step 3 (part 2): make it visible under its digest.
        let dest = self.path_of(&outcome.digest);
        if let Err(e) = self.inner.rename(&tmp, &dest).await {
            if let Err(cleanup) = self.inner.delete(&tmp).await {
                tracing::warn!(error = %cleanup, path = %tmp, "removing a temporary blob failed");
            }
            return Err(backend("publish blob")(e));
        }
        Ok(outcome)
    }

    async fn get_stream(&self, digest: &Digest) -> Result<BlobStream, BlobError> {
        let got = match self.inner.get(&self.path_of(digest)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound(*digest)),
            Err(e) => return Err(backend("read blob")(e)),
        };
        let state = Verify {
            inner: got.into_stream(),
            hasher: Some(Sha256::new()),
            digest: *digest,
        };
        Ok(futures::stream::unfold(Some(state), verify_next).boxed())
    }

    async fn exists(&self, digest: &Digest) -> Result<bool, BlobError> {
        match self.inner.head(&self.path_of(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(backend("stat blob")(e)),
        }
    }

    async fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        match self.inner.head(&self.path_of(digest)).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(*digest)),
            Err(e) => Err(backend("stat blob")(e)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let path = self.path_of(digest);
        // Some backends (S3) report success for absent keys, so ask first.
        if !self.exists(digest).await? {
            return Ok(false);
        }
        match self.inner.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(backend("delete blob")(e)),
        }
    }
}

struct Verify {
    inner: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    hasher: Option<Sha256>,
    digest: Digest,
}

/// One step of a verifying read: pass bytes through while hashing; at the end, an error item
/// if the content does not match its name.
async fn verify_next(state: Option<Verify>) -> Option<(Result<Bytes, BlobError>, Option<Verify>)> {
    let mut st = state?;
    match st.inner.next().await {
        Some(Ok(bytes)) => {
            if let Some(h) = st.hasher.as_mut() {
                h.update(&bytes);
            }
            Some((Ok(bytes), Some(st)))
        }
        Some(Err(e)) => Some((Err(backend("read blob")(e)), None)),
        None => {
            let hasher = st.hasher.take()?;
            let actual = Digest::from_bytes(hasher.finalize().into());
            if actual == st.digest {
                None
            } else {
                Some((Err(BlobError::Corrupt(st.digest)), None))
            }
        }
    }
}
