//! From the file as written ([`super::raw`]) to a [`ClusterSpec`], gathering every problem with the
//! position of the value it is about.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::Ipv4Net;
use toml::Spanned;
use toml::de::DeTable;

use super::error::{Problems, shape_problem, syntax_problem};
use super::raw::{
    RawApi, RawBackups, RawHealth, RawCluster, RawImage, RawMasters, RawNetwork, RawRegistry, RawSpec, RawSsh, RawStringMap,
    RawWorkerPool, SString,
};
use super::{
    ApiConfig, Backups, Health, ClusterName, ClusterSpec, ImageRef, Network, NodePool, PoolName, Region, Role,
    SpecError, SshConfig, SshKeySource, SubnetSpec, Zone,
};

/// Most availability zones a cluster may span.
const MAX_ZONES: usize = 6;
/// Most extra tags: AWS allows 50 per resource and clusterctl keeps some for its own.
const MAX_EXTRA_TAGS: usize = 40;
/// Most workers in one pool.
const MAX_WORKERS: i64 = 100;
/// Default root disk size in GiB.
const DEFAULT_DISK_GB: u32 = 20;
/// Default API server port.
const DEFAULT_API_PORT: u16 = 6443;
/// Default SSH login user (Debian's cloud images).
const DEFAULT_SSH_USER: &str = "admin";
/// How many bits a derived subnet adds to the VPC prefix: /16 gives /20s, 16 blocks, enough for
/// any number of zones up to [`MAX_ZONES`].
const DERIVED_SUBNET_EXTRA_BITS: u8 = 4;

/// Parses and validates spec `text` read from `source`.
pub(crate) fn parse(source: &Path, text: &str) -> Result<ClusterSpec, SpecError> {
    let raw: RawSpec = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            let problem = match DeTable::parse(text) {
                Err(_) => syntax_problem(text, &error),
                Ok(tree) => shape_problem(&tree, &error),
            };
            let mut problems = Problems::default();
            problems.add(problem.span, problem.field, problem.message);
            return Err(problems
                .into_error(source, text)
                .unwrap_or_else(|| unreachable_no_problem(source)));
        }
    };
    let mut check = Check {
        problems: Problems::default(),
        spec_folder: source.parent().map(Path::to_path_buf).unwrap_or_default(),
        home: std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from),
    };
    let spec = check.spec(source, raw);
    match (check.problems.into_error(source, text), spec) {
        (Some(error), _) => Err(error),
        (None, Some(spec)) => Ok(spec),
        // Every path that yields no spec records a problem; keep a message rather than panic.
        (None, None) => Err(unreachable_no_problem(source)),
    }
}

fn unreachable_no_problem(source: &Path) -> SpecError {
    SpecError::Invalid {
        path: source.to_path_buf(),
        line: 1,
        column: 1,
        field: "toml".to_owned(),
        message: "could not be validated (internal error: no problem was recorded)".to_owned(),
    }
}

/// The validation of one spec: the problems found so far, and where relative paths start.
struct Check {
    problems: Problems,
    /// Where a relative `ssh.private_key` starts.
    spec_folder: PathBuf,
    /// What `~` stands for in `ssh.private_key`.
    home: Option<PathBuf>,
}

impl Check {
    fn spec(&mut self, source: &Path, raw: RawSpec) -> Option<ClusterSpec> {
        let root = 0..0;
        let cluster = self.require(
            raw.cluster.as_ref(),
            &root,
            "cluster",
            "add a [cluster] table with name, region and availability_zones",
        );
        let cluster = cluster.map(|c| self.cluster(c));
        let (name, region, zones, tags, identity) = cluster.unwrap_or_default();

        let network = self.require(
            raw.network.as_ref(),
            &root,
            "network",
            "add a [network] table with vpc_cidr and admin_cidrs",
        );
        let network = network.and_then(|n| self.network(n, region.as_ref(), zones.as_deref()));

        let ssh = match raw.ssh.as_ref() {
            Some(ssh) => self.ssh(ssh.get_ref()),
            None => Some(SshConfig {
                user: DEFAULT_SSH_USER.to_owned(),
                key: SshKeySource::Generated,
            }),
        };
        let api = match raw.api.as_ref() {
            Some(api) => self.api(api.get_ref()),
            None => Some(ApiConfig {
                port: DEFAULT_API_PORT,
                load_balancer: true,
            }),
        };

        let masters = self.require(
            raw.masters.as_ref(),
            &root,
            "masters",
            "add a [masters] table with count, instance_type and image",
        );
        let masters = masters.and_then(|m| self.masters(m));

        let workers = self.require(
            raw.workers.as_ref(),
            &root,
            "workers",
            "add at least one [[workers]] pool with name, count, instance_type and image",
        );
        let workers = workers.and_then(|w| self.workers(w));

        let backups = match raw.backups.as_ref() {
            Some(b) => self.backups(b.get_ref()),
            None => Some(Backups::default()),
        };
        let health = match raw.health.as_ref() {
            Some(h) => self.health(h.get_ref()),
            None => Some(Health::default()),
        };
        let registries = match raw.registries.as_ref() {
            Some(list) => self.registries(list.get_ref()),
            None => Some(Vec::new()),
        };

        Some(ClusterSpec {
            source: source.to_path_buf(),
            name: name?,
            region: region?,
            zones: zones?,
            tags: tags?,
            instance_identity_certificate: identity?,
            network: network?,
            ssh: ssh?,
            api: api?,
            masters: masters?,
            workers: workers?,
            backups: backups?,
            health: health?,
            registries: registries?,
        })
    }

