//! Timestamps as the API writes them: RFC 3339 in UTC, `Time` to the second
//! (`2026-01-01T00:00:00Z`) and `MicroTime` to the microsecond (`2026-01-01T00:00:00.123456Z`, used by
//! leases). Formatting and parsing are done here, on `std` alone, so the crate needs no date library.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A timestamp that the API writes to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    unix_micros: i64,
}

/// A timestamp that the API writes to the microsecond (lease renewals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroTime {
    unix_micros: i64,
}

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 timestamp such as 2026-01-01T00:00:00Z")]
pub struct TimeParseError {
    pub text: String,
}

fn system_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_micros().min(i64::MAX as u128) as i64),
    }
}

fn micros_to_system(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

impl Time {
    /// Now, truncated to the second (so that a round trip through JSON gives the same value).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// The given instant, truncated to the second.
    pub fn from_system_time(t: SystemTime) -> Self {
        let micros = system_micros(t);
        Time { unix_micros: micros.div_euclid(1_000_000) * 1_000_000 }
    }

    /// Seconds since the Unix epoch.
    pub fn from_unix_seconds(secs: i64) -> Self {
        Time { unix_micros: secs.saturating_mul(1_000_000) }
    }

    /// Parses an RFC 3339 timestamp (any offset, any fraction), truncating to the second.
    pub fn parse(text: &str) -> Result<Self, TimeParseError> {
        let micros = parse_micros(text)?;
        Ok(Time { unix_micros: micros.div_euclid(1_000_000) * 1_000_000 })
    }

    /// This instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        micros_to_system(self.unix_micros)
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.unix_micros.div_euclid(1_000_000)
    }

    /// How long ago this was, zero if it is in the future.
    pub fn age(self) -> Duration {
        SystemTime::now().duration_since(self.to_system_time()).unwrap_or_default()
    }
}

impl MicroTime {
    /// Now, truncated to the microsecond.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// The given instant, truncated to the microsecond.
    pub fn from_system_time(t: SystemTime) -> Self {
        MicroTime { unix_micros: system_micros(t) }
    }

    /// Parses an RFC 3339 timestamp (any offset, any fraction), truncating to the microsecond.
    pub fn parse(text: &str) -> Result<Self, TimeParseError> {
        Ok(MicroTime { unix_micros: parse_micros(text)? })
    }

    /// This instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        micros_to_system(self.unix_micros)
    }

    /// Seconds since the Unix epoch, with the fraction.
    pub fn unix_seconds_f64(self) -> f64 {
        self.unix_micros as f64 / 1e6
    }

    /// How long ago this was, zero if it is in the future.
    pub fn age(self) -> Duration {
        SystemTime::now().duration_since(self.to_system_time()).unwrap_or_default()
    }
}

impl From<MicroTime> for Time {
    fn from(t: MicroTime) -> Self {
        Time { unix_micros: t.unix_micros.div_euclid(1_000_000) * 1_000_000 }
    }
}

impl From<Time> for MicroTime {
    fn from(t: Time) -> Self {
        MicroTime { unix_micros: t.unix_micros }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rfc3339(f, self.unix_micros, false)
    }
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rfc3339(f, self.unix_micros, true)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Time::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MicroTime::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Now as an RFC 3339 string to the second, e.g. for a condition's `lastHeartbeatTime`.
pub fn now_rfc3339() -> String {
    Time::now().to_string()
}

/// Now as an RFC 3339 string to the microsecond, e.g. for a lease's `renewTime`.
pub fn now_rfc3339_micros() -> String {
    MicroTime::now().to_string()
}

/// The instant `after` from now as an RFC 3339 string (a token's expiration).
pub fn rfc3339_after(after: Duration) -> String {
    Time::from_system_time(SystemTime::now() + after).to_string()
}

/// Seconds since the Unix epoch, with the fraction, of an RFC 3339 timestamp; `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    MicroTime::parse(text).ok().map(MicroTime::unix_seconds_f64)
}

/// Now in seconds since the Unix epoch, with the fraction (to compare with [`parse_rfc3339`]).
pub fn now_seconds() -> f64 {
    MicroTime::now().unix_seconds_f64()
}

// Howard Hinnant's civil-from-days and days-from-civil, valid for the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn write_rfc3339(f: &mut fmt::Formatter<'_>, unix_micros: i64, with_micros: bool) -> fmt::Result {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let in_day = secs.rem_euclid(86_400);
    let (h, m, s) = (in_day / 3600, in_day % 3600 / 60, in_day % 60);
    write!(f, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}")?;
    if with_micros {
        write!(f, ".{micros:06}")?;
    }
    f.write_str("Z")
}

fn parse_micros(text: &str) -> Result<i64, TimeParseError> {
    let err = || TimeParseError { text: text.to_string() };
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, TimeParseError> {
        let part = b.get(range).ok_or_else(err)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(err());
        }
        Ok(part.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| if b.get(i).is_some_and(|c| allowed.contains(c)) { Ok(()) } else { Err(err()) };
    let year = num(0..4)?;
    sep(4, b"-")?;
    let month = num(5..7)?;
    sep(7, b"-")?;
    let day = num(8..10)?;
    sep(10, b"Tt ")?;
    let hour = num(11..13)?;
    sep(13, b":")?;
    let minute = num(14..16)?;
    sep(16, b":")?;
    let second = num(17..19)?;
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        // Keep six digits, padding or truncating.
        for k in 0..6 {
            let digit = if start + k < i { i64::from(b[start + k] - b'0') } else { 0 };
            micros = micros * 10 + digit;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
            sep(i + 3, b":")?;
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return Err(err()),
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(err()),
    };
    // Second 60 is a leap second; it folds onto the next one.
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return Err(err());
    }
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        "Time".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

impl JsonSchema for MicroTime {
    fn schema_name() -> Cow<'static, str> {
        "MicroTime".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_epoch_and_a_leap_day() {
        assert_eq!(Time::from_unix_seconds(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Time::from_unix_seconds(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Time::parse("2000-02-29T00:00:00Z").unwrap().unix_seconds(), 951_782_400);
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let t = MicroTime::parse("2026-01-01T01:00:00.5+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-01T00:00:00.500000Z");
        let t = MicroTime::parse("2026-01-01T00:00:00.123456789Z").unwrap();
        assert_eq!(t.to_string(), "2026-01-01T00:00:00.123456Z");
        assert_eq!(Time::from(t).to_string(), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in ["", "2026-01-01", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00Zx", "2026-01-01T00:00:00.Z"] {
            assert!(Time::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn round_trips_through_json() {
        let t = Time::now();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Time>(&json).unwrap(), t);
        let m = MicroTime::now();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<MicroTime>(&json).unwrap(), m);
    }

    #[test]
    fn round_trips_every_day_over_four_centuries() {
        for days in (-146_097 * 2..146_097 * 2).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn free_functions_agree() {
        let t = parse_rfc3339("2026-01-01T00:00:10Z").unwrap();
        assert_eq!(t, 1_767_225_610.0);
        assert!(now_seconds() > t - 1e9);
        assert!(parse_rfc3339(&rfc3339_after(Duration::from_secs(3600))).unwrap() > now_seconds());
    }
}
