//! Timestamps: milliseconds since the Unix epoch, UTC.
//!
//! The store keeps them as integers; JSON shows them as RFC 3339 strings. The caller supplies
//! "now", so every function that depends on time stays pure and testable.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// The wall clock now. The only clock read in this crate; pure code takes a `Timestamp`.
    pub fn now() -> Self {
        Self::from_offset_date_time(OffsetDateTime::now_utc())
    }

    pub fn from_offset_date_time(t: OffsetDateTime) -> Self {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        Self(i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX }))
    }

    pub fn to_offset_date_time(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }

    /// This time plus `secs` seconds, saturating.
    pub const fn plus_secs(self, secs: u64) -> Self {
        let add = if secs > (i64::MAX / 1000) as u64 {
            i64::MAX
        } else {
            secs as i64 * 1000
        };
        Self(self.0.saturating_add(add))
    }

    /// This time plus `ms` milliseconds, saturating.
    pub const fn plus_ms(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// RFC 3339 with millisecond precision, or the raw number if out of range.
    pub fn to_rfc3339(self) -> String {
        self.to_offset_date_time()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(Self::from_offset_date_time)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_milliseconds() {
        let t = Timestamp::from_unix_ms(1_700_000_000_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
        let json = serde_json::to_string(&t).expect("serialise");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).expect("parse"), t);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_ms(1000);
        assert_eq!(t.plus_secs(2).unix_ms(), 3000);
        assert_eq!(t.plus_secs(u64::MAX).unix_ms(), i64::MAX);
        assert_eq!(t.plus_ms(-500).unix_ms(), 500);
    }

    #[test]
    fn bad_strings_do_not_parse() {
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }
}
