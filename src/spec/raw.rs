//! The spec file as written: every field optional and spanned, so that validation can say what is
//! missing or wrong and point at where it is.
//!
//! Required fields are `Option` here on purpose: serde would stop at the first missing field,
//! whereas validation reports every missing field at its table's header in one go.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use toml::Spanned;

/// A spanned string, the most common leaf.
pub(crate) type SString = Spanned<String>;

/// A table of string keys to string values (tags, labels), keys and values spanned.
pub(crate) type RawStringMap = Spanned<BTreeMap<SString, SString>>;

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpec {
    pub cluster: Option<Spanned<RawCluster>>,
    pub network: Option<Spanned<RawNetwork>>,
    pub ssh: Option<Spanned<RawSsh>>,
    pub api: Option<Spanned<RawApi>>,
    pub masters: Option<Spanned<RawMasters>>,
    pub workers: Option<Spanned<Vec<Spanned<RawWorkerPool>>>>,
    pub backups: Option<Spanned<RawBackups>>,
    pub health: Option<Spanned<RawHealth>>,
    pub registries: Option<Spanned<Vec<Spanned<RawRegistry>>>>,
}

/// `[[registries]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistry {
    pub host: Option<SString>,
    pub ca: Option<SString>,
    pub mirror_of: Option<SString>,
}

/// `[cluster]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Option<SString>,
    pub region: Option<SString>,
    pub availability_zones: Option<Spanned<Vec<SString>>>,
    pub tags: Option<RawStringMap>,
    pub instance_identity_certificate: Option<SString>,
}

/// `[network]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub vpc_cidr: Option<SString>,
    pub admin_cidrs: Option<Spanned<Vec<SString>>>,
    pub subnets: Option<Spanned<Vec<Spanned<RawSubnet>>>>,
    pub cluster_cidr: Option<SString>,
    pub service_cidr: Option<SString>,
}

/// `[[network.subnets]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubnet {
    pub zone: Option<SString>,
    pub cidr: Option<SString>,
}

/// `[ssh]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    pub user: Option<SString>,
    pub private_key: Option<SString>,
}

/// `[api]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    /// i64 so that `0`, `-1` and `70000` get a range message rather than a serde type error.
    pub port: Option<Spanned<i64>>,
    pub load_balancer: Option<Spanned<bool>>,
}

/// `[masters]`: a node pool without a name (it is always "masters").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMasters {
    pub count: Option<Spanned<i64>>,
    pub instance_type: Option<SString>,
    pub image: Option<Spanned<RawImage>>,
    pub disk_gb: Option<Spanned<i64>>,
    pub labels: Option<RawStringMap>,
}

/// `[backups]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackups {
    pub snapshot_every_minutes: Option<Spanned<i64>>,
    pub snapshots_kept: Option<Spanned<i64>>,
}

/// `[health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub node_grace_seconds: Option<Spanned<i64>>,
    pub eviction_seconds: Option<Spanned<i64>>,
    pub unhealthy_zone_percent: Option<Spanned<i64>>,
    pub replace_not_ready_after_seconds: Option<Spanned<i64>>,
    pub max_unhealthy_percent: Option<Spanned<i64>>,
}

/// `[[workers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkerPool {
    pub name: Option<SString>,
    pub count: Option<Spanned<i64>>,
    pub instance_type: Option<SString>,
    pub image: Option<Spanned<RawImage>>,
    pub disk_gb: Option<Spanned<i64>>,
    pub labels: Option<RawStringMap>,
}

/// `image = "ami-..."` or `image = { name = "...", owner = "..." }`.
#[derive(Debug)]
pub(crate) enum RawImage {
    Id(String),
    Filter {
        name: Option<SString>,
        owner: Option<SString>,
        /// Keys other than `name` and `owner`, kept so validation can point at them; serde's own
        /// unknown-field error would only point at the whole inline table.
        unknown: Vec<SString>,
    },
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawImageVisitor)
    }
}

struct RawImageVisitor;

impl<'de> Visitor<'de> for RawImageVisitor {
    type Value = RawImage;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AMI id string or a table { name = \"...\", owner = \"...\" }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawImage, E> {
        Ok(RawImage::Id(v.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawImage, A::Error> {
        let mut name = None;
        let mut owner = None;
        let mut unknown = Vec::new();
        while let Some(key) = map.next_key::<SString>()? {
            match key.get_ref().as_str() {
                "name" => name = Some(map.next_value::<SString>()?),
                "owner" => owner = Some(map.next_value::<SString>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    unknown.push(key);
                }
            }
        }
        Ok(RawImage::Filter {
            name,
            owner,
            unknown,
        })
    }
}
