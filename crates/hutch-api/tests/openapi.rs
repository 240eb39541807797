//! The checked-in OpenAPI document (`docs/openapi.json`) must match the one generated from
//! the code. Regenerate it with:
//!
//! `HUTCH_UPDATE_OPENAPI=1 cargo test -p hutch-api --test openapi`

use std::path::PathBuf;

#[test]
fn checked_in_openapi_document_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = hutch_api::openapi_json();
    if std::env::var_os("HUTCH_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale or missing; regenerate it with\n\n    \
         HUTCH_UPDATE_OPENAPI=1 cargo test -p hutch-api --test openapi\n"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
    for route in [
        "/v1/sandboxes",
        "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/files",
        "/v1/keys",
        "/v1/audit",
    ] {
        assert!(
            doc["paths"].get(route).is_some(),
            "{route} missing from the document"
        );
    }
}
