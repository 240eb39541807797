//! The conformance suite every [`BlobStore`] implementation must pass.
//!
//! [`run`] checks the contract through the trait alone. Harness-specific checks (that a failed
//! put leaves no file at all, that memory stays bounded, that corruption is detected) live in
//! each backend's tests, which can see the storage underneath.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::StreamExt;
use hutch_core::Digest;
use sha2::{Digest as _, Sha256};

use crate::{BlobError, BlobStore, ByteStream, PART_SIZE};

/// Runs every check against `store`.
pub async fn run(store: &dyn BlobStore) {
    small_round_trip(store).await;
    empty_blob(store).await;
    expected_digest(store).await;
    digest_mismatch_stores_nothing(store, 1000).await;
    digest_mismatch_stores_nothing(store, 2 * PART_SIZE + 12_345).await;
    input_error_stores_nothing(store).await;
    multipart_round_trip(store).await;
    absent_blobs(store).await;
}

/// A deterministic stream of `len` bytes in freshly allocated chunks of `chunk` bytes, with
/// content depending on `seed`, so buffering would show up as allocated memory.
pub fn generated(len: usize, chunk: usize, seed: u8) -> ByteStream {
    let chunks = len.div_ceil(chunk);
    futures::stream::iter(0..chunks)
        .map(move |i| {
            let n = chunk.min(len - i * chunk);
            let byte = seed.wrapping_add(i as u8);
            let mut v = vec![byte; n];
            if let Some(first) = v.first_mut() {
                *first = (i % 251) as u8;
            }
            Ok(Bytes::from(v))
        })
        .boxed()
}

/// The digest of [`generated`]`(len, chunk, seed)`, computed without storing anything.
pub async fn generated_digest(len: usize, chunk: usize, seed: u8) -> Digest {
    let mut h = Sha256::new();
    let mut s = generated(len, chunk, seed);
    while let Some(b) = s.next().await {
        h.update(b.unwrap());
    }
    Digest::from_bytes(h.finalize().into())
}

/// Reads a blob fully, returning its bytes or the first error.
pub async fn read_all(store: &dyn BlobStore, digest: &Digest) -> Result<Vec<u8>, BlobError> {
    let mut s = store.get_stream(digest).await?;
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

async fn small_round_trip(store: &dyn BlobStore) {
    let data = Bytes::from_static(b"hello, hutch");
    let digest = Digest::of(&data);
    let put = store.put_bytes(data.clone(), None).await.unwrap();
    assert_eq!(put.digest, digest);
    assert_eq!(put.size, data.len() as u64);
    assert!(store.exists(&digest).await.unwrap());
    assert_eq!(store.size(&digest).await.unwrap(), data.len() as u64);
    assert_eq!(read_all(store, &digest).await.unwrap(), data.to_vec());
    // Putting the same content again is harmless and yields the same name.
    let again = store.put_bytes(data.clone(), Some(digest)).await.unwrap();
    assert_eq!(again, put);
    assert_eq!(read_all(store, &digest).await.unwrap(), data.to_vec());
    assert!(store.delete(&digest).await.unwrap());
    assert!(!store.exists(&digest).await.unwrap());
    assert!(!store.delete(&digest).await.unwrap());
}

async fn empty_blob(store: &dyn BlobStore) {
    let put = store.put_bytes(Bytes::new(), None).await.unwrap();
    assert_eq!(put.digest, Digest::of(b""));
    assert_eq!(put.size, 0);
    assert_eq!(store.size(&put.digest).await.unwrap(), 0);
    assert!(read_all(store, &put.digest).await.unwrap().is_empty());
    assert!(store.delete(&put.digest).await.unwrap());
}

async fn expected_digest(store: &dyn BlobStore) {
    let data = Bytes::from_static(b"expected content");
    let digest = Digest::of(&data);
    let put = store.put_bytes(data, Some(digest)).await.unwrap();
    assert_eq!(put.digest, digest);
    assert!(store.delete(&digest).await.unwrap());
}

async fn digest_mismatch_stores_nothing(store: &dyn BlobStore, len: usize) {
    let seed = (len % 200) as u8;
    let actual = generated_digest(len, 64 * 1024, seed).await;
    let claimed = Digest::of(b"something else entirely");
    let err = store
        .put_stream(generated(len, 64 * 1024, seed), Some(claimed))
        .await
        .unwrap_err();
    match err {
        BlobError::DigestMismatch {
            expected,
            actual: got,
        } => {
            assert_eq!(expected, claimed);
            assert_eq!(got, actual);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!store.exists(&actual).await.unwrap());
    assert!(!store.exists(&claimed).await.unwrap());
    // The positive twin: the same stream with the right digest is stored.
    let put = store
        .put_stream(generated(len, 64 * 1024, seed), Some(actual))
        .await
        .unwrap();
    assert_eq!(put.digest, actual);
    assert!(store.exists(&actual).await.unwrap());
    assert!(store.delete(&actual).await.unwrap());
}

async fn input_error_stores_nothing(store: &dyn BlobStore) {
    let len = PART_SIZE + 10;
    let good = generated(len, 1024 * 1024, 9);
    let failing: ByteStream = good
        .chain(futures::stream::once(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            ))
        }))
        .boxed();
    let err = store.put_stream(failing, None).await.unwrap_err();
    assert!(matches!(err, BlobError::Input(_)), "{err:?}");
    let partial = generated_digest(len, 1024 * 1024, 9).await;
    assert!(!store.exists(&partial).await.unwrap());
}

async fn multipart_round_trip(store: &dyn BlobStore) {
    let len = 2 * PART_SIZE + 777;
    let digest = generated_digest(len, 100_000, 3).await;
    let put = store
        .put_stream(generated(len, 100_000, 3), None)
        .await
        .unwrap();
    assert_eq!(put.digest, digest);
    assert_eq!(put.size, len as u64);
    assert_eq!(store.size(&digest).await.unwrap(), len as u64);
    // Stream it back and hash it on the fly.
    let mut h = Sha256::new();
    let mut n = 0usize;
    let mut s = store.get_stream(&digest).await.unwrap();
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        n += b.len();
        h.update(&b);
    }
    assert_eq!(n, len);
    assert_eq!(Digest::from_bytes(h.finalize().into()), digest);
    assert!(store.delete(&digest).await.unwrap());
}

async fn absent_blobs(store: &dyn BlobStore) {
    let d = Digest::of(b"never stored");
    assert!(!store.exists(&d).await.unwrap());
    assert!(matches!(store.size(&d).await, Err(BlobError::NotFound(x)) if x == d));
    assert!(matches!(
        store.get_stream(&d).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(!store.delete(&d).await.unwrap());
}