    /// `value`, or a "is required" problem at the header of the table it is missing from.
    fn require<'a, T>(
        &mut self,
        value: Option<&'a T>,
        table: &Range<usize>,
        field: &str,
        hint: &str,
    ) -> Option<&'a T> {
        if value.is_none() {
            self.problems
                .add(table.clone(), field, format!("is required; {hint}"));
        }
        value
    }

    #[allow(clippy::type_complexity)]
    fn cluster(
        &mut self,
        table: &Spanned<RawCluster>,
    ) -> (
        Option<ClusterName>,
        Option<Region>,
        Option<Vec<Zone>>,
        Option<BTreeMap<String, String>>,
        Option<Option<String>>,
    ) {
        let header = table.span();
        let raw = table.get_ref();

        let name = self
            .require(
                raw.name.as_ref(),
                &header,
                "cluster.name",
                "add e.g. name = \"demo\" to [cluster]",
            )
            .and_then(|name| self.checked(name, "cluster.name", ClusterName::parse));
        let region = self
            .require(
                raw.region.as_ref(),
                &header,
                "cluster.region",
                "add e.g. region = \"us-east-1\" to [cluster]",
            )
            .and_then(|region| self.checked(region, "cluster.region", Region::parse));
        let zones = self
            .require(
                raw.availability_zones.as_ref(),
                &header,
                "cluster.availability_zones",
                "add e.g. availability_zones = [\"us-east-1a\", \"us-east-1b\"] to [cluster]",
            )
            .and_then(|zones| self.zones(zones, region.as_ref()));
        let tags = match raw.tags.as_ref() {
            Some(tags) => self.tags(tags),
            None => Some(BTreeMap::new()),
        };
        let identity = match raw.instance_identity_certificate.as_ref() {
            None => Some(None),
            Some(pem) => match rsa_certificate(pem.get_ref()) {
                Ok(()) => Some(Some(pem.get_ref().clone())),
                Err(why) => {
                    self.problems.at(pem, "cluster.instance_identity_certificate".to_string(), format!("must be one PEM certificate with an RSA key (AWS's RSA certificate of the region): {why}"));
                    None
                }
            },
        };
        (name, region, zones, tags, identity)
    }

    /// Runs a name check on a spanned string, recording its complaint.
    fn checked<T>(
        &mut self,
        value: &SString,
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(value.get_ref()) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.problems.at(value, field, message);
                None
            }
        }
    }

    fn zones(
        &mut self,
        zones: &Spanned<Vec<SString>>,
        region: Option<&Region>,
    ) -> Option<Vec<Zone>> {
        let field = "cluster.availability_zones";
        let list = zones.get_ref();
        if list.is_empty() {
            let example = region.map_or_else(|| "us-east-1a".to_owned(), |r| format!("{r}a"));
            self.problems.at(
                zones,
                field,
                format!("must list at least one zone, e.g. [\"{example}\"]"),
            );
            return None;
        }
        if list.len() > MAX_ZONES {
            self.problems.at(
                zones,
                field,
                format!(
                    "lists {} zones, at most {MAX_ZONES} are allowed",
                    list.len()
                ),
            );
            return None;
        }
        let mut parsed = Vec::new();
        let mut ok = true;
        for (i, zone) in list.iter().enumerate() {
            let entry = format!("{field}[{i}]");
            let result = match region {
                Some(region) => Zone::parse_in(zone.get_ref(), region),
                None => Zone::parse(zone.get_ref()),
            };
            match result {
                Ok(z) => {
                    if let Some(first) = parsed.iter().position(|p: &Zone| p == &z) {
                        self.problems.at(
                            zone,
                            entry,
                            format!("{z} is already listed as {field}[{first}]; each zone may appear once"),
                        );
                        ok = false;
                    } else {
                        parsed.push(z);
                    }
                }
                Err(message) => {
                    self.problems.at(zone, entry, message);
                    ok = false;
                }
            }
        }
        // Without a valid region the zones cannot be trusted to belong together.
        (ok && region.is_some()).then_some(parsed)
    }

    fn tags(&mut self, tags: &RawStringMap) -> Option<BTreeMap<String, String>> {
        let field = "cluster.tags";
        let mut ok = true;
        if tags.get_ref().len() > MAX_EXTRA_TAGS {
            self.problems.at(
                tags,
                field,
                format!(
                    "has {} tags, at most {MAX_EXTRA_TAGS} are allowed (AWS allows 50 per resource and clusterctl needs the rest)",
                    tags.get_ref().len()
                ),
            );
            ok = false;
        }
        for (key, value) in tags.get_ref() {
            if let Err(message) = check_tag_key(key.get_ref()) {
                self.problems.at(key, field, message);
                ok = false;
            }
            let length = value.get_ref().chars().count();
            if length > 256 {
                self.problems.at(
                    value,
                    field,
                    format!(
                        "value of {:?} is {length} characters long, at most 256 are allowed",
                        key.get_ref()
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| plain_map(tags))
    }

    fn network(
        &mut self,
        table: &Spanned<RawNetwork>,
        region: Option<&Region>,
        zones: Option<&[Zone]>,
    ) -> Option<Network> {
        let header = table.span();
        let raw = table.get_ref();
        let vpc = self
            .require(
                raw.vpc_cidr.as_ref(),
                &header,
                "network.vpc_cidr",
                "add e.g. vpc_cidr = \"10.42.0.0/16\" to [network]",
            )
            .and_then(|vpc| self.vpc(vpc));
        let admin = self
            .require(
                raw.admin_cidrs.as_ref(),
                &header,
                "network.admin_cidrs",
                "add the addresses that may reach SSH and the API, e.g. admin_cidrs = [\"203.0.113.7/32\"], to [network]",
            )
            .and_then(|admin| self.admin_cidrs(admin));
        let subnets = match raw.subnets.as_ref() {
            Some(subnets) => self.explicit_subnets(subnets, vpc, region, zones),
            None => match (raw.vpc_cidr.as_ref(), vpc, zones) {
                (Some(written), Some(vpc), Some(zones)) => {
                    self.derived_subnets(written, vpc, zones)
                }
                _ => None,
            },
        };
        let cluster = self.address_block(raw.cluster_cidr.as_ref(), "network.cluster_cidr", super::DEFAULT_CLUSTER_CIDR, 8..=22, "each node gets a /24 of it, so it must be /22 or larger");
        let service = self.address_block(raw.service_cidr.as_ref(), "network.service_cidr", super::DEFAULT_SERVICE_CIDR, 12..=24, "/12 to /24, as Kubernetes allows");
        let (cluster, service) = (cluster?, service?);
        for (field, written, block) in [("network.cluster_cidr", raw.cluster_cidr.as_ref(), cluster), ("network.service_cidr", raw.service_cidr.as_ref(), service)] {
            if let Some(vpc) = vpc.filter(|v| v.contains(&block.network()) || block.contains(&v.network())) {
                self.problem_at(written, &header, field, format!("{block} overlaps the VPC's {vpc}; pods and services need addresses of their own"));
                return None;
            }
        }
        if cluster.contains(&service.network()) || service.contains(&cluster.network()) {
            self.problem_at(raw.service_cidr.as_ref(), &header, "network.service_cidr", format!("{service} overlaps the cluster CIDR {cluster}"));
            return None;
        }
        Some(Network {
            vpc_cidr: vpc?,
            subnets: subnets?,
            admin_cidrs: admin?,
            cluster_cidr: cluster,
            service_cidr: service,
        })
    }

    /// An address block of the cluster's own (the pods', the services'): written, or `default`; its
    /// prefix within `prefixes`.
    fn address_block(&mut self, written: Option<&SString>, field: &str, default: &str, prefixes: std::ops::RangeInclusive<u8>, why: &str) -> Option<Ipv4Net> {
        let Some(value) = written else { return Ipv4Net::from_str(default).ok() };
        let block = self.cidr(value, field)?;
        if !prefixes.contains(&block.prefix_len()) {
            self.problems.at(value, field, format!("{block} has prefix /{}; {why}", block.prefix_len()));
            return None;
        }
        Some(block)
    }

    /// A problem at the written value, else at the table's header.
    fn problem_at(&mut self, written: Option<&SString>, header: &Range<usize>, field: &str, message: String) {
        match written {
            Some(value) => self.problems.at(value, field, message),
            None => self.problems.add(header.clone(), field, message),
        }
    }

    /// A CIDR block written as a network address and prefix, such as "10.42.0.0/16".
    fn cidr(&mut self, value: &SString, field: &str) -> Option<Ipv4Net> {
        match parse_cidr(value.get_ref()) {
            Ok(net) => Some(net),
            Err(message) => {
                self.problems.at(value, field, message);
                None
            }
        }
    }

    fn vpc(&mut self, value: &SString) -> Option<Ipv4Net> {
        let field = "network.vpc_cidr";
        let vpc = self.cidr(value, field)?;
        if !(16..=24).contains(&vpc.prefix_len()) {
            self.problems.at(
                value,
                field,
                format!(
                    "{vpc} has prefix /{}; a VPC's prefix must be /16 to /24",
                    vpc.prefix_len()
                ),
            );
            return None;
        }
        let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
        let inside_private = private
            .iter()
            .filter_map(|block| Ipv4Net::from_str(block).ok())
            .any(|block| block.contains(&vpc));
        if !inside_private {
            self.problems.at(
                value,
                field,
                format!("{vpc} is not a private range; use a block inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"),
            );
            return None;
        }
        Some(vpc)
    }

    fn admin_cidrs(&mut self, list: &Spanned<Vec<SString>>) -> Option<Vec<Ipv4Net>> {
        let field = "network.admin_cidrs";
        if list.get_ref().is_empty() {
            self.problems.at(
                list,
                field,
                "must list at least one CIDR block that may reach SSH and the API, e.g. [\"203.0.113.7/32\"]",
            );
            return None;
        }
        let mut parsed: Vec<Ipv4Net> = Vec::new();
        let mut ok = true;
        for (i, value) in list.get_ref().iter().enumerate() {
            let entry = format!("{field}[{i}]");
            match self.cidr(value, &entry) {
                Some(net) => {
                    if let Some(first) = parsed.iter().position(|p| *p == net) {
                        // AWS refuses a security group rule written twice.
                        self.problems.at(
                            value,
                            entry,
                            format!("{net} is already listed as {field}[{first}]"),
                        );
                        ok = false;
                    } else {
                        parsed.push(net);
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(parsed)
    }

    fn explicit_subnets(
        &mut self,
        list: &Spanned<Vec<Spanned<super::raw::RawSubnet>>>,
        vpc: Option<Ipv4Net>,
        region: Option<&Region>,
        zones: Option<&[Zone]>,
    ) -> Option<Vec<SubnetSpec>> {
        let field = "network.subnets";
        if list.get_ref().is_empty() {
            self.problems.at(
                list,
                field,
                "is empty; give one [[network.subnets]] per availability zone, or leave it out to derive them from vpc_cidr",
            );
            return None;
        }
        let mut ok = true;
        let mut seen: Vec<(usize, SubnetSpec)> = Vec::new();
        for (i, subnet) in list.get_ref().iter().enumerate() {
            let header = subnet.span();
            let raw = subnet.get_ref();
            let zone_field = format!("{field}[{i}].zone");
            let cidr_field = format!("{field}[{i}].cidr");
            let example = zones
                .and_then(|z| z.get(i))
                .map_or_else(|| "us-east-1a".to_owned(), |z| z.to_string());
            let zone = self
                .require(
                    raw.zone.as_ref(),
                    &header,
                    &zone_field,
                    &format!("add e.g. zone = \"{example}\""),
                )
                .and_then(|zone| self.subnet_zone(zone, &zone_field, region, zones, &seen));
            let cidr = self
                .require(
                    raw.cidr.as_ref(),
                    &header,
                    &cidr_field,
                    "add e.g. cidr = \"10.42.0.0/20\"",
                )
                .and_then(|cidr| self.subnet_cidr(cidr, &cidr_field, vpc, &seen));
            match (zone, cidr) {
                (Some(zone), Some(cidr)) => seen.push((i, SubnetSpec { zone, cidr })),
                _ => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let zones = zones?;
        let mut ordered = Vec::new();
        for zone in zones {
            match seen.iter().find(|(_, s)| &s.zone == zone) {
                Some((_, subnet)) => ordered.push(subnet.clone()),
                None => {
                    self.problems.at(
                        list,
                        field,
                        format!(
                            "has no subnet for availability zone {zone}; when subnets are given, every zone in cluster.availability_zones needs exactly one"
                        ),
                    );
                    ok = false;
                }
            }
        }
        // Subnets are kept in zone order so that `subnets[i]` is the i-th zone's.
        ok.then_some(ordered)
    }

    fn subnet_zone(
        &mut self,
        value: &SString,
        field: &str,
        region: Option<&Region>,
        zones: Option<&[Zone]>,
        seen: &[(usize, SubnetSpec)],
    ) -> Option<Zone> {
        let zone = match region {
            Some(region) => self.checked(value, field, |z| Zone::parse_in(z, region))?,
            None => self.checked(value, field, Zone::parse)?,
        };
        let zones = zones?;
        if !zones.contains(&zone) {
            let listed: Vec<&str> = zones.iter().map(Zone::as_str).collect();
            self.problems.at(
                value,
                field,
                format!(
                    "{zone} is not one of cluster.availability_zones ({})",
                    listed.join(", ")
                ),
            );
            return None;
        }
        if let Some((j, _)) = seen.iter().find(|(_, s)| s.zone == zone) {
            self.problems.at(
                value,
                field,
                format!(
                    "{zone} already has a subnet, network.subnets[{j}]; each zone gets exactly one"
                ),
            );
            return None;
        }
        Some(zone)
    }

    fn subnet_cidr(
        &mut self,
        value: &SString,
        field: &str,
        vpc: Option<Ipv4Net>,
        seen: &[(usize, SubnetSpec)],
    ) -> Option<Ipv4Net> {
        let cidr = self.cidr(value, field)?;
        if !(16..=28).contains(&cidr.prefix_len()) {
            self.problems.at(
                value,
                field,
                format!(
                    "{cidr} has prefix /{}; a subnet's prefix must be /16 to /28",
                    cidr.prefix_len()
                ),
            );
            return None;
        }
        let vpc = vpc?;
        if !vpc.contains(&cidr) {
            self.problems
                .at(value, field, format!("{cidr} is outside the VPC {vpc}"));
            return None;
        }
        if let Some((j, other)) = seen.iter().find(|(_, s)| overlaps(&s.cidr, &cidr)) {
            self.problems.at(
                value,
                field,
                format!("{cidr} overlaps network.subnets[{j}].cidr {}", other.cidr),
            );
            return None;
        }
        Some(cidr)
    }

    /// One subnet per zone: the VPC split into blocks DERIVED_SUBNET_EXTRA_BITS longer, the i-th
    /// zone taking the i-th block.
    fn derived_subnets(
        &mut self,
        written: &SString,
        vpc: Ipv4Net,
        zones: &[Zone],
    ) -> Option<Vec<SubnetSpec>> {
        let prefix = vpc.prefix_len() + DERIVED_SUBNET_EXTRA_BITS;
        let blocks: Vec<Ipv4Net> = match vpc.subnets(prefix) {
            Ok(blocks) => blocks.take(zones.len()).collect(),
            Err(_) => Vec::new(),
        };
        if blocks.len() < zones.len() {
            self.problems.at(
                written,
                "network.vpc_cidr",
                format!(
                    "{vpc} cannot be split into {} subnets of /{prefix}; use a larger VPC or give [[network.subnets]] explicitly",
                    zones.len()
                ),
            );
            return None;
        }
        Some(
            zones
                .iter()
                .zip(blocks)
                .map(|(zone, cidr)| SubnetSpec {
                    zone: zone.clone(),
                    cidr,
                })
                .collect(),
        )
    }

    fn ssh(&mut self, raw: &RawSsh) -> Option<SshConfig> {
        let user = match raw.user.as_ref() {
            Some(user) => self.checked(user, "ssh.user", check_unix_user)?,
            None => DEFAULT_SSH_USER.to_owned(),
        };
        let key = match raw.private_key.as_ref() {
            Some(path) => self.private_key(path)?,
            None => SshKeySource::Generated,
        };
        Some(SshConfig { user, key })
    }

    fn private_key(&mut self, written: &SString) -> Option<SshKeySource> {
        let field = "ssh.private_key";
        let text = written.get_ref();
        if text.is_empty() {
            self.problems.at(
                written,
                field,
                "must not be empty; leave it out to have clusterctl generate a key for the cluster",
            );
            return None;
        }
        let private = match resolve_key_path(text, &self.spec_folder, self.home.as_deref()) {
            Ok(path) => path,
            Err(message) => {
                self.problems.at(written, field, message);
                return None;
            }
        };
        let mut public = private.clone().into_os_string();
        public.push(".pub");
        let public = PathBuf::from(public);
        if let Err(why) = readable_file(&private) {
            self.problems.at(
                written,
                field,
                format!(
                    "{} cannot be read ({why}); give an existing key, or leave private_key out to have clusterctl generate one",
                    private.display()
                ),
            );
            return None;
        }
        if let Err(why) = readable_file(&public) {
            self.problems.at(
                written,
                field,
                format!(
                    "needs its public key next to it, but {} cannot be read ({why})",
                    public.display()
                ),
            );
            return None;
        }
        Some(SshKeySource::File { private, public })
    }

    fn api(&mut self, raw: &RawApi) -> Option<ApiConfig> {
        let port = match raw.port.as_ref() {
            Some(port) => {
                let value = self.int_in(port, "api.port", 1, 65535)?;
                if value == 22 {
                    self.problems.at(
                        port,
                        "api.port",
                        "22 is the nodes' SSH port; choose another, e.g. 6443",
                    );
                    return None;
                }
                u16::try_from(value).ok()?
            }
            None => DEFAULT_API_PORT,
        };
        let load_balancer = raw.load_balancer.as_ref().is_none_or(|lb| *lb.get_ref());
        Some(ApiConfig {
            port,
            load_balancer,
        })
    }

    /// `[[registries]]`: a host (`name` or `name:port`, no scheme or path), a CA in PEM, and what it
    /// may mirror (`docker.io` only).
    fn registries(&mut self, raw: &[Spanned<RawRegistry>]) -> Option<Vec<super::TrustedRegistry>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, entry) in raw.iter().enumerate() {
            let r = entry.get_ref();
            let field = |f: &str| format!("registries[{i}].{f}");
            let (Some(host), Some(ca)) = (r.host.as_ref(), r.ca.as_ref()) else {
                let missing = if r.host.is_none() { "host" } else { "ca" };
                self.problems.at(entry, field(missing), "is required (a registry's host and the PEM of the CA its certificate chains to)".to_string());
                ok = false;
                continue;
            };
            let h = host.get_ref();
            if h.is_empty() || h.contains(['/', ' ']) || h.contains("://") {
                self.problems.at(host, field("host"), format!("must be a host or host:port (no scheme, no path), got {h:?}"));
                ok = false;
            }
            let certs: Vec<_> = CertificateDer::pem_slice_iter(ca.get_ref().as_bytes()).collect();
            if certs.is_empty() || certs.iter().any(Result::is_err) {
                self.problems.at(ca, field("ca"), "must be one or more PEM certificates (-----BEGIN CERTIFICATE-----)".to_string());
                ok = false;
            }
            if let Some(of) = r.mirror_of.as_ref().filter(|of| of.get_ref() != super::MIRRORABLE) {
                self.problems.at(of, field("mirror_of"), format!("must be {:?} (Docker takes mirrors for Docker Hub only), got {:?}", super::MIRRORABLE, of.get_ref()));
                ok = false;
            }
            out.push(super::TrustedRegistry { host: h.clone(), ca: ca.get_ref().clone(), mirror_of: r.mirror_of.as_ref().map(|m| m.get_ref().clone()) });
        }
        ok.then_some(out)
    }

    fn backups(&mut self, raw: &RawBackups) -> Option<Backups> {
        let defaults = Backups::default();
        let every = match raw.snapshot_every_minutes.as_ref() {
            Some(v) => u32::try_from(self.int_in(v, "backups.snapshot_every_minutes", 0, 10_080)?).ok(),
            None => Some(defaults.snapshot_every_minutes),
        };
        let kept = match raw.snapshots_kept.as_ref() {
            Some(v) => u32::try_from(self.int_in(v, "backups.snapshots_kept", 1, 1_000)?).ok(),
            None => Some(defaults.snapshots_kept),
        };
        Some(Backups { snapshot_every_minutes: every?, snapshots_kept: kept? })
    }

    fn health(&mut self, raw: &RawHealth) -> Option<Health> {
        let d = Health::default();
        let mut field = |v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, default: u32| match v.as_ref() {
            Some(v) => self.int_in(v, &format!("health.{name}"), lo, hi).and_then(|n| u32::try_from(n).ok()),
            None => Some(default),
        };
        let grace = field(&raw.node_grace_seconds, "node_grace_seconds", 5, 3_600, d.node_grace_seconds);
        let eviction = field(&raw.eviction_seconds, "eviction_seconds", 0, 86_400, d.eviction_seconds);
        let zone = field(&raw.unhealthy_zone_percent, "unhealthy_zone_percent", 1, 100, d.unhealthy_zone_percent);
        let pool = field(&raw.max_unhealthy_percent, "max_unhealthy_percent", 0, 100, d.max_unhealthy_percent);
        let replace = match raw.replace_not_ready_after_seconds.as_ref() {
            Some(v) => Some(self.int_in(v, "health.replace_not_ready_after_seconds", 30, 86_400).and_then(|n| u32::try_from(n).ok())),
            None => Some(None),
        };
        Some(Health { node_grace_seconds: grace?, eviction_seconds: eviction?, unhealthy_zone_percent: zone?, replace_not_ready_after_seconds: replace?, max_unhealthy_percent: pool? })
    }

    /// An integer within `lo..=hi`, or a problem saying which bound it broke.
    fn int_in(&mut self, value: &Spanned<i64>, field: &str, lo: i64, hi: i64) -> Option<i64> {
        let v = *value.get_ref();
        if v < lo {
            self.problems
                .at(value, field, format!("must be at least {lo}, got {v}"));
            None
        } else if v > hi {
            self.problems
                .at(value, field, format!("must be at most {hi}, got {v}"));
            None
        } else {
            Some(v)
        }
    }

    fn masters(&mut self, table: &Spanned<RawMasters>) -> Option<NodePool> {
        let header = table.span();
        let raw = table.get_ref();
        let count = self
            .require(
                raw.count.as_ref(),
                &header,
                "masters.count",
                "add count = 1 (or 3 for high availability) to [masters]",
            )
            .and_then(|count| {
                let v = *count.get_ref();
                if v == 1 || v == 3 {
                    u32::try_from(v).ok()
                } else {
                    self.problems.at(
                        count,
                        "masters.count",
                        format!(
                            "must be 1 or 3, got {v} (3 keeps a quorum when one master is lost)"
                        ),
                    );
                    None
                }
            });
        let machine = self.machine(
            "masters",
            "[masters]",
            &header,
            raw.instance_type.as_ref(),
            raw.image.as_ref(),
            raw.disk_gb.as_ref(),
            raw.labels.as_ref(),
        );
        let (instance_type, image, disk_gb, labels) = machine?;
        Some(NodePool {
            name: PoolName::masters(),
            role: Role::Master,
            count: count?,
            instance_type,
            image,
            disk_gb,
            labels,
        })
    }

    fn workers(&mut self, list: &Spanned<Vec<Spanned<RawWorkerPool>>>) -> Option<Vec<NodePool>> {
        if list.get_ref().is_empty() {
            self.problems.at(
                list,
                "workers",
                "must have at least one pool; add a [[workers]] table with name, count, instance_type and image",
            );
            return None;
        }
        let mut pools = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for (i, pool) in list.get_ref().iter().enumerate() {
            match self.worker_pool(i, pool, &mut names) {
                Some(pool) => pools.push(pool),
                None => ok = false,
            }
        }
        ok.then_some(pools)
    }

    fn worker_pool(
        &mut self,
        i: usize,
        table: &Spanned<RawWorkerPool>,
        names: &mut HashMap<String, usize>,
    ) -> Option<NodePool> {
        let header = table.span();
        let raw = table.get_ref();
        let prefix = format!("workers[{i}]");
        let name_field = format!("{prefix}.name");
        let name = self
            .require(raw.name.as_ref(), &header, &name_field, "add e.g. name = \"default\" to this [[workers]] pool")
            .and_then(|name| {
                let parsed = self.checked(name, &name_field, PoolName::parse)?;
                if let Some(first) = names.get(parsed.as_str()) {
                    self.problems.at(
                        name,
                        &name_field,
                        format!("{:?} is already the name of workers[{first}]; pool names must be unique", parsed.as_str()),
                    );
                    return None;
                }
                names.insert(parsed.as_str().to_owned(), i);
                Some(parsed)
            });
        let count_field = format!("{prefix}.count");
        let count = self
            .require(
                raw.count.as_ref(),
                &header,
                &count_field,
                "add e.g. count = 2 to this [[workers]] pool",
            )
            .and_then(|count| self.int_in(count, &count_field, 0, MAX_WORKERS))
            .and_then(|count| u32::try_from(count).ok());
        let machine = self.machine(
            &prefix,
            "this [[workers]] pool",
            &header,
            raw.instance_type.as_ref(),
            raw.image.as_ref(),
            raw.disk_gb.as_ref(),
            raw.labels.as_ref(),
        );
        let (instance_type, image, disk_gb, labels) = machine?;
        Some(NodePool {
            name: name?,
            role: Role::Worker,
            count: count?,
            instance_type,
            image,
            disk_gb,
            labels,
        })
    }

    /// The fields masters and worker pools share.
    #[allow(clippy::too_many_arguments)]
    fn machine(
        &mut self,
        prefix: &str,
        table_name: &str,
        header: &Range<usize>,
        instance_type: Option<&SString>,
        image: Option<&Spanned<RawImage>>,
        disk_gb: Option<&Spanned<i64>>,
        labels: Option<&RawStringMap>,
    ) -> Option<(String, ImageRef, u32, BTreeMap<String, String>)> {
        let type_field = format!("{prefix}.instance_type");
        let instance_type = self
            .require(
                instance_type,
                header,
                &type_field,
                &format!("add e.g. instance_type = \"t3.medium\" to {table_name}"),
            )
            .and_then(|t| self.checked(t, &type_field, check_instance_type));
        let image_field = format!("{prefix}.image");
        let image = self
            .require(
                image,
                header,
                &image_field,
                &format!("add e.g. image = {{ name = \"debian-12-amd64-*\" }} to {table_name}"),
            )
            .and_then(|image| self.image(image, &image_field));
        let disk_field = format!("{prefix}.disk_gb");
        let disk_gb = match disk_gb {
            Some(disk) => self
                .int_in(disk, &disk_field, 8, 16384)
                .and_then(|d| u32::try_from(d).ok()),
            None => Some(DEFAULT_DISK_GB),
        };
        let labels = match labels {
            Some(labels) => self.labels(labels, &format!("{prefix}.labels")),
            None => Some(BTreeMap::new()),
        };
        Some((instance_type?, image?, disk_gb?, labels?))
    }

    fn image(&mut self, image: &Spanned<RawImage>, field: &str) -> Option<ImageRef> {
        match image.get_ref() {
            RawImage::Id(id) => {
                if is_ami_id(id) {
                    Some(ImageRef::Id(id.clone()))
                } else {
                    self.problems.at(
                        image,
                        field,
                        format!(
                            "{id:?} is not an AMI id; expected \"ami-\" and 8 to 17 hex digits, or a name filter like {{ name = \"debian-12-amd64-*\" }}"
                        ),
                    );
                    None
                }
            }
            RawImage::Filter {
                name,
                owner,
                unknown,
            } => {
                let mut ok = true;
                for key in unknown {
                    self.problems.at(
                        key,
                        format!("{field}.{}", key.get_ref()),
                        format!(
                            "unknown field `{}`, expected `name` or `owner`",
                            key.get_ref()
                        ),
                    );
                    ok = false;
                }
                let name_field = format!("{field}.name");
                let pattern = match name {
                    Some(name) => self.checked(name, &name_field, check_image_name),
                    None => {
                        self.problems.at(
                            image,
                            name_field,
                            "is required; add e.g. name = \"debian-12-amd64-*\" to the image table",
                        );
                        None
                    }
                };
                let owner = match owner {
                    Some(owner) => {
                        Some(self.checked(owner, &format!("{field}.owner"), check_image_owner)?)
                    }
                    None => None,
                };
                let pattern = pattern?;
                ok.then_some(ImageRef::Name { pattern, owner })
            }
        }
    }

    fn labels(&mut self, labels: &RawStringMap, field: &str) -> Option<BTreeMap<String, String>> {
        let mut ok = true;
        for (key, value) in labels.get_ref() {
            if let Err(message) = check_label_key(key.get_ref()) {
                self.problems.at(key, field, message);
                ok = false;
            }
            if let Err(message) = check_label_value(value.get_ref()) {
                self.problems.at(
                    value,
                    field,
                    format!("value of {:?} {message}", key.get_ref()),
                );
                ok = false;
            }
        }
        ok.then(|| plain_map(labels))
    }
}

fn plain_map(map: &RawStringMap) -> BTreeMap<String, String> {
    map.get_ref()
        .iter()
        .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
        .collect()
}

/// Parses "a.b.c.d/n" written as a network address (no host bits set).
fn parse_cidr(text: &str) -> Result<Ipv4Net, String> {
    match Ipv4Net::from_str(text) {
        Ok(net) if net.addr() == net.network() => Ok(net),
        Ok(net) => Err(format!(
            "{text:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        )),
        Err(_) if Ipv4Addr::from_str(text).is_ok() => Err(format!(
            "{text:?} has no prefix length; did you mean \"{text}/32\"?"
        )),
        Err(_) if text.contains(':') => Err(format!(
            "{text:?} is IPv6; only IPv4 CIDR blocks are supported"
        )),
        Err(_) => Err(format!(
            "{text:?} is not an IPv4 CIDR block like \"10.42.0.0/16\""
        )),
    }
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// `^ami-[0-9a-f]{8,17}$`
fn is_ami_id(id: &str) -> bool {
    id.strip_prefix("ami-").is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `^[a-z][a-z0-9-]*\.[a-z0-9]+$`
fn check_instance_type(text: &str) -> Result<String, String> {
    let shaped = text.split_once('.').is_some_and(|(family, size)| {
        family
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && family
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !size.is_empty()
            && size
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if shaped {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an EC2 instance type; expected a family and a size like \"t3.medium\""
        ))
    }
}

/// An AMI name filter: what AWS allows in image names, plus the wildcards `*` and `?`.
fn check_image_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty; e.g. \"debian-12-amd64-*\"".to_owned());
    }
    let length = text.chars().count();
    if length > 128 {
        return Err(format!(
            "is {length} characters long, at most 128 are allowed"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_*?".contains(c);
    if let Some(bad) = text.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{text:?} contains {bad:?}; AMI names use letters, digits, spaces and ( ) [ ] . / - ' @ _, plus the wildcards * and ?"
        ));
    }
    Ok(text.to_owned())
}

/// An image owner: a 12-digit account id or one of AWS's owner aliases.
fn check_image_owner(text: &str) -> Result<String, String> {
    let account = text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit());
    if account || ["self", "amazon", "aws-marketplace"].contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an image owner; expected a 12-digit account id like \"136693071363\", or \"self\", \"amazon\" or \"aws-marketplace\""
        ))
    }
}

/// A unix login name: `^[a-z_][a-z0-9_-]{0,31}$`.
fn check_unix_user(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a unix user name; use lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters (e.g. \"admin\")"
        ))
    }
}

/// A user tag key: 1..=128 characters, not in AWS's or clusterctl's namespace.
fn check_tag_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key must not be empty".to_owned());
    }
    let length = key.chars().count();
    if length > 128 {
        return Err(format!(
            "key {key:?} is {length} characters long, at most 128 are allowed"
        ));
    }
    // AWS reserves "aws:" whatever its case.
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!(
            "key {key:?} starts with \"aws:\", which AWS reserves"
        ));
    }
    if key.starts_with("clusterctl:") {
        return Err(format!(
            "key {key:?} starts with \"clusterctl:\", which clusterctl reserves for its own tags"
        ));
    }
    Ok(())
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain of at most 253 characters.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !subdomain {
            return Err(format!(
                "key {key:?} has prefix {prefix:?}, which is not a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters), e.g. \"example.com/tier\""
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("key {key:?} has an empty name"));
    }
    check_label_name(name).map_err(|why| format!("key {key:?} {why}"))
}

