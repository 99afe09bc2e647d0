//! Resource quantities (`500m`, `2`, `64Mi`, `1Gi`, `128974848`) and `IntOrString` (ports by number
//! or name, `maxSurge: 25%`), as Kubernetes writes them.

use std::fmt;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A resource quantity as written (`"500m"`, `"64Mi"`); YAML numbers (`cpu: 1`) are read as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(pub String);

/// A quantity that is not a number with an optional known suffix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a quantity (e.g. {example})")]
pub struct QuantityError {
    pub text: String,
    pub example: &'static str,
}

impl Quantity {
    /// The quantity as CPU millicores (`"500m"` → 500, `"2"` → 2000, `"0.5"` → 500).
    pub fn millicores(&self) -> Result<u64, QuantityError> {
        parse_cpu_millicores(&self.0)
    }

    /// The quantity as bytes (`"64Mi"` → 67108864, `"1G"` → 10^9).
    pub fn bytes(&self) -> Result<u64, QuantityError> {
        parse_memory_bytes(&self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity(s.to_string())
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Quantity(s)),
            serde_json::Value::Number(n) => Ok(Quantity(n.to_string())),
            other => Err(serde::de::Error::custom(format!("expected a quantity such as \"500m\" or \"64Mi\", got {other}"))),
        }
    }
}

// Kubernetes' OpenAPI has a quantity as int-or-string; `format: quantity` tells the validator to
// check the text and to store a number as its text.
impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}], "format": "quantity"})
    }
}

/// Whether `text` is a Kubernetes quantity: a signed decimal number with an optional binary
/// (`Ki`..`Ei`), decimal (`n u m k M G T P E`) or exponent (`e3`, `E-2`) suffix.
pub fn is_quantity(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (number, suffix) = split_number(unsigned);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
    };
    number_ok && suffix_ok
}

/// Splits `12.5Mi` into the decimal number and its suffix.
fn split_number(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    text.split_at(end)
}

/// `number * scale`, rounded up, for a non-negative decimal number without exponent.
fn scaled(number: &str, scale: u128) -> Option<u64> {
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(scale)?;
    if !frac.is_empty() {
        let digits = frac.len().min(18) as u32;
        let frac: u128 = frac[..digits as usize].parse().ok()?;
        let denominator = 10u128.pow(digits);
        value = value.checked_add((frac * scale).div_ceil(denominator))?;
    }
    u64::try_from(value).ok()
}

/// CPU millicores of a quantity: `"500m"` → 500, `"2"` → 2000, `"0.25"` → 250.
pub fn parse_cpu_millicores(text: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError { text: text.to_string(), example: "\"500m\" or \"2\"" };
    let (number, suffix) = split_number(text.trim());
    match suffix {
        "m" => scaled(number, 1),
        "" => scaled(number, 1000),
        "k" => scaled(number, 1_000_000),
        _ => None,
    }
    .ok_or_else(err)
}

/// Bytes of a memory quantity: binary (`Ki Mi Gi Ti Pi Ei`) and decimal (`k M G T P E`) suffixes,
/// or plain bytes.
pub fn parse_memory_bytes(text: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError { text: text.to_string(), example: "\"64Mi\", \"1Gi\" or \"128974848\"" };
    let (number, suffix) = split_number(text.trim());
    let scale: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(err()),
    };
    scaled(number, scale).ok_or_else(err)
}

/// A number or a name/percentage, e.g. a `targetPort` (`8080` or `http`) or `maxSurge` (`1` or `25%`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl JsonSchema for IntOrString {
    fn schema_name() -> Cow<'static, str> {
        "IntOrString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
    }
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl IntOrString {
    /// The absolute value of an int, or of a percentage of `total` (rounded up when `round_up`,
    /// down otherwise); `None` for a name or a malformed percentage.
    pub fn scaled_value(&self, total: u32, round_up: bool) -> Option<u32> {
        match self {
            IntOrString::Int(i) => u32::try_from(*i).ok(),
            IntOrString::String(s) => {
                let percent: u64 = s.strip_suffix('%')?.parse().ok()?;
                let product = percent * u64::from(total);
                let value = if round_up { product.div_ceil(100) } else { product / 100 };
                u32::try_from(value).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        assert_eq!(parse_cpu_millicores("500m"), Ok(500));
        assert_eq!(parse_cpu_millicores("2"), Ok(2000));
        assert_eq!(parse_cpu_millicores("0.5"), Ok(500));
        assert_eq!(parse_cpu_millicores("1.5"), Ok(1500));
        assert!(parse_cpu_millicores("lots").is_err());
        assert!(parse_cpu_millicores("5Mi").is_err());
        assert!(parse_cpu_millicores("").is_err());
    }

    #[test]
    fn memory_quantities_become_bytes() {
        assert_eq!(parse_memory_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory_bytes("128974848"), Ok(128_974_848));
        assert_eq!(parse_memory_bytes("129M"), Ok(129_000_000));
        assert_eq!(parse_memory_bytes("1.5Gi"), Ok(3 << 29));
        assert!(parse_memory_bytes("64MB").is_err());
        assert!(parse_memory_bytes("-1").is_err());
    }

    #[test]
    fn quantities_read_yaml_numbers_as_text() {
        let q: Quantity = serde_json::from_value(serde_json::json!(2)).unwrap();
        assert_eq!(q.millicores(), Ok(2000));
        let q: Quantity = serde_json::from_value(serde_json::json!("250m")).unwrap();
        assert_eq!(serde_json::to_value(&q).unwrap(), serde_json::json!("250m"));
    }

    #[test]
    fn quantities_follow_kubernetes_grammar() {
        for ok in ["4", "500m", "1.5Gi", "+2", "-1", "0.25", "1e3", "2E-2", "129M", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "x", "4 cpus", "1.2.3", "64MB", "1e", "Mi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn int_or_string_scales_percentages() {
        let p: IntOrString = serde_json::from_value(serde_json::json!("25%")).unwrap();
        assert_eq!(p.scaled_value(3, true), Some(1));
        assert_eq!(p.scaled_value(3, false), Some(0));
        assert_eq!(IntOrString::Int(2).scaled_value(10, false), Some(2));
        assert_eq!(IntOrString::String("http".into()).scaled_value(10, false), None);
    }
}
