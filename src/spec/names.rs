//! Checked names: a value of these types has already passed its shape check, so the layers further
//! in can put it into AWS names and tags without looking again.

use std::fmt;

use serde::Serialize;

/// Longest cluster name: `<name>-api` must fit AWS's 32-character limit on load balancer and
/// target group names.
pub const CLUSTER_NAME_MAX: usize = 28;

/// Longest worker pool name.
pub const POOL_NAME_MAX: usize = 20;

/// The name of a cluster: lowercase letters, digits and '-', starting with a letter, ending with a
/// letter or digit, at most [`CLUSTER_NAME_MAX`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ClusterName(String);

impl ClusterName {
    /// Checks `name`; the error says what is wrong with it.
    pub fn parse(name: &str) -> Result<Self, String> {
        check_dns_label(name, CLUSTER_NAME_MAX, true)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a node pool: "masters" for the master pool, otherwise lowercase letters, digits and
/// '-', starting and ending with a letter or digit, at most [`POOL_NAME_MAX`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PoolName(String);

impl PoolName {
    /// The name every cluster's master pool has.
    pub const MASTERS: &'static str = "masters";

    /// The master pool's name.
    pub fn masters() -> Self {
        Self(Self::MASTERS.to_owned())
    }

    /// Checks a worker pool name; "masters" is refused because the master pool has it.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name == Self::MASTERS {
            return Err(
                "\"masters\" is reserved for the master pool; choose another name".to_owned(),
            );
        }
        check_dns_label(name, POOL_NAME_MAX, false)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Region(String);

impl Region {
    /// Checks the shape `^[a-z]{2}(-gov)?-[a-z]+-\d$`; it does not ask AWS whether the region exists.
    pub fn parse(name: &str) -> Result<Self, String> {
        if is_region(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not an AWS region name; expected a name like \"us-east-1\" or \"us-gov-west-1\""
            ))
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An availability zone: a region name followed by one lowercase letter, such as `us-east-1a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Zone(String);

impl Zone {
    /// Checks that `name` is a region name followed by one lowercase letter.
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        match chars.next_back() {
            Some(letter) if letter.is_ascii_lowercase() && is_region(chars.as_str()) => {
                Ok(Self(name.to_owned()))
            }
            _ => Err(format!(
                "{name:?} is not an availability zone name; expected a region followed by one letter, like \"us-east-1a\""
            )),
        }
    }

    /// Checks the zone's shape and that it lies in `region`.
    pub fn parse_in(name: &str, region: &Region) -> Result<Self, String> {
        let zone = Self::parse(name)?;
        if zone.region() != region.as_str() {
            return Err(format!(
                "{name:?} is in region {}, not in the cluster's region {region}; expected {region} followed by one letter, like \"{region}a\"",
                zone.region()
            ));
        }
        Ok(zone)
    }

    /// The region the zone belongs to (`us-east-1` for `us-east-1a`).
    pub fn region(&self) -> &str {
        &self.0[..self.0.len() - 1]
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(ClusterName, PoolName, Region, Zone);

/// `^[a-z]{2}(-gov)?-[a-z]+-\d$`
fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let lower = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let (country, direction, number) = match parts.as_slice() {
        [country, direction, number] => (*country, *direction, *number),
        [country, "gov", direction, number] => (*country, *direction, *number),
        _ => return false,
    };
    country.len() == 2
        && lower(country)
        && lower(direction)
        && number.len() == 1
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Lowercase letters, digits and '-', ending with a letter or digit, 1..=max characters; starting
/// with a letter when `letter_first`, else with a letter or digit.
fn check_dns_label(name: &str, max: usize, letter_first: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let length = name.chars().count();
    if length > max {
        return Err(format!(
            "{name:?} is {length} characters long, at most {max} are allowed"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{name:?} may contain only lowercase letters, digits and '-', found {bad:?}"
        ));
    }
    let first = name.as_bytes()[0];
    if letter_first && !first.is_ascii_lowercase() {
        return Err(format!("{name:?} must start with a lowercase letter"));
    }
    if !letter_first && first == b'-' {
        return Err(format!("{name:?} must start with a letter or digit"));
    }
    if name.ends_with('-') {
        return Err(format!("{name:?} must end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_the_load_balancer_name_limit() {
        assert!(ClusterName::parse("demo").is_ok());
        assert!(ClusterName::parse("a").is_ok());
        assert!(ClusterName::parse(&"a".repeat(28)).is_ok());
        assert!(
            ClusterName::parse(&"a".repeat(29))
                .unwrap_err()
                .contains("at most 28")
        );
        assert!(
            ClusterName::parse("Demo")
                .unwrap_err()
                .contains("found 'D'")
        );
        assert!(
            ClusterName::parse("1demo")
                .unwrap_err()
                .contains("start with a lowercase letter")
        );
        assert!(
            ClusterName::parse("demo-")
                .unwrap_err()
                .contains("end with a letter or digit")
        );
        assert!(ClusterName::parse("").is_err());
    }

    #[test]
    fn regions_and_zones_have_the_aws_shape() {
        assert!(Region::parse("us-east-1").is_ok());
        assert!(Region::parse("us-gov-west-1").is_ok());
        assert!(Region::parse("ap-southeast-2").is_ok());
        assert!(Region::parse("us-east").is_err());
        assert!(Region::parse("US-east-1").is_err());
        assert!(Region::parse("us-east-12").is_err());
        let region = Region::parse("us-east-1").unwrap();
        assert_eq!(
            Zone::parse_in("us-east-1b", &region).unwrap().region(),
            "us-east-1"
        );
        assert!(
            Zone::parse_in("us-west-2a", &region)
                .unwrap_err()
                .contains("not in the cluster's region us-east-1")
        );
        assert!(Zone::parse("us-east-1").is_err());
        assert!(Zone::parse("us-east-1ab").is_err());
    }

    #[test]
    fn pool_names_exclude_masters() {
        assert!(PoolName::parse("default").is_ok());
        assert!(PoolName::parse("2nd").is_ok());
        assert!(PoolName::parse("masters").unwrap_err().contains("reserved"));
        assert!(
            PoolName::parse(&"p".repeat(21))
                .unwrap_err()
                .contains("at most 20")
        );
        assert_eq!(PoolName::masters().as_str(), "masters");
    }
}