/// A Kubernetes label value: empty, or a label name.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_label_name(value).map_err(|why| format!("{value:?} {why}"))
}

/// At most 63 of `[A-Za-z0-9._-]`, starting and ending with a letter or digit.
fn check_label_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if length > 63 {
        return Err(format!(
            "is {length} characters long, at most 63 are allowed"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {bad:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().next_back()) {
        return Err("must start and end with a letter or digit".to_owned());
    }
    Ok(())
}

/// The private key's path: `~` expanded, relative paths taken from the spec file's folder.
fn resolve_key_path(
    text: &str,
    spec_folder: &Path,
    home: Option<&Path>,
) -> Result<PathBuf, String> {
    let expanded = if text == "~" || text.starts_with("~/") {
        let home = home.ok_or_else(|| {
            format!("{text:?} starts with '~' but HOME is not set; give the full path")
        })?;
        let rest = text.trim_start_matches('~').trim_start_matches('/');
        home.join(rest)
    } else {
        PathBuf::from(text)
    };
    Ok(if expanded.is_absolute() {
        expanded
    } else {
        spec_folder.join(expanded)
    })
}

/// Whether `path` is a file that can be opened for reading; the reason when not.
fn readable_file(path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|e| io_reason(&e))?;
    if !metadata.is_file() {
        return Err("not a file".to_owned());
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| io_reason(&e))
}

/// The OS error's own words, lowercase, without the "(os error N)" suffix.
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = error.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            text.to_lowercase()
        }
    }
}

