//! Wall-clock timestamps as stored (milliseconds since the Unix epoch) and as shown on the
//! wire (RFC 3339, UTC, millisecond precision, `Z` suffix).

use std::time::Duration;

use serde::{Serialize, Serializer};

/// Seconds since the Unix epoch now (the unit of a JWT's `exp`); 0 before 1970.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A point in time with millisecond precision. Stored as an integer, serialized as
/// `2026-11-23T10:00:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time, truncated to milliseconds.
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp_millis())
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time moved `duration` later, in whole milliseconds, saturating at the far end.
    pub fn plus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// This time moved `duration` earlier, in whole milliseconds, saturating at the far end.
    pub fn minus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// The RFC 3339 form used on the wire.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// On the wire a timestamp is an RFC 3339 string (`format: date-time`).
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// Any RFC 3339 time (with an offset) is read; sub-millisecond digits are dropped.
impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|at| Timestamp(at.timestamp_millis()))
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rfc3339_with_millis_in_utc() {
        assert_eq!(Timestamp(1_795_428_000_007).to_rfc3339(), "2026-11-23T10:00:00.007Z");
    }

    #[test]
    fn plus_adds_whole_milliseconds_and_saturates() {
        assert_eq!(Timestamp(1_000).plus(Duration::from_micros(50_999)), Timestamp(1_050));
        assert_eq!(Timestamp(1_000).plus(Duration::MAX), Timestamp(i64::MAX));
    }
}
