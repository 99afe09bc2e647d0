//! Join tokens, kubeadm's bootstrap tokens: `<id>.<secret>`, `[a-z0-9]{6}.[a-z0-9]{16}`.
//!
//! The id is public (it names the token's Secret, `bootstrap-token-<id>` in `kube-system`); the
//! secret is what a joining node proves it knows. A token expires at the RFC 3339 time stored in
//! its Secret ([`DEFAULT_TOKEN_TTL`] after creation unless configured).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;

use super::PkiError;

/// How long a join token is valid unless configured otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The namespace of bootstrap-token Secrets.
pub const SECRET_NAMESPACE: &str = "kube-system";
/// The `type` of bootstrap-token Secrets.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A join token. `Display` gives the full `<id>.<secret>`; `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JoinToken {
    id: String,
    secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl FromStr for JoinToken {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        JoinToken::parse(s)
    }
}

fn random_part(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl JoinToken {
    /// A new random token (from the thread's cryptographically secure generator).
    pub fn generate() -> Self {
        JoinToken { id: random_part(ID_LEN), secret: random_part(SECRET_LEN) }
    }

    /// Parses exactly `[a-z0-9]{6}.[a-z0-9]{16}`; no surrounding whitespace.
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let bad = |reason| Err(PkiError::BadToken { reason });
        let Some((id, secret)) = text.split_once('.') else { return bad("no '.' between id and secret") };
        if id.len() != ID_LEN {
            return bad("the id must be 6 characters");
        }
        if secret.len() != SECRET_LEN {
            return bad("the secret must be 16 characters");
        }
        if !id.bytes().chain(secret.bytes()).all(is_token_char) {
            return bad("only lowercase letters and digits are allowed");
        }
        Ok(JoinToken { id: id.to_string(), secret: secret.to_string() })
    }

    /// The public half, which names the token.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The private half.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `presented` is this token's secret, compared in constant time.
    pub fn secret_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The name of the token's Secret: `bootstrap-token-<id>` (in [`SECRET_NAMESPACE`]).
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The expiry time of a token created at `now` that lives `ttl`, in RFC 3339 (UTC, seconds).
    pub fn expiration(now: SystemTime, ttl: Duration) -> String {
        format_rfc3339(now + ttl)
    }

    /// Whether an RFC 3339 expiry time has passed at `now`.
    pub fn is_expired(expiration_rfc3339: &str, now: SystemTime) -> Result<bool, PkiError> {
        Ok(parse_rfc3339(expiration_rfc3339)? <= now)
    }

    /// The `data` of the token's bootstrap-token Secret (type [`SECRET_TYPE`]), values not yet
    /// base64-encoded: `token-id`, `token-secret`, `expiration`, and
    /// `usage-bootstrap-authentication: "true"` as Kubernetes requires for tokens used to join.
    pub fn secret_data(&self, expires_at_rfc3339: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("token-id".to_string(), self.id.clone()),
            ("token-secret".to_string(), self.secret.clone()),
            ("expiration".to_string(), expires_at_rfc3339.to_string()),
            ("usage-bootstrap-authentication".to_string(), "true".to_string()),
        ])
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// (year, month, day) to days since 1970-01-01 (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats a time as RFC 3339 in UTC with whole seconds: `2024-05-01T12:00:00Z`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses RFC 3339 (`Z` or `±hh:mm` offset, optional fractional seconds, which are dropped).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, PkiError> {
    let bad = || PkiError::BadTime { text: text.to_string() };
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, PkiError> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Ok(match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_kubeadm_form_and_differ() {
        let a = JoinToken::generate();
        let b = JoinToken::generate();
        let text = a.to_string();
        assert_eq!(text.len(), 23);
        assert_eq!(&text[6..7], ".");
        assert!(text.bytes().filter(|&c| c != b'.').all(is_token_char), "{text}");
        assert_eq!(JoinToken::parse(&text).unwrap(), a);
        assert_ne!(a, b);
    }

    #[test]
    fn parse_refuses_anything_but_the_exact_form() {
        for bad in [
            "",
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdefg.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeF",
            "abc-ef.0123456789abcdef",
            " abcdef.0123456789abcdef",
            "abcdef.0123456789abcdef\n",
            "abcdef.01234567.9abcdef",
        ] {
            assert!(matches!(JoinToken::parse(bad), Err(PkiError::BadToken { .. })), "{bad:?} was accepted");
        }
        let t: JoinToken = "abcdef.0123456789abcdef".parse().unwrap();
        assert_eq!((t.id(), t.secret()), ("abcdef", "0123456789abcdef"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        let debug = format!("{t:?}");
        assert!(debug.contains("abcdef") && !debug.contains("0123456789abcdef"), "{debug}");
    }

    #[test]
    fn secret_matches_only_the_exact_secret() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        assert!(t.secret_matches("0123456789abcdef"));
        assert!(!t.secret_matches("0123456789abcdee"));
        assert!(!t.secret_matches("0123456789abcde"));
        assert!(!t.secret_matches(""));
    }

    #[test]
    fn secret_data_has_the_bootstrap_token_shape() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        let data = t.secret_data("2030-01-02T03:04:05Z");
        assert_eq!(data["token-id"], "abcdef");
        assert_eq!(data["token-secret"], "0123456789abcdef");
        assert_eq!(data["expiration"], "2030-01-02T03:04:05Z");
        assert_eq!(data["usage-bootstrap-authentication"], "true");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
    }

    #[test]
    fn expiration_is_rfc3339_utc_and_round_trips() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        let exp = JoinToken::expiration(now, DEFAULT_TOKEN_TTL);
        assert_eq!(exp, "2023-11-14T23:13:20Z");
        assert_eq!(parse_rfc3339(&exp).unwrap(), now + DEFAULT_TOKEN_TTL);
        assert!(!JoinToken::is_expired(&exp, now).unwrap());
        assert!(JoinToken::is_expired(&exp, now + DEFAULT_TOKEN_TTL).unwrap());
    }

    #[test]
    fn rfc3339_dates_match_the_calendar() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)), "2099-12-31T23:59:59Z");
        for secs in [0u64, 59, 86_399, 951_782_400, 1_709_164_800, 4_102_444_799] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&format_rfc3339(t)).unwrap(), t, "{secs}");
        }
    }

    #[test]
    fn rfc3339_offsets_and_fractions_are_understood() {
        let utc = parse_rfc3339("2024-03-01T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2024-03-01T12:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_rfc3339("2024-03-01T09:30:00-00:30").unwrap(), utc);
        assert_eq!(parse_rfc3339("2024-03-01T10:00:00.123456Z").unwrap(), utc);
        for bad in ["2024-03-01", "2024-13-01T10:00:00Z", "2024-03-01T10:00:00", "2024-03-01T10:00:00+0200", "2024-03-01T10:00:00.Z", "x024-03-01T10:00:00Z"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