/// Whether `pem` is exactly one certificate whose key is RSA (what AWS signs identities with).
fn rsa_certificate(pem: &str) -> Result<(), String> {
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).map_err(|_| "not a PEM certificate".to_string())?;
    if block.label != "CERTIFICATE" || !rest.iter().all(u8::is_ascii_whitespace) {
        return Err("exactly one -----BEGIN CERTIFICATE----- block is expected".into());
    }
    let cert = block.parse_x509().map_err(|e| format!("the certificate does not parse: {e}"))?;
    match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => Ok(()),
        _ => Err("its key is not RSA".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_must_be_network_addresses() {
        assert!(parse_cidr("10.42.0.0/16").is_ok());
        assert!(
            parse_cidr("10.42.0.1/16")
                .unwrap_err()
                .contains("did you mean \"10.42.0.0/16\"")
        );
        assert!(
            parse_cidr("10.42.0.1")
                .unwrap_err()
                .contains("\"10.42.0.1/32\"")
        );
        assert!(parse_cidr("::/0").unwrap_err().contains("IPv6"));
        assert!(parse_cidr("banana").is_err());
    }

    #[test]
    fn label_keys_and_values_are_kubernetes_shaped() {
        assert!(check_label_key("tier").is_ok());
        assert!(check_label_key("app.kubernetes.io/name").is_ok());
        assert!(check_label_key("node-role.kubernetes.io/worker").is_ok());
        assert!(check_label_key("-tier").is_err());
        assert!(check_label_key("Example.com/tier").is_err());
        assert!(check_label_key("a/").is_err());
        assert!(check_label_key(&"x".repeat(64)).is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("web-1").is_ok());
        assert!(check_label_value("web!").is_err());
    }

    #[test]
    fn instance_types_and_ami_ids_have_their_aws_shape() {
        assert!(check_instance_type("t3.medium").is_ok());
        assert!(check_instance_type("m7g-flex.2xlarge").is_ok());
        assert!(check_instance_type("t3medium").is_err());
        assert!(check_instance_type("T3.medium").is_err());
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(is_ami_id("ami-12345678"));
        assert!(!is_ami_id("ami-1234567"));
        assert!(!is_ami_id("ami-0123456789ABCDEF0"));
    }

    #[test]
    fn tag_keys_avoid_reserved_prefixes() {
        assert!(check_tag_key("team").is_ok());
        assert!(check_tag_key("AWS:foo").is_err());
        assert!(check_tag_key("clusterctl:cluster").is_err());
        assert!(check_tag_key("").is_err());
    }

    #[test]
    fn key_paths_are_resolved_against_the_spec_folder() {
        let folder = Path::new("/specs");
        let home = Some(Path::new("/home/ops"));
        assert_eq!(
            resolve_key_path("keys/id", folder, home).unwrap(),
            PathBuf::from("/specs/keys/id")
        );
        assert_eq!(
            resolve_key_path("/abs/id", folder, home).unwrap(),
            PathBuf::from("/abs/id")
        );
        assert_eq!(
            resolve_key_path("~/.ssh/id", folder, home).unwrap(),
            PathBuf::from("/home/ops/.ssh/id")
        );
        assert!(
            resolve_key_path("~/.ssh/id", folder, None)
                .unwrap_err()
                .contains("HOME is not set")
        );
        // "~user" is not expanded: it is a relative path like any other.
        assert_eq!(
            resolve_key_path("~ops/id", folder, home).unwrap(),
            PathBuf::from("/specs/~ops/id")
        );
    }
}

