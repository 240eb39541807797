//! Hostile archives against the strict unpacker (R6). Each negative test has a
//! positive twin: the same archive with only the hostile field made benign is
//! accepted (so a rejection cannot come from a mis-built archive), and where it
//! makes sense the attack is shown to work against a naive, path-joining
//! extractor.
//!
//! The archives are built from raw ustar headers so that names the `tar`
//! crate's builder refuses (`..`, absolute) can be written.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hutch_image::{
    Compression, Limits, Owner, Rejection, UnpackError, UnpackOptions, Whiteouts, pack, unpack,
    validate,
};

const REG: u8 = b'0';
const LINK: u8 = b'1';
const SYM: u8 = b'2';
const CHR: u8 = b'3';
const BLK: u8 = b'4';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

struct E<'a> {
    name: &'a [u8],
    kind: u8,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        name: name.as_bytes(),
        kind: REG,
        mode: 0o644,
        link: b"",
        data,
    }
}
fn dir(name: &str) -> E<'_> {
    E {
        name: name.as_bytes(),
        kind: DIR,
        mode: 0o755,
        link: b"",
        data: b"",
    }
}
fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        name: name.as_bytes(),
        kind: SYM,
        mode: 0o777,
        link: target.as_bytes(),
        data: b"",
    }
}
fn hardlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        name: name.as_bytes(),
        kind: LINK,
        mode: 0o644,
        link: target.as_bytes(),
        data: b"",
    }
}
fn special(name: &str, kind: u8) -> E<'_> {
    E {
        name: name.as_bytes(),
        kind,
        mode: 0o644,
        link: b"",
        data: b"",
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn header(e: &E) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..e.name.len()].copy_from_slice(e.name);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], e.data.len() as u64);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = e.kind;
    h[157..157 + e.link.len()].copy_from_slice(e.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&header(e));
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

fn reject(archive: &[u8], o: &UnpackOptions) -> (Rejection, tempfile::TempDir) {
    let dest = tempfile::tempdir().unwrap();
    let err = unpack(archive, dest.path(), o).expect_err("hostile archive accepted");
    let reason = err
        .rejection()
        .cloned()
        .unwrap_or_else(|| panic!("not a rejection: {err}"));
    // The same parser in validate-only mode reaches the same verdict.
    let verr = validate(archive, o).expect_err("validate accepted a hostile archive");
    assert_eq!(
        verr.rejection(),
        Some(&reason),
        "validate disagrees: {verr}"
    );
    (reason, dest)
}

fn accept(archive: &[u8], o: &UnpackOptions) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    validate(archive, o).unwrap_or_else(|e| panic!("validate refused a benign archive: {e}"));
    unpack(archive, dest.path(), o).unwrap_or_else(|e| panic!("benign archive refused: {e}"));
    dest
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

#[test]
fn dotdot_escape_is_rejected_and_names_the_entry() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let archive = tar(&[file("ok", b"1"), file("../escaped", b"pwned")]);
    let err = unpack(&archive[..], &dest, &opts()).unwrap_err();
    assert_eq!(err.rejection(), Some(&Rejection::DotDot));
    assert!(err.to_string().contains("../escaped"), "{err}");
    assert!(!outer.path().join("escaped").exists());
    let (r, _) = reject(&tar(&[file("a/../../escaped", b"x")]), &opts());
    assert_eq!(r, Rejection::DotDot);
}

#[test]
fn dotdot_twin_benign_name_is_extracted() {
    let d = accept(
        &tar(&[file("ok", b"1"), file("sub/escaped", b"pwned")]),
        &opts(),
    );
    assert_eq!(fs::read(d.path().join("sub/escaped")).unwrap(), b"pwned");
}

#[test]
fn absolute_name_is_rejected() {
    let (r, _) = reject(&tar(&[file("/tmp/hutch-absolute-test", b"x")]), &opts());
    assert_eq!(r, Rejection::AbsoluteName);
    assert!(!Path::new("/tmp/hutch-absolute-test").exists());
}

