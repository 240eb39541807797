//! Blob store trait over object_store (local directory now, S3 later): content-addressed,
//! digest-verified writes.
//!
//! This crate owns:
//! - the [`BlobStore`] trait: put a stream of bytes under its SHA-256 (`sha256/<hex>`), read it
//!   back as a stream, test for it, size it, delete it;
//! - [`ObjectBlobStore`], its implementation over any `object_store::ObjectStore`
//!   (`LocalFileSystem` for a single node; an S3 client later);
//! - [`conformance`] (feature `conformance`): the suite every implementation must pass.
//!
//! Write protocol (every backend):
//! 1. stream the input to a temporary key `tmp/<random>`, in parts of at most
//!    [`PART_SIZE`] bytes (so memory stays bounded whatever the size), hashing as it goes;
//! 2. at the end, compare the digest with the expected one, if given; on mismatch (or an input
//!    error) abort the upload, so nothing becomes visible;
//! 3. move the temporary object to `sha256/<hex>` (content addressing makes a concurrent
//!    writer of the same bytes harmless).
//!
//! Reads re-hash what they return and end the stream with an error if the stored bytes no
//! longer match their name, so corruption or tampering is never handed on silently.
//!
//! It must not: know which rows refer to a blob (visibility to users comes from the store
//! committing a row after the put); unpack archives (that is `hutch-image`'s one strict
//! unpacker); buffer a whole blob in memory; expose object-store paths to API clients.

#![forbid(unsafe_code)]

mod object;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use hutch_core::Digest;

pub use object::{ObjectBlobStore, PART_SIZE};

/// A stream of bytes going into the store. Input errors abort the put.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;
/// A stream of bytes coming out of the store.
pub type BlobStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// What a successful put stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// The bytes written do not hash to the digest the caller expected; nothing was stored.
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// The stored bytes do not hash to their name (found while reading).
    #[error("stored blob {0} is corrupt")]
    Corrupt(Digest),
    /// The input stream failed; nothing was stored.
    #[error("reading the input of a put failed")]
    Input(#[source] std::io::Error),
    #[error("blob backend operation `{op}` failed")]
    Backend {
        op: &'static str,
        #[source]
        source: object_store::Error,
    },
}

impl From<BlobError> for hutch_core::Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(_) => hutch_core::Error::NotFound { kind: "blob" },
            BlobError::DigestMismatch { expected, actual } => hutch_core::Error::InvalidInput(
                format!("content digest mismatch: expected {expected}, got {actual}"),
            ),
            BlobError::Input(_) => {
                hutch_core::Error::InvalidInput("the upload could not be read".to_owned())
            }
            BlobError::Corrupt(_) | BlobError::Backend { .. } => hutch_core::Error::Internal,
        }
    }
}

/// Content-addressed blob storage.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `data` under its SHA-256. With `expected`, refuses (storing nothing) if the
    /// content hashes to anything else. Memory use is bounded by the part size.
    async fn put_stream(
        &self,
        data: ByteStream,
        expected: Option<Digest>,
    ) -> Result<PutOutcome, BlobError>;

    /// Streams a blob back, verifying its digest as it goes: if the stored bytes do not match,
    /// the stream ends with [`BlobError::Corrupt`].
    async fn get_stream(&self, digest: &Digest) -> Result<BlobStream, BlobError>;

    async fn exists(&self, digest: &Digest) -> Result<bool, BlobError>;

    /// Size in bytes; `NotFound` if absent.
    async fn size(&self, digest: &Digest) -> Result<u64, BlobError>;

    /// Removes a blob. `false` if it was not there.
    async fn delete(&self, digest: &Digest) -> Result<bool, BlobError>;

    /// Convenience: stores an in-memory buffer.
    async fn put_bytes(
        &self,
        data: Bytes,
        expected: Option<Digest>,
    ) -> Result<PutOutcome, BlobError> {
        let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(data) }));
        self.put_stream(stream, expected).await
    }
}
