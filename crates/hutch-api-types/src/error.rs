//! The body of every error reply.

use serde::{Deserialize, Serialize};

/// The body of every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable, machine-readable: `invalid_input`, `unauthenticated`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `request_timeout`, `quota_exceeded`,
    /// `too_many_connections`, `capacity_exhausted`, `unavailable`, `internal`.
    pub code: String,
    /// About the request, for people.
    pub message: String,
}