#[test]
fn absolute_twin_relative_name_is_extracted() {
    let d = accept(&tar(&[file("tmp/hutch-absolute-test", b"x")]), &opts());
    assert!(d.path().join("tmp/hutch-absolute-test").is_file());
}

#[test]
fn write_through_planted_symlink_is_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();
    let archive = tar(&[symlink("a", &target), file("a/file", b"pwned")]);
    let (r, dest) = reject(&archive, &opts());
    assert_eq!(r, Rejection::ThroughNonDirectory);
    assert!(
        !outside.path().join("file").exists(),
        "wrote through the symlink"
    );
    // The symlink itself is stored verbatim (inert).
    assert_eq!(
        fs::read_link(dest.path().join("a"))
            .unwrap()
            .to_str()
            .unwrap(),
        target
    );

    // A relative symlink climbing out is refused the same way.
    let (r, _) = reject(
        &tar(&[symlink("b", "../../.."), file("b/x", b"1")]),
        &opts(),
    );
    assert_eq!(r, Rejection::ThroughNonDirectory);
}

#[test]
fn write_through_symlink_twin_naive_join_escapes_and_benign_archive_works() {
    // The attack is real: a path-joining extractor lands outside.
    let outside = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dest.path().join("a")).unwrap();
    fs::write(dest.path().join("a").join("file"), b"pwned").unwrap();
    assert!(outside.path().join("file").exists());
    // The benign twin (file in a real directory beside the symlink) is accepted.
    let target = outside.path().to_str().unwrap().to_string();
    let d = accept(
        &tar(&[symlink("a", &target), file("b/file", b"ok")]),
        &opts(),
    );
    assert_eq!(fs::read(d.path().join("b/file")).unwrap(), b"ok");
}

#[test]
fn hardlink_outside_or_forward_or_to_symlink_is_rejected() {
    for archive in [
        tar(&[hardlink("l", "/etc/passwd")]),
        tar(&[hardlink("l", "../../../../etc/passwd")]),
        tar(&[hardlink("l", "f"), file("f", b"later")]),
        tar(&[symlink("s", "/etc/passwd"), hardlink("l", "s")]),
        tar(&[dir("d"), hardlink("l", "d")]),
    ] {
        let (r, dest) = reject(&archive, &opts());
        assert!(matches!(r, Rejection::HardlinkTarget { .. }), "{r:?}");
        assert!(!dest.path().join("l").exists());
    }
}

#[test]
fn hardlink_twin_to_earlier_file_is_extracted() {
    let d = accept(&tar(&[file("f", b"data"), hardlink("l", "f")]), &opts());
    let (f, l) = (
        fs::metadata(d.path().join("f")).unwrap(),
        fs::metadata(d.path().join("l")).unwrap(),
    );
    assert_eq!(f.ino(), l.ino());
    assert_eq!(fs::read(d.path().join("l")).unwrap(), b"data");
}

#[test]
fn devices_and_fifos_are_rejected() {
    let (r, d) = reject(&tar(&[special("null", CHR)]), &opts());
    assert_eq!(r, Rejection::Device);
    assert!(!d.path().join("null").exists());
    let (r, _) = reject(&tar(&[special("sda", BLK)]), &opts());
    assert_eq!(r, Rejection::Device);
    let (r, _) = reject(&tar(&[special("pipe", FIFO)]), &opts());
    assert_eq!(r, Rejection::Fifo);
    let (r, _) = reject(&tar(&[special("weird", b'V')]), &opts());
    assert_eq!(r, Rejection::UnsupportedType(b'V'));
}

#[test]
fn devices_twin_regular_files_of_same_names_are_extracted() {
    let d = accept(&tar(&[file("null", b""), file("pipe", b"")]), &opts());
    assert!(d.path().join("null").is_file());
}

