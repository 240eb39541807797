//! A 200 MB put streams through bounded memory.
//!
//! This test binary counts live heap bytes with a wrapping global allocator and records the
//! peak during the put. It runs alone in its binary, so other tests' allocations do not count.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hutch_blob::conformance::{generated, generated_digest};
use hutch_blob::{BlobStore, ObjectBlobStore};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; the counters are plain
// atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SIZE: usize = 200 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
/// About two parts in flight plus slack; a put that buffered the whole stream would need 200 MB.
const BOUND: usize = 40 * 1024 * 1024;

#[tokio::test(flavor = "current_thread")]
async fn a_200_mb_put_stays_within_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ObjectBlobStore::local(dir.path()).expect("open");
    let expected = generated_digest(SIZE, CHUNK, 42).await;

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let put = store
        .put_stream(generated(SIZE, CHUNK, 42), Some(expected))
        .await
        .expect("put");
    let peak = PEAK.load(Ordering::Relaxed) - base;

    assert_eq!(put.digest, expected);
    assert_eq!(put.size, SIZE as u64);
    let on_disk = std::fs::metadata(dir.path().join("sha256").join(expected.hex()))
        .expect("stat")
        .len();
    assert_eq!(on_disk, SIZE as u64);
    eprintln!("peak heap growth during a {SIZE}-byte put: {peak} bytes");
    assert!(peak < BOUND, "peak {peak} bytes exceeds {BOUND}");
    // The counter itself works: a buffer of the whole size would be seen.
    // Background threads of the put may still free a little meanwhile, so
    // allow a small slack below the buffer's size.
    let base = LIVE.load(Ordering::Relaxed);
    let whole = std::hint::black_box(vec![1u8; SIZE]);
    let grown = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    assert!(
        grown >= SIZE - (1 << 20),
        "counter saw {grown} bytes for a {SIZE}-byte buffer"
    );
    drop(std::hint::black_box(whole));
}
