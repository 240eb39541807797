//! System tier (root, network to the apt sources the host uses, ~1 minute):
//! the `debian:12` template built with mmdebstrap into a fresh cache, unpacked
//! with the strict unpacker, and used in a chroot. Fails (never skips) when
//! mmdebstrap is missing.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs;
use std::process::Command;

use hutch_image::{BuildConfig, Builtin, TemplateCache, UnpackOptions, unpack};

fn chroot(root: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn debian12_template_builds_with_progress_and_runs_python() {
    hutch_testkit::require_root("mmdebstrap and chroot");
    let found = Command::new("mmdebstrap").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "prerequisite missing: mmdebstrap (apt-get install mmdebstrap; make setup)"
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = TemplateCache::new(cache_dir.path(), BuildConfig::default());
    let mut lines = Vec::new();
    let t0 = std::time::Instant::now();
    let built = cache
        .ensure(Builtin::Debian12, &mut |l| {
            eprintln!("progress: {l}");
            lines.push(l.to_string());
        })
        .unwrap();
    eprintln!("debian:12 built in {:?}", t0.elapsed());
    assert!(built.built);
    assert!(
        lines.iter().any(|l| l.starts_with("I: ")),
        "no mmdebstrap progress lines seen"
    );
    let again = cache.ensure(Builtin::Debian12, &mut |_| {}).unwrap();
    assert!(
        !again.built,
        "second ensure rebuilt instead of using the cache"
    );

    let root = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let stats = unpack(
        fs::File::open(&built.archive).unwrap(),
        root.path(),
        &UnpackOptions::default(),
    )
    .unwrap();
    eprintln!(
        "unpacked {} entries, {} MiB in {:?}",
        stats.entries,
        stats.bytes >> 20,
        t0.elapsed()
    );
    let r = root.path();
    assert_eq!(chroot(r, &["python3", "-c", "print(6*7)"]), "42\n");
    assert_eq!(chroot(r, &["id", "-u", "user"]), "1000\n");
    assert!(chroot(r, &["dpkg-query", "-W", "-f=${Status}", "procps"]).contains("installed"));
    assert!(r.join("usr/bin/ps").is_file());
    assert!(r.join("etc/ssl/certs/ca-certificates.crt").is_file());
    assert!(r.join("home/user").is_dir());
    assert_eq!(
        fs::read_dir(r.join("dev")).unwrap().count(),
        0,
        "/dev must be empty"
    );
}

#[test]
fn debian12_missing_mmdebstrap_is_a_clear_error() {
    let cache_dir = tempfile::tempdir().unwrap();
    let config = BuildConfig {
        mmdebstrap: "/nonexistent/mmdebstrap".into(),
        ..Default::default()
    };
    let err = TemplateCache::new(cache_dir.path(), config)
        .ensure(Builtin::Debian12, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("mmdebstrap"), "{err}");
    assert!(
        matches!(err, hutch_image::TemplateError::Missing { .. }),
        "{err}"
    );
}