#[test]
fn setuid_setgid_are_stripped_sticky_dir_kept() {
    let mut suid = file("suid", b"#!/bin/sh\n");
    suid.mode = 0o4755;
    let mut sgid = dir("sgid");
    sgid.mode = 0o2775;
    let mut tmp = dir("tmp");
    tmp.mode = 0o1777;
    let mut sticky_file = file("sticky", b"");
    sticky_file.mode = 0o1644;
    let d = accept(&tar(&[suid, sgid, tmp, sticky_file]), &opts());
    let mode = |n: &str| {
        fs::symlink_metadata(d.path().join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o775);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("sticky"), 0o644);
}

#[test]
fn setuid_twin_plain_modes_are_kept_exactly() {
    let mut a = file("a", b"");
    a.mode = 0o750;
    let mut b = dir("b");
    b.mode = 0o711;
    let d = accept(&tar(&[a, b]), &opts());
    let mode = |n: &str| {
        fs::symlink_metadata(d.path().join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("a"), 0o750);
    assert_eq!(mode("b"), 0o711);
}

#[test]
fn ownership_is_the_configured_owner() {
    let d = accept(
        &tar(&[file("f", b"x"), dir("d"), symlink("s", "f")]),
        &opts(),
    );
    for n in ["f", "d", "s"] {
        let m = fs::symlink_metadata(d.path().join(n)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{n}");
    }
    let o = UnpackOptions {
        owner: Owner {
            uid: 1000,
            gid: 1000,
        },
        ..opts()
    };
    let d = accept(&tar(&[file("f", b"x"), dir("d"), symlink("s", "f")]), &o);
    for n in ["f", "d", "s"] {
        let m = fs::symlink_metadata(d.path().join(n)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{n}");
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn zip_bomb_ratio_is_stopped() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = gzip(&tar(&[file("zeros", &zeros)]));
    assert!(bomb.len() < (1 << 20), "bomb is {} bytes", bomb.len());
    let (r, _) = reject(&bomb, &opts());
    assert_eq!(r, Rejection::CompressionRatio { limit: 250 });
}

#[test]
fn zip_bomb_twin_allowed_ratio_extracts() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = gzip(&tar(&[file("zeros", &zeros)]));
    let o = UnpackOptions {
        limits: Limits {
            max_ratio: 100_000,
            ..Limits::default()
        },
        compression: Compression::Gzip,
        ..opts()
    };
    let d = accept(&bomb, &o);
    assert_eq!(
        fs::metadata(d.path().join("zeros")).unwrap().len(),
        64 << 20
    );
}

#[test]
fn too_many_entries_and_bytes_are_stopped() {
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| file(n, b"")).collect();
    let small = UnpackOptions {
        limits: Limits {
            max_entries: 10,
            max_bytes: 100,
            ..Limits::default()
        },
        ..opts()
    };
    let (r, _) = reject(&tar(&entries), &small);
    assert_eq!(r, Rejection::TooManyEntries { limit: 10 });
    let (r, _) = reject(&tar(&[file("big", &[7u8; 101])]), &small);
    assert_eq!(r, Rejection::TooManyBytes { limit: 100 });
    // Twins: exactly at the limits.
    accept(&tar(&entries[..10]), &small);
    accept(&tar(&[file("big", &[7u8; 100])]), &small);
}

#[test]
fn control_characters_duplicates_and_depth() {
    let (r, _) = reject(&tar(&[file("a\nb", b"")]), &opts());
    assert_eq!(r, Rejection::ControlCharacter);
    let (r, _) = reject(&tar(&[file("a", b"1"), file("a", b"2")]), &opts());
    assert_eq!(r, Rejection::Duplicate);
    let (r, _) = reject(&tar(&[file("a", b"1"), dir("a")]), &opts());
    assert_eq!(r, Rejection::Duplicate);
    let shallow = UnpackOptions {
        limits: Limits {
            max_depth: 3,
            ..Limits::default()
        },
        ..opts()
    };
    let (r, _) = reject(&tar(&[file("a/b/c/d", b"")]), &shallow);
    assert_eq!(r, Rejection::TooDeep { limit: 3 });
    // Twins.
    accept(
        &tar(&[file("a b", b""), dir("d"), dir("d/"), file("d/x", b"")]),
        &opts(),
    );
    accept(&tar(&[file("a/b/c", b"")]), &shallow);
}

#[test]
fn validate_writes_nothing() {
    let archive = tar(&[dir("d"), file("d/f", b"x")]);
    let stats = validate(&archive[..], &opts()).unwrap();
    assert_eq!((stats.entries, stats.bytes), (2, 1));
}

#[test]
fn destination_must_be_empty() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("x"), b"").unwrap();
    let err = unpack(&tar(&[file("f", b"")])[..], d.path(), &opts()).unwrap_err();
    assert!(
        matches!(err, UnpackError::DestinationNotEmpty { .. }),
        "{err}"
    );
}

