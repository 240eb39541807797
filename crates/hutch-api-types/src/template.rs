//! Templates as the API lists them.

use serde::{Deserialize, Serialize};

/// A template as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub tag: String,
    /// `pending`, `building`, `ready`, `failed`.
    pub state: String,
    /// `platform` for built-in templates, else the owning workspace's id.
    pub owner: String,
    pub digest: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}
