//! The blob conformance suite on a local directory and in memory, plus checks that need to
//! see the files underneath.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hutch_blob::conformance::{self, read_all};
use hutch_blob::{BlobError, BlobStore, ObjectBlobStore};
use hutch_core::Digest;

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if entry.file_type().expect("type").is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .expect("prefix")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn conformance_on_a_local_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ObjectBlobStore::local(dir.path()).expect("open");
    conformance::run(&store).await;
    // Every check cleans up after itself: no blob and no temporary upload remains.
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn conformance_in_memory() {
    let store = ObjectBlobStore::new(
        Arc::new(object_store::memory::InMemory::new()),
        object_store::path::Path::from("blobs"),
    );
    conformance::run(&store).await;
}

#[tokio::test]
async fn layout_is_sha256_hex_and_failed_puts_leave_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ObjectBlobStore::local(dir.path()).expect("open");
    let data = Bytes::from_static(b"layer bytes");
    let digest = Digest::of(&data);

    // Mismatch, small and multipart: not a single file anywhere (temp ones included).
    let wrong = Digest::of(b"other");
    assert!(matches!(
        store.put_bytes(data.clone(), Some(wrong)).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    let big = conformance::generated(3 * hutch_blob::PART_SIZE, 1 << 20, 1);
    assert!(matches!(
        store.put_stream(big, Some(wrong)).await,
        Err(BlobError::DigestMismatch { .. })
    ));
    assert_eq!(files_under(dir.path()), Vec::<String>::new());

    // The positive twin: a good put leaves exactly the content-addressed file.
    store
        .put_bytes(data.clone(), Some(digest))
        .await
        .expect("put");
    assert_eq!(
        files_under(dir.path()),
        vec![format!("sha256/{}", digest.hex())]
    );
    assert_eq!(
        std::fs::read(dir.path().join("sha256").join(digest.hex())).expect("read"),
        data.to_vec()
    );
}

#[tokio::test]
async fn reads_detect_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ObjectBlobStore::local(dir.path()).expect("open");
    let data = Bytes::from_static(b"checkpoint image");
    let put = store.put_bytes(data.clone(), None).await.expect("put");
    assert_eq!(
        read_all(&store, &put.digest).await.expect("intact"),
        data.to_vec()
    );
    std::fs::write(
        dir.path().join("sha256").join(put.digest.hex()),
        b"checkpoint imagE",
    )
    .expect("tamper");
    let err = read_all(&store, &put.digest).await.expect_err("corrupt");
    assert!(
        matches!(err, BlobError::Corrupt(d) if d == put.digest),
        "{err:?}"
    );
}

#[tokio::test]
async fn sweep_removes_only_old_temporary_uploads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ObjectBlobStore::local(dir.path()).expect("open");
    std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
    std::fs::write(dir.path().join("tmp").join("leftover"), b"half").expect("write");
    let kept = store
        .put_bytes(Bytes::from_static(b"kept"), None)
        .await
        .expect("put");
    // Cutoff in the past: nothing is old enough.
    let past = hutch_core::Timestamp::from_unix_ms(0);
    assert_eq!(store.sweep_temp(past).await.expect("sweep"), 0);
    let future = hutch_core::Timestamp::now().plus_secs(60);
    assert_eq!(store.sweep_temp(future).await.expect("sweep"), 1);
    assert_eq!(
        files_under(dir.path()),
        vec![format!("sha256/{}", kept.digest.hex())]
    );
}
