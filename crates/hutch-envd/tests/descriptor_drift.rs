//! Drift test: Hutch's `.proto` files against the descriptors E2B ships.
//!
//! The `e2b` PyPI package carries the compiled envd protos as a serialized
//! `FileDescriptorProto` passed to `file_desc(b'...')` in
//! `e2b/envd/process/process_pb.py` and `e2b/envd/filesystem/filesystem_pb.py`.
//! 1. `HUTCH_E2B_SITE_PACKAGES` names the site-packages holding that package
//!    (tests/e2b/run.sh and the Makefile set it to the suite's venv); unset or
//!    missing files fail the test, naming the prerequisite.
//! 2. A python3 one-liner (`ast.literal_eval` of the literal, never an import)
//!    prints the bytes as hex; they decode as a `FileDescriptorProto`.
//! 3. Both sides are flattened into comparable facts (every message, nested
//!    ones too, every field's number, type, label, proto3_optional, JSON name
//!    and oneof, every enum value, every method with its streaming flags) and
//!    all differences are reported at once.
//!
//! The positive twin (`comparison_detects_drift`) mutates a copy of our own
//! descriptor and checks each kind of drift is reported; it needs no SDK.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use prost::Message as _;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
    field_descriptor_proto::{Label, Type},
};

const SHIPPED: [(&str, &str); 2] = [
    ("process/process.proto", "e2b/envd/process/process_pb.py"),
    (
        "filesystem/filesystem.proto",
        "e2b/envd/filesystem/filesystem_pb.py",
    ),
];

/// Prints, as hex, the bytes literal of the `file_desc(...)` call in argv[1].
const EXTRACT_PY: &str = "import ast,sys\n\
t=ast.parse(open(sys.argv[1],encoding='utf-8').read())\n\
c=[n for n in ast.walk(t) if isinstance(n,ast.Call) and getattr(n.func,'id',None)=='file_desc']\n\
assert len(c)==1, 'expected one file_desc(...) call, found %d' % len(c)\n\
b=ast.literal_eval(c[0].args[0])\n\
assert isinstance(b,bytes), 'file_desc argument is not a bytes literal'\n\
print(b.hex())";

fn ours() -> BTreeMap<String, FileDescriptorProto> {
    let set = FileDescriptorSet::decode(hutch_envd::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET decodes");
    set.file
        .into_iter()
        .map(|f| (f.name().to_owned(), f))
        .collect()
}

fn site_packages() -> PathBuf {
    match std::env::var_os("HUTCH_E2B_SITE_PACKAGES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "prerequisite missing: HUTCH_E2B_SITE_PACKAGES is not set. Point it at the site-packages of a \
             Python environment with `e2b==2.63.0` installed (tests/e2b/run.sh creates one and sets it; \
             or: python3 -m venv /tmp/v && /tmp/v/bin/pip install -r tests/e2b/requirements.txt)"
        ),
    }
}