#[test]
fn overlay_whiteouts_are_materialised() {
    let o = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..opts()
    };
    let d = accept(
        &tar(&[
            dir("etc"),
            file("etc/.wh.motd", b""),
            dir("opt"),
            file("opt/.wh..wh..opq", b""),
        ]),
        &o,
    );
    let m = fs::symlink_metadata(d.path().join("etc/motd")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert!(!d.path().join("etc/.wh.motd").exists());
    let mut buf = [0u8; 4];
    let n = rustix::fs::getxattr(d.path().join("opt"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    // In plain mode the same names are ordinary files.
    let d = accept(&tar(&[dir("etc"), file("etc/.wh.motd", b"")]), &opts());
    assert!(d.path().join("etc/.wh.motd").is_file());
    let (r, _) = reject(&tar(&[file(".wh...", b"")]), &o);
    assert_eq!(r, Rejection::BadWhiteout);
}

#[test]
fn pack_is_deterministic_and_round_trips() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("b/c")).unwrap();
    fs::write(s.join("b/c/f"), b"hello").unwrap();
    fs::write(s.join("a"), vec![1u8; 300_000]).unwrap();
    fs::hard_link(s.join("a"), s.join("z")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.join("s")).unwrap();
    fs::set_permissions(s.join("b"), fs::Permissions::from_mode(0o1777)).unwrap();
    let po = hutch_image::PackOptions {
        mtime: Some(1),
        ..Default::default()
    };
    let mut one = Vec::new();
    let p1 = pack(s, &mut one, &po).unwrap();
    let mut two = Vec::new();
    let p2 = pack(s, &mut two, &po).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(one, two);
    assert_eq!(p1.size, one.len() as u64);

    let d = accept(&one, &opts());
    assert_eq!(tree(d.path()), tree(s));
    assert_eq!(fs::read(d.path().join("b/c/f")).unwrap(), b"hello");
    assert_eq!(
        fs::metadata(d.path().join("a")).unwrap().ino(),
        fs::metadata(d.path().join("z")).unwrap().ino()
    );
    let mut three = Vec::new();
    let p3 = pack(d.path(), &mut three, &po).unwrap();
    assert_eq!(
        p3.sha256, p1.sha256,
        "re-packing the unpacked tree changed the digest"
    );
}

#[test]
fn pack_turns_overlay_whiteouts_into_oci_entries() {
    let o = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..opts()
    };
    let layer = tar(&[
        dir("etc"),
        file("etc/.wh.motd", b""),
        dir("opt"),
        file("opt/.wh..wh..opq", b""),
    ]);
    let d = accept(&layer, &o);
    let mut packed = Vec::new();
    pack(d.path(), &mut packed, &Default::default()).unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&packed[..]);
    for e in ar.entries().unwrap() {
        names.push(String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap());
    }
    assert_eq!(names, ["etc/", "etc/.wh.motd", "opt/", "opt/.wh..wh..opq"]);
}