fn shipped(site: &std::path::Path, py_file: &str) -> FileDescriptorProto {
    let path = site.join(py_file);
    assert!(
        path.is_file(),
        "prerequisite missing: {} does not exist (is e2b==2.63.0 installed in HUTCH_E2B_SITE_PACKAGES={}?)",
        path.display(),
        site.display()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(EXTRACT_PY)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("prerequisite missing: cannot run python3: {e}"));
    assert!(
        out.status.success(),
        "extracting the descriptor from {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("hex output is ASCII");
    let bytes = decode_hex(text.trim())
        .unwrap_or_else(|| panic!("python printed no hex for {}", path.display()));
    FileDescriptorProto::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("{} holds no valid FileDescriptorProto: {e}", path.display()))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------
// Flattening: each descriptor becomes a map from a stable key to a fact.

/// proto3 JSON name protoc derives when `json_name` is absent.
fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn type_name(t: i32) -> String {
    Type::try_from(t)
        .map(|t| format!("{t:?}"))
        .unwrap_or_else(|_| format!("type#{t}"))
}

fn label_name(l: i32) -> String {
    Label::try_from(l)
        .map(|l| format!("{l:?}"))
        .unwrap_or_else(|_| format!("label#{l}"))
}

fn flatten_enum(prefix: &str, e: &EnumDescriptorProto, facts: &mut BTreeMap<String, String>) {
    let name = format!("{prefix}.{}", e.name());
    facts.insert(format!("enum {name}"), "present".into());
    for v in &e.value {
        facts.insert(
            format!("enum {name} value {}", v.name()),
            v.number().to_string(),
        );
    }
}

fn flatten_message(prefix: &str, m: &DescriptorProto, facts: &mut BTreeMap<String, String>) {
    let name = format!("{prefix}.{}", m.name());
    let map_entry = m
        .options
        .as_ref()
        .and_then(|o| o.map_entry)
        .unwrap_or(false);
    facts.insert(
        format!("message {name}"),
        if map_entry { "map entry" } else { "message" }.into(),
    );
    for f in &m.field {
        let oneof = f
            .oneof_index
            .and_then(|i| m.oneof_decl.get(i as usize))
            .map(|o| o.name().to_owned())
            .unwrap_or_else(|| "-".into());
        let json = f
            .json_name
            .clone()
            .unwrap_or_else(|| default_json_name(f.name()));
        facts.insert(
            format!("message {name} field {}", f.name()),
            format!(
                "number={} type={} type_name={} label={} proto3_optional={} oneof={oneof} json={json}",
                f.number(),
                type_name(f.r#type.unwrap_or_default()),
                f.type_name(),
                label_name(f.label.unwrap_or_default()),
                f.proto3_optional(),
            ),
        );
    }
    for o in &m.oneof_decl {
        facts.insert(
            format!("message {name} oneof {}", o.name()),
            "present".into(),
        );
    }
    for nested in &m.nested_type {
        flatten_message(&name, nested, facts);
    }
    for e in &m.enum_type {
        flatten_enum(&name, e, facts);
    }
}

fn flatten_service(prefix: &str, s: &ServiceDescriptorProto, facts: &mut BTreeMap<String, String>) {
    let name = format!("{prefix}.{}", s.name());
    facts.insert(format!("service {name}"), "present".into());
    for m in &s.method {
        facts.insert(
            format!("service {name} method {}", m.name()),
            format!(
                "input={} output={} client_streaming={} server_streaming={}",
                m.input_type(),
                m.output_type(),
                m.client_streaming(),
                m.server_streaming()
            ),
        );
    }
}

fn flatten(f: &FileDescriptorProto) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    let pkg = format!(".{}", f.package());
    facts.insert("package".into(), f.package().to_owned());
    facts.insert("syntax".into(), f.syntax().to_owned());
    for m in &f.message_type {
        flatten_message(&pkg, m, &mut facts);
    }
    for e in &f.enum_type {
        flatten_enum(&pkg, e, &mut facts);
    }
    for s in &f.service {
        flatten_service(&pkg, s, &mut facts);
    }
    facts
}

/// Every difference between Hutch's descriptor and E2B's, one line each.
fn diff(ours: &FileDescriptorProto, theirs: &FileDescriptorProto) -> Vec<String> {
    let (a, b) = (flatten(ours), flatten(theirs));
    let mut out = Vec::new();
    for (key, theirs_v) in &b {
        match a.get(key) {
            None => out.push(format!("{key}: missing in Hutch (E2B: {theirs_v})")),
            Some(ours_v) if ours_v != theirs_v => {
                out.push(format!("{key}: Hutch {ours_v} / E2B {theirs_v}"))
            }
            Some(_) => {}
        }
    }
    for (key, ours_v) in &a {
        if !b.contains_key(key) {
            out.push(format!("{key}: only in Hutch ({ours_v})"));
        }
    }
    out
}

#[test]
fn protos_match_the_e2b_sdk_descriptors() {
    let site = site_packages();
    let ours = ours();
    let mut report = Vec::new();
    for (proto, py_file) in SHIPPED {
        let theirs = shipped(&site, py_file);
        assert_eq!(
            theirs.name(),
            proto,
            "{py_file} describes an unexpected file"
        );
        let Some(mine) = ours.get(proto) else {
            report.push(format!("{proto}: not in hutch_envd::FILE_DESCRIPTOR_SET"));
            continue;
        };
        // Sanity: the flattening saw real content, so an empty diff means something.
        assert!(
            flatten(&theirs).keys().any(|k| k.contains(" method ")),
            "{py_file}: no service methods found"
        );
        report.extend(
            diff(mine, &theirs)
                .into_iter()
                .map(|d| format!("{proto}: {d}")),
        );
    }
    assert!(
        report.is_empty(),
        "{} difference(s) between crates/hutch-envd/proto and the e2b SDK's descriptors:\n  {}",
        report.len(),
        report.join("\n  ")
    );
}

#[test]
fn comparison_detects_drift() {
    let ours = ours();
    let process = ours
        .get("process/process.proto")
        .expect("process.proto compiled")
        .clone();
    let filesystem = ours
        .get("filesystem/filesystem.proto")
        .expect("filesystem.proto compiled")
        .clone();
    assert!(diff(&process, &process).is_empty());
    assert!(diff(&filesystem, &filesystem).is_empty());

    let find_msg = |f: &mut FileDescriptorProto, name: &str| -> usize {
        f.message_type
            .iter()
            .position(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };

    // One mutation of each kind, in one copy: all must be reported at once.
    let mut drifted = process.clone();
    let pc = find_msg(&mut drifted, "ProcessConfig");
    let cwd = drifted.message_type[pc]
        .field
        .iter_mut()
        .find(|f| f.name() == "cwd")
        .expect("cwd field");
    cwd.number = Some(cwd.number() + 100);
    let args = drifted.message_type[pc]
        .field
        .iter_mut()
        .find(|f| f.name() == "args")
        .expect("args field");
    args.name = Some("argv".into());
    args.json_name = None;
    let ev = find_msg(&mut drifted, "ProcessEvent");
    let nested = drifted.message_type[ev]
        .nested_type
        .iter_mut()
        .find(|m| m.name() == "EndEvent")
        .expect("EndEvent");
    let code = nested
        .field
        .iter_mut()
        .find(|f| f.name() == "exit_code")
        .expect("exit_code");
    code.r#type = Some(if code.r#type() == Type::Int32 {
        Type::Sint32
    } else {
        Type::Int32
    } as i32);
    drifted.enum_type[0].value.pop();
    let start = drifted.service[0]
        .method
        .iter_mut()
        .find(|m| m.name() == "Start")
        .expect("Start method");
    start.server_streaming = Some(false);

    let report = diff(&drifted, &process);
    let expect = [
        "message .process.ProcessConfig field cwd: Hutch number=",
        "message .process.ProcessConfig field args: missing in Hutch",
        "message .process.ProcessConfig field argv: only in Hutch",
        "message .process.ProcessEvent.EndEvent field exit_code: Hutch number=",
        "enum .process.",
        "service .process.Process method Start: Hutch input=",
    ];
    for e in expect {
        assert!(
            report.iter().any(|line| line.starts_with(e)),
            "no report line starting {e:?} in {report:#?}"
        );
    }
    assert_eq!(report.len(), expect.len(), "{report:#?}");
    assert!(
        report
            .iter()
            .any(|l| l.contains("server_streaming=false") && l.contains("server_streaming=true"))
    );

    // A oneof move and a dropped proto3 `optional` are drift too.
    let mut drifted = filesystem.clone();
    let ei = find_msg(&mut drifted, "EntryInfo");
    let target = drifted.message_type[ei]
        .field
        .iter_mut()
        .find(|f| f.name() == "symlink_target")
        .expect("symlink_target");
    target.proto3_optional = Some(false);
    target.oneof_index = None;
    let report = diff(&drifted, &filesystem);
    assert!(
        report.iter().any(
            |l| l.starts_with("message .filesystem.EntryInfo field symlink_target:")
                && l.contains("proto3_optional=false")
        ),
        "{report:#?}"
    );
}

#[test]
fn default_json_names() {
    assert_eq!(default_json_name("exit_code"), "exitCode");
    assert_eq!(default_json_name("symlink_target"), "symlinkTarget");
    assert_eq!(default_json_name("pid"), "pid");
}
