//! The [`Cloud`] implementation on AWS: aws-sdk-ec2, aws-sdk-elasticloadbalancingv2 and aws-sdk-iam.
//!
//! Configuration comes from the standard aws-config chain (environment,
//! profiles, SSO, instance metadata) and the standard `AWS_ENDPOINT_URL`, so the
//! same code talks to AWS or to LocalStack. The SDK's own retries are turned
//! off: [`super::Resilient`] owns the retry policy. Every SDK error is turned
//! into a [`CloudError`] here; no SDK type leaves this file. Every call, the
//! credential providers' included, goes through [`https_client`].

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::SharedHttpClient;
use aws_sdk_ec2 as ec2;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2 as elb;
use aws_sdk_iam as iam;
use ipnet::Ipv4Net;

use super::*;

/// Where to find AWS: the region and profile given on the command line, if any.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// An endpoint other than AWS's (what `AWS_ENDPOINT_URL` says for the operator; a master's
    /// config says it for the cloud controller).
    pub endpoint_url: Option<String>,
    /// Fixed credentials (access key id, secret) instead of the standard chain: only ever the
    /// LocalStack harness's `test` credentials, which a master gets through its config.
    pub static_credentials: Option<(String, String)>,
}

/// The cloud on AWS (or anything that speaks its API at `AWS_ENDPOINT_URL`).
pub struct AwsCloud {
    ec2: ec2::Client,
    elb: elb::Client,
    /// IAM is global; the endpoint override applies to it as to the others (LocalStack serves all).
    iam: iam::Client,
    region: String,
}

impl AwsCloud {
    /// Loads configuration from the standard chain; `default_region` is used when nothing else names one.
    pub async fn connect(options: &AwsOptions, default_region: &str) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .http_client(https_client());
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &options.static_credentials {
            loader = loader.credentials_provider(ec2::config::Credentials::new(id, secret, None, None, "clusterctl-node-config"));
        }
        let region = options.region.clone().unwrap_or_else(|| default_region.to_string());
        loader = loader.region(Region::new(region.clone()));
        let config = loader.load().await;
        AwsCloud { ec2: ec2::Client::new(&config), elb: elb::Client::new(&config), iam: iam::Client::new(&config), region }
    }

    /// The region this client talks to.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// The HTTPS client of AWS calls: hyper 1 and rustls on ring, the stack the rest of clusterctl
/// uses, trusting the system's roots (or `SSL_CERT_FILE`). The SDK's default client would be the
/// same stack on a second crypto provider (aws-lc), which its default features no longer build:
/// an SDK configuration without this client has none, and the SDK panics at its first call.
pub fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// EC2 does not see an instance profile made seconds ago yet (IAM is eventually consistent) and
/// answers `InvalidParameterValue` "Invalid IAM Instance Profile name": a not-found, which the
/// retry layer waits out, not a bad request.
fn profile_not_seen_yet(mut e: CloudError) -> CloudError {
    if e.code.as_deref() == Some("InvalidParameterValue") && e.message.to_ascii_lowercase().contains("iam instance profile") {
        e.kind = ErrorKind::NotFound;
    }
    e
}

/// Turns an SDK error into a [`CloudError`] saying what was being done.
fn classify<E, R>(action: impl Into<String>, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let action = action.into();
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_string);
            let message = e.message().unwrap_or_default().to_string();
            let kind = match code.as_deref() {
                Some(c) => CloudError::kind_of_code(c),
                None => ErrorKind::Other,
            };
            CloudError::new(action, kind, code, message)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CloudError::new(action, ErrorKind::Transport, None, DisplayErrorContext(&err).to_string())
        }
        _ => CloudError::new(action, ErrorKind::Other, None, DisplayErrorContext(&err).to_string()),
    }
}

fn ec2_filters(tags: &Tags) -> Vec<ec2::types::Filter> {
    tags.iter().map(|(k, v)| ec2::types::Filter::builder().name(format!("tag:{k}")).values(v).build()).collect()
}

fn ec2_tag_spec(resource: ec2::types::ResourceType, tags: &Tags) -> ec2::types::TagSpecification {
    ec2::types::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags.iter().map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build()).collect()))
        .build()
}

fn ec2_tags(tags: &[ec2::types::Tag]) -> Tags {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn elb_tags(tags: &Tags) -> Vec<elb::types::Tag> {
    tags.iter().map(|(k, v)| elb::types::Tag::builder().key(k).value(v).build()).collect()
}

fn iam_tags(tags: &Tags) -> Vec<iam::types::Tag> {
    // Key and value are always set, so the builder cannot fail.
    tags.iter().filter_map(|(k, v)| iam::types::Tag::builder().key(k).value(v).build().ok()).collect()
}

fn from_iam_tags(tags: &[iam::types::Tag]) -> Tags {
    tags.iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

/// IAM answers policy documents URL-encoded (RFC 3986); LocalStack answers them as given. Both
/// come out as the JSON text.
fn decode_policy(document: &str) -> String {
    if document.trim_start().starts_with('{') {
        return document.to_string();
    }
    let bytes = document.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn convert_role(r: &iam::types::Role) -> Role {
    Role {
        name: r.role_name().to_string(),
        arn: r.arn().to_string(),
        path: r.path().to_string(),
        trust_policy: r.assume_role_policy_document().map(decode_policy).unwrap_or_default(),
        tags: from_iam_tags(r.tags()),
    }
}

fn convert_profile(p: &iam::types::InstanceProfile) -> InstanceProfile {
    InstanceProfile {
        name: p.instance_profile_name().to_string(),
        arn: p.arn().to_string(),
        path: p.path().to_string(),
        roles: p.roles().iter().map(|r| r.role_name().to_string()).collect(),
        tags: from_iam_tags(p.tags()),
    }
}

/// Not-found answers of IAM reads become `None`.
fn absent_is_none<T>(result: CloudResult<T>) -> CloudResult<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse_net(action: &str, s: Option<&str>) -> CloudResult<Ipv4Net> {
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| CloudError::new(action, ErrorKind::Other, None, format!("the answer has no valid IPv4 CIDR ({s:?})")))
}

fn parse_ip(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.parse().ok())
}

fn missing(action: &str, what: &str) -> CloudError {
    CloudError::new(action, ErrorKind::Other, None, format!("the answer has no {what}"))
}

fn convert_instance(i: &ec2::types::Instance) -> Option<Instance> {
    use ec2::types::InstanceStateName as S;
    let state = match i.state()?.name()? {
        S::Pending => InstanceState::Pending,
        S::Running => InstanceState::Running,
        S::ShuttingDown => InstanceState::ShuttingDown,
        S::Terminated => InstanceState::Terminated,
        S::Stopping => InstanceState::Stopping,
        S::Stopped => InstanceState::Stopped,
        _ => InstanceState::Pending,
    };
    Some(Instance {
        id: i.instance_id()?.to_string(),
        state,
        instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        subnet_id: i.subnet_id().map(str::to_string),
        private_ip: parse_ip(i.private_ip_address()),
        public_ip: parse_ip(i.public_ip_address()),
        instance_profile: i.iam_instance_profile().and_then(|p| p.arn()).map(str::to_string),
        source_dest_check: i.source_dest_check().unwrap_or(true),
        tags: ec2_tags(i.tags()),
    })
}

fn ip_permission(rule: &IngressRule) -> ec2::types::IpPermission {
    let (proto, from, to) = match rule.protocol {
        Protocol::Tcp => ("tcp", rule.from_port as i32, rule.to_port as i32),
        Protocol::Udp => ("udp", rule.from_port as i32, rule.to_port as i32),
        Protocol::Icmp => ("icmp", -1, -1),
        Protocol::All => ("-1", -1, -1),
    };
    let mut b = ec2::types::IpPermission::builder().ip_protocol(proto);
    b = match &rule.source {
        RuleSource::Cidr(c) => b.ip_ranges(ec2::types::IpRange::builder().cidr_ip(c.to_string()).build()),
        RuleSource::Group(id) => b.user_id_group_pairs(ec2::types::UserIdGroupPair::builder().group_id(id).build()),
    };
    if rule.protocol != Protocol::All {
        b = b.from_port(from).to_port(to);
    }
    b.build()
}

fn ingress_rules(perms: &[ec2::types::IpPermission]) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for p in perms {
        let protocol = match p.ip_protocol() {
            Some("tcp") | Some("6") => Protocol::Tcp,
            Some("udp") | Some("17") => Protocol::Udp,
            Some("icmp") | Some("1") => Protocol::Icmp,
            Some("-1") | Some("all") => Protocol::All,
            _ => continue,
        };
        let (from_port, to_port) = match protocol {
            Protocol::All | Protocol::Icmp => (0, 0),
            _ => (p.from_port().unwrap_or(0).clamp(0, 65535) as u16, p.to_port().unwrap_or(0).clamp(0, 65535) as u16),
        };
        let cidrs = p.ip_ranges().iter().filter_map(|r| r.cidr_ip().and_then(|c| c.parse().ok())).map(RuleSource::Cidr);
        let groups = p.user_id_group_pairs().iter().filter_map(|g| g.group_id()).map(|g| RuleSource::Group(g.to_string()));
        rules.extend(cidrs.chain(groups).map(|source| IngressRule { protocol, from_port, to_port, source }));
    }
    rules
}

impl AwsCloud {
    /// Tags of ELBv2 resources, 20 ARNs per call.
    async fn elb_tags_of(&self, arns: &[String]) -> CloudResult<std::collections::HashMap<String, Tags>> {
        let mut out = std::collections::HashMap::new();
        for chunk in arns.chunks(20) {
            let resp = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| classify("reading load balancer tags", e))?;
            for d in resp.tag_descriptions() {
                if let Some(arn) = d.resource_arn() {
                    let tags = d.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect();
                    out.insert(arn.to_string(), tags);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    async fn vpcs(&self, tags: &Tags) -> CloudResult<Vec<Vpc>> {
        let action = "listing VPCs";
        let pages = self.ec2.describe_vpcs().set_filters(Some(ec2_filters(tags))).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let mut out = Vec::new();
        for v in pages.iter().flat_map(|p| p.vpcs()) {
            out.push(Vpc { id: v.vpc_id().ok_or_else(|| missing(action, "VPC id"))?.to_string(), cidr: parse_net(action, v.cidr_block())?, tags: ec2_tags(v.tags()) });
        }
        Ok(out)
    }

    async fn subnets(&self, tags: &Tags) -> CloudResult<Vec<Subnet>> {
        let action = "listing subnets";
        let pages = self.ec2.describe_subnets().set_filters(Some(ec2_filters(tags))).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let mut out = Vec::new();
        for s in pages.iter().flat_map(|p| p.subnets()) {
            out.push(Subnet {
                id: s.subnet_id().ok_or_else(|| missing(action, "subnet id"))?.to_string(),
                vpc_id: s.vpc_id().unwrap_or_default().to_string(),
                zone: s.availability_zone().unwrap_or_default().to_string(),
                cidr: parse_net(action, s.cidr_block())?,
                map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
                tags: ec2_tags(s.tags()),
            });
        }
        Ok(out)
    }

    async fn internet_gateways(&self, tags: &Tags) -> CloudResult<Vec<InternetGateway>> {
        let action = "listing internet gateways";
        let pages = self.ec2.describe_internet_gateways().set_filters(Some(ec2_filters(tags))).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let mut out = Vec::new();
        for g in pages.iter().flat_map(|p| p.internet_gateways()) {
            out.push(InternetGateway {
                id: g.internet_gateway_id().ok_or_else(|| missing(action, "gateway id"))?.to_string(),
                attached_vpcs: g.attachments().iter().filter_map(|a| a.vpc_id().map(str::to_string)).collect(),
                tags: ec2_tags(g.tags()),
            });
        }
        Ok(out)
    }

    async fn route_tables(&self, tags: &Tags) -> CloudResult<Vec<RouteTable>> {
        let action = "listing route tables";
        let pages = self.ec2.describe_route_tables().set_filters(Some(ec2_filters(tags))).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let mut out = Vec::new();
        for r in pages.iter().flat_map(|p| p.route_tables()) {
            out.push(RouteTable {
                id: r.route_table_id().ok_or_else(|| missing(action, "route table id"))?.to_string(),
                vpc_id: r.vpc_id().unwrap_or_default().to_string(),
                routes: r
                    .routes()
                    .iter()
                    .filter_map(|rt| {
                        Some(Route {
                            destination: rt.destination_cidr_block()?.parse().ok()?,
                            gateway_id: rt.gateway_id().map(str::to_string),
                            instance_id: rt.instance_id().map(str::to_string),
                            blackhole: rt.state() == Some(&ec2::types::RouteState::Blackhole),
                        })
                    })
                    .collect(),
                associations: r
                    .associations()
                    .iter()
                    .filter_map(|a| {
                        Some(RouteTableAssociation {
                            id: a.route_table_association_id()?.to_string(),
                            subnet_id: a.subnet_id().map(str::to_string),
                            main: a.main().unwrap_or(false),
                        })
                    })
                    .collect(),
                tags: ec2_tags(r.tags()),
            });
        }
        Ok(out)
    }

    async fn security_groups(&self, tags: &Tags) -> CloudResult<Vec<SecurityGroup>> {
        let action = "listing security groups";
        let pages = self.ec2.describe_security_groups().set_filters(Some(ec2_filters(tags))).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let mut out = Vec::new();
        for g in pages.iter().flat_map(|p| p.security_groups()) {
            out.push(SecurityGroup {
                id: g.group_id().ok_or_else(|| missing(action, "group id"))?.to_string(),
                vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                ingress: ingress_rules(g.ip_permissions()),
                tags: ec2_tags(g.tags()),
            });
        }
        Ok(out)
    }

    async fn key_pairs(&self, tags: &Tags) -> CloudResult<Vec<KeyPair>> {
        let action = "listing key pairs";
        let resp = self.ec2.describe_key_pairs().set_filters(Some(ec2_filters(tags))).send().await.map_err(|e| classify(action, e))?;
        Ok(resp
            .key_pairs()
            .iter()
            .filter_map(|k| Some(KeyPair { name: k.key_name()?.to_string(), id: k.key_pair_id().map(str::to_string), tags: ec2_tags(k.tags()) }))
            // Filters are a request, not a promise: keep only what really matches.
            .filter(|k| tags_match(&k.tags, tags))
            .collect())
    }

    async fn instances(&self, tags: &Tags) -> CloudResult<Vec<Instance>> {
        let action = "listing instances";
        let states = ec2::types::Filter::builder()
            .name("instance-state-name")
            .set_values(Some(["pending", "running", "shutting-down", "stopping", "stopped"].map(String::from).to_vec()))
            .build();
        let mut filters = ec2_filters(tags);
        filters.push(states);
        let pages = self.ec2.describe_instances().set_filters(Some(filters)).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
            .filter_map(convert_instance)
            .filter(|i| i.state != InstanceState::Terminated && tags_match(&i.tags, tags))
            .collect())
    }

    async fn instances_by_id(&self, ids: &[String]) -> CloudResult<Vec<Instance>> {
        let action = format!("describing instances {}", ids.join(", "));
        let pages = self.ec2.describe_instances().set_instance_ids(Some(ids.to_vec())).into_paginator().send().try_collect().await.map_err(|e| classify(action.clone(), e))?;
        let found: Vec<Instance> = pages.iter().flat_map(|p| p.reservations()).flat_map(|r| r.instances()).filter_map(convert_instance).collect();
        if let Some(id) = ids.iter().find(|id| !found.iter().any(|i| &i.id == *id)) {
            return Err(CloudError::new(format!("describing instance {id}"), ErrorKind::NotFound, Some("InvalidInstanceID.NotFound".into()), "not in the answer"));
        }
        Ok(found)
    }

    async fn load_balancers(&self, tags: &Tags) -> CloudResult<Vec<LoadBalancer>> {
        let action = "listing load balancers";
        let pages = self.elb.describe_load_balancers().into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let all: Vec<_> = pages.iter().flat_map(|p| p.load_balancers()).cloned().collect();
        let arns: Vec<String> = all.iter().filter_map(|l| l.load_balancer_arn().map(str::to_string)).collect();
        let tag_map = self.elb_tags_of(&arns).await?;
        Ok(all
            .iter()
            .filter_map(|l| {
                let arn = l.load_balancer_arn()?.to_string();
                let tags = tag_map.get(&arn).cloned().unwrap_or_default();
                Some(LoadBalancer {
                    name: l.load_balancer_name().unwrap_or_default().to_string(),
                    dns_name: l.dns_name().unwrap_or_default().to_string(),
                    vpc_id: l.vpc_id().map(str::to_string),
                    subnet_ids: l.availability_zones().iter().filter_map(|z| z.subnet_id().map(str::to_string)).collect(),
                    security_group_ids: l.security_groups().to_vec(),
                    arn,
                    tags,
                })
            })
            .filter(|l| tags_match(&l.tags, tags))
            .collect())
    }

    async fn target_groups(&self, tags: &Tags) -> CloudResult<Vec<TargetGroup>> {
        let action = "listing target groups";
        let pages = self.elb.describe_target_groups().into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        let all: Vec<_> = pages.iter().flat_map(|p| p.target_groups()).cloned().collect();
        let arns: Vec<String> = all.iter().filter_map(|t| t.target_group_arn().map(str::to_string)).collect();
        let tag_map = self.elb_tags_of(&arns).await?;
        Ok(all
            .iter()
            .filter_map(|t| {
                let arn = t.target_group_arn()?.to_string();
                Some(TargetGroup {
                    name: t.target_group_name().unwrap_or_default().to_string(),
                    port: t.port().unwrap_or(0).clamp(0, 65535) as u16,
                    vpc_id: t.vpc_id().map(str::to_string),
                    tags: tag_map.get(&arn).cloned().unwrap_or_default(),
                    arn,
                })
            })
            .filter(|t| tags_match(&t.tags, tags))
            .collect())
    }

    async fn listeners(&self, load_balancer_arn: &str) -> CloudResult<Vec<Listener>> {
        let action = format!("listing listeners of {load_balancer_arn}");
        let pages = self.elb.describe_listeners().load_balancer_arn(load_balancer_arn).into_paginator().send().try_collect().await.map_err(|e| classify(action, e))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.listeners())
            .filter_map(|l| {
                Some(Listener {
                    arn: l.listener_arn()?.to_string(),
                    load_balancer_arn: load_balancer_arn.to_string(),
                    port: l.port().unwrap_or(0).clamp(0, 65535) as u16,
                    target_group_arn: l.default_actions().iter().find_map(|a| a.target_group_arn().map(str::to_string)),
                })
            })
            .collect())
    }

    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<TargetHealth>> {
        let action = format!("reading target health of {target_group_arn}");
        let resp = self.elb.describe_target_health().target_group_arn(target_group_arn).send().await.map_err(|e| classify(action, e))?;
        Ok(resp
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let target = d.target()?;
                Some(TargetHealth {
                    instance_id: target.id()?.to_string(),
                    port: target.port().unwrap_or(0).clamp(0, 65535) as u16,
                    state: d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into()),
                })
            })
            .collect())
    }

    async fn find_image(&self, pattern: &str, owner: Option<&str>) -> CloudResult<Option<Image>> {
        let action = format!("looking up images named {pattern}");
        let mut req = self.ec2.describe_images().filters(ec2::types::Filter::builder().name("name").values(pattern).build());
        if let Some(owner) = owner {
            req = req.owners(owner);
        }
        let resp = req.send().await.map_err(|e| classify(action, e))?;
        let newest = resp.images().iter().filter(|i| i.image_id().is_some()).max_by(|a, b| {
            (a.creation_date().unwrap_or_default(), a.name()).cmp(&(b.creation_date().unwrap_or_default(), b.name()))
        });
        Ok(newest.map(|i| Image {
            id: i.image_id().unwrap_or_default().to_string(),
            name: i.name().map(str::to_string),
            root_device_name: i.root_device_name().map(str::to_string),
        }))
    }

    async fn image(&self, id: &str) -> CloudResult<Image> {
        let action = format!("looking up image {id}");
        let resp = self.ec2.describe_images().image_ids(id).send().await.map_err(|e| classify(action.clone(), e))?;
        let i = resp.images().first().ok_or_else(|| CloudError::new(action, ErrorKind::NotFound, Some("InvalidAMIID.NotFound".into()), "no such image"))?;
        Ok(Image { id: id.to_string(), name: i.name().map(str::to_string), root_device_name: i.root_device_name().map(str::to_string) })
    }

    async fn instance_statuses(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
        let action = format!("reading the status checks of {}", ids.join(", "));
        let pages = self
            .ec2
            .describe_instance_status()
            .set_instance_ids(Some(ids.to_vec()))
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let check = |s: Option<&ec2::types::InstanceStatusSummary>| s.and_then(|s| s.status()).map(|s| s.as_str().to_string()).unwrap_or_default();
        Ok(pages
            .iter()
            .flat_map(|p| p.instance_statuses())
            .filter_map(|st| {
                Some(InstanceStatus {
                    instance_id: st.instance_id()?.to_string(),
                    instance_check: check(st.instance_status()),
                    system_check: check(st.system_status()),
                })
            })
            .collect())
    }

    async fn console_output(&self, instance_id: &str) -> CloudResult<Option<String>> {
        use base64::Engine;
        let action = format!("reading the console of {instance_id}");
        let resp = self.ec2.get_console_output().instance_id(instance_id).send().await.map_err(|e| classify(action, e))?;
        // EC2 sends the console base64-encoded; fall back to the text itself if it is not.
        Ok(resp.output().map(|o| {
            base64::engine::general_purpose::STANDARD
                .decode(o.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| o.to_string())
        }))
    }

    async fn role(&self, name: &str) -> CloudResult<Option<Role>> {
        let action = format!("reading role {name}");
        let result = self.iam.get_role().role_name(name).send().await.map_err(|e| classify(action.clone(), e));
        absent_is_none(result)?.map(|r| r.role().map(convert_role).ok_or_else(|| missing(&action, "role"))).transpose()
    }

    async fn role_policy(&self, role: &str, policy_name: &str) -> CloudResult<Option<String>> {
        let action = format!("reading policy {policy_name} of role {role}");
        let result = self.iam.get_role_policy().role_name(role).policy_name(policy_name).send().await.map_err(|e| classify(action, e));
        Ok(absent_is_none(result)?.map(|r| decode_policy(r.policy_document())))
    }

    async fn instance_profile(&self, name: &str) -> CloudResult<Option<InstanceProfile>> {
        let action = format!("reading instance profile {name}");
        let result = self.iam.get_instance_profile().instance_profile_name(name).send().await.map_err(|e| classify(action.clone(), e));
        absent_is_none(result)?.map(|r| r.instance_profile().map(convert_profile).ok_or_else(|| missing(&action, "instance profile"))).transpose()
    }

    async fn create_vpc(&self, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Vpc> {
        let action = format!("creating VPC {cidr}");
        let resp = self
            .ec2
            .create_vpc()
            .cidr_block(cidr.to_string())
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::Vpc, tags))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let id = resp.vpc().and_then(|v| v.vpc_id()).ok_or_else(|| missing(&action, "VPC id"))?;
        Ok(Vpc { id: id.to_string(), cidr, tags: tags.clone() })
    }

    async fn create_subnet(&self, vpc_id: &str, zone: &str, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Subnet> {
        let action = format!("creating subnet {cidr} in {zone}");
        let resp = self
            .ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .availability_zone(zone)
            .cidr_block(cidr.to_string())
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::Subnet, tags))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let s = resp.subnet().ok_or_else(|| missing(&action, "subnet"))?;
        Ok(Subnet {
            id: s.subnet_id().ok_or_else(|| missing(&action, "subnet id"))?.to_string(),
            vpc_id: vpc_id.to_string(),
            zone: zone.to_string(),
            cidr,
            map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
            tags: tags.clone(),
        })
    }

    async fn enable_public_ips(&self, subnet_id: &str) -> CloudResult<()> {
        self.ec2
            .modify_subnet_attribute()
            .subnet_id(subnet_id)
            .map_public_ip_on_launch(ec2::types::AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| classify(format!("enabling public addresses in subnet {subnet_id}"), e))?;
        Ok(())
    }

    async fn create_internet_gateway(&self, tags: &Tags) -> CloudResult<InternetGateway> {
        let action = "creating internet gateway";
        let resp = self
            .ec2
            .create_internet_gateway()
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::InternetGateway, tags))
            .send()
            .await
            .map_err(|e| classify(action, e))?;
        let id = resp.internet_gateway().and_then(|g| g.internet_gateway_id()).ok_or_else(|| missing(action, "gateway id"))?;
        Ok(InternetGateway { id: id.to_string(), attached_vpcs: vec![], tags: tags.clone() })
    }

    async fn attach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()> {
        self.ec2
            .attach_internet_gateway()
            .internet_gateway_id(gateway_id)
            .vpc_id(vpc_id)
            .send()
            .await
            .map_err(|e| classify(format!("attaching internet gateway {gateway_id} to {vpc_id}"), e))?;
        Ok(())
    }

    async fn create_route_table(&self, vpc_id: &str, tags: &Tags) -> CloudResult<RouteTable> {
        let action = format!("creating route table in {vpc_id}");
        let resp = self
            .ec2
            .create_route_table()
            .vpc_id(vpc_id)
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::RouteTable, tags))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let id = resp.route_table().and_then(|r| r.route_table_id()).ok_or_else(|| missing(&action, "route table id"))?;
        Ok(RouteTable { id: id.to_string(), vpc_id: vpc_id.to_string(), routes: vec![], associations: vec![], tags: tags.clone() })
    }

    async fn create_route(&self, route_table_id: &str, destination: Ipv4Net, gateway_id: &str) -> CloudResult<()> {
        self.ec2
            .create_route()
            .route_table_id(route_table_id)
            .destination_cidr_block(destination.to_string())
            .gateway_id(gateway_id)
            .send()
            .await
            .map_err(|e| classify(format!("adding route {destination} via {gateway_id} to {route_table_id}"), e))?;
        Ok(())
    }

    async fn create_instance_route(&self, route_table_id: &str, destination: Ipv4Net, instance_id: &str) -> CloudResult<()> {
        self.ec2
            .create_route()
            .route_table_id(route_table_id)
            .destination_cidr_block(destination.to_string())
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| classify(format!("adding route {destination} to instance {instance_id} in {route_table_id}"), e))?;
        Ok(())
    }

    async fn delete_route(&self, route_table_id: &str, destination: Ipv4Net) -> CloudResult<()> {
        self.ec2
            .delete_route()
            .route_table_id(route_table_id)
            .destination_cidr_block(destination.to_string())
            .send()
            .await
            .map_err(|e| classify(format!("deleting route {destination} from {route_table_id}"), e))?;
        Ok(())
    }

    async fn disable_source_dest_check(&self, instance_id: &str) -> CloudResult<()> {
        self.ec2
            .modify_instance_attribute()
            .instance_id(instance_id)
            .source_dest_check(ec2::types::AttributeBooleanValue::builder().value(false).build())
            .send()
            .await
            .map_err(|e| classify(format!("turning off the source/destination check of {instance_id}"), e))?;
        Ok(())
    }

    async fn set_instance_profile(&self, instance_id: &str, profile: &str) -> CloudResult<()> {
        let action = format!("giving instance {instance_id} the instance profile {profile}");
        let spec = ec2::types::IamInstanceProfileSpecification::builder().name(profile).build();
        let current = self
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(ec2::types::Filter::builder().name("instance-id").values(instance_id).build())
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let association = current.iam_instance_profile_associations().iter().find(|a| {
            matches!(a.state(), Some(ec2::types::IamInstanceProfileAssociationState::Associated | ec2::types::IamInstanceProfileAssociationState::Associating))
        });
        match association.and_then(|a| a.association_id()) {
            Some(id) => {
                self.ec2.replace_iam_instance_profile_association().association_id(id).iam_instance_profile(spec).send().await.map_err(|e| profile_not_seen_yet(classify(action.clone(), e)))?;
            }
            None => {
                self.ec2.associate_iam_instance_profile().instance_id(instance_id).iam_instance_profile(spec).send().await.map_err(|e| profile_not_seen_yet(classify(action.clone(), e)))?;
            }
        }
        Ok(())
    }

    async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> CloudResult<()> {
        self.ec2
            .associate_route_table()
            .route_table_id(route_table_id)
            .subnet_id(subnet_id)
            .send()
            .await
            .map_err(|e| classify(format!("associating route table {route_table_id} with subnet {subnet_id}"), e))?;
        Ok(())
    }

    async fn create_security_group(&self, vpc_id: &str, name: &str, description: &str, tags: &Tags) -> CloudResult<SecurityGroup> {
        let action = format!("creating security group {name}");
        let resp = self
            .ec2
            .create_security_group()
            .vpc_id(vpc_id)
            .group_name(name)
            .description(description)
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let id = resp.group_id().ok_or_else(|| missing(&action, "group id"))?;
        Ok(SecurityGroup { id: id.to_string(), vpc_id: vpc_id.to_string(), name: name.to_string(), ingress: vec![], tags: tags.clone() })
    }

    async fn authorize_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()> {
        self.ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(rules.iter().map(ip_permission).collect()))
            .send()
            .await
            .map_err(|e| classify(format!("allowing traffic into security group {group_id}"), e))?;
        Ok(())
    }

    async fn revoke_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()> {
        self.ec2
            .revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(rules.iter().map(ip_permission).collect()))
            .send()
            .await
            .map_err(|e| classify(format!("revoking traffic into security group {group_id}"), e))?;
        Ok(())
    }

    async fn import_key_pair(&self, name: &str, public_key: &str, tags: &Tags) -> CloudResult<KeyPair> {
        let action = format!("importing key pair {name}");
        let resp = self
            .ec2
            .import_key_pair()
            .key_name(name)
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(public_key.as_bytes()))
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(|e| classify(action, e))?;
        Ok(KeyPair { name: name.to_string(), id: resp.key_pair_id().map(str::to_string), tags: tags.clone() })
    }

    async fn run_instance(&self, request: &LaunchRequest) -> CloudResult<Instance> {
        let name = request.tags.get("Name").cloned().unwrap_or_default();
        let action = format!("launching instance {name} in {}", request.subnet_id);
        let disk = ec2::types::BlockDeviceMapping::builder()
            .device_name(request.image.root_device_name.clone().unwrap_or_else(|| "/dev/xvda".into()))
            .ebs(
                ec2::types::EbsBlockDevice::builder()
                    .volume_size(request.disk_gb as i32)
                    .volume_type(ec2::types::VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build(),
            )
            .build();
        let mut req = self
            .ec2
            .run_instances()
            .image_id(&request.image.id)
            .instance_type(ec2::types::InstanceType::from(request.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .key_name(&request.key_name)
            .subnet_id(&request.subnet_id)
            .set_security_group_ids(Some(request.security_group_ids.clone()))
            .block_device_mappings(disk)
            .client_token(&request.client_token)
            // IMDSv2 only, one hop: the node's own processes reach the metadata service (and its
            // role's credentials); a pod, one routed hop further behind its node, does not.
            .metadata_options(
                ec2::types::InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(ec2::types::InstanceMetadataEndpointState::Enabled)
                    .http_tokens(ec2::types::HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::Instance, &request.tags))
            .tag_specifications(ec2_tag_spec(ec2::types::ResourceType::Volume, &request.tags));
        if let Some(user_data) = &request.user_data {
            use base64::Engine;
            req = req.user_data(base64::engine::general_purpose::STANDARD.encode(user_data));
        }
        if let Some(profile) = &request.instance_profile {
            req = req.iam_instance_profile(ec2::types::IamInstanceProfileSpecification::builder().name(profile).build());
        }
        let resp = req.send().await.map_err(|e| profile_not_seen_yet(classify(action.clone(), e)))?;
        resp.instances().first().and_then(convert_instance).ok_or_else(|| missing(&action, "instance"))
    }

    async fn terminate_instances(&self, ids: &[String]) -> CloudResult<()> {
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| classify(format!("terminating instances {}", ids.join(", ")), e))?;
        Ok(())
    }

    async fn create_load_balancer(&self, name: &str, subnet_ids: &[String], security_group_ids: &[String], tags: &Tags) -> CloudResult<LoadBalancer> {
        let action = format!("creating load balancer {name}");
        let mut req = self
            .elb
            .create_load_balancer()
            .name(name)
            .r#type(elb::types::LoadBalancerTypeEnum::Network)
            .scheme(elb::types::LoadBalancerSchemeEnum::InternetFacing)
            .set_subnets(Some(subnet_ids.to_vec()))
            .set_tags(Some(elb_tags(tags)));
        if !security_group_ids.is_empty() {
            req = req.set_security_groups(Some(security_group_ids.to_vec()));
        }
        let resp = req.send().await.map_err(|e| classify(action.clone(), e))?;
        let l = resp.load_balancers().first().ok_or_else(|| missing(&action, "load balancer"))?;
        Ok(LoadBalancer {
            arn: l.load_balancer_arn().ok_or_else(|| missing(&action, "load balancer ARN"))?.to_string(),
            name: name.to_string(),
            dns_name: l.dns_name().unwrap_or_default().to_string(),
            vpc_id: l.vpc_id().map(str::to_string),
            subnet_ids: subnet_ids.to_vec(),
            security_group_ids: security_group_ids.to_vec(),
            tags: tags.clone(),
        })
    }

    async fn create_target_group(&self, name: &str, vpc_id: &str, port: u16, tags: &Tags) -> CloudResult<TargetGroup> {
        let action = format!("creating target group {name}");
        let resp = self
            .elb
            .create_target_group()
            .name(name)
            .protocol(elb::types::ProtocolEnum::Tcp)
            .port(port as i32)
            .vpc_id(vpc_id)
            .target_type(elb::types::TargetTypeEnum::Instance)
            .health_check_protocol(elb::types::ProtocolEnum::Tcp)
            .health_check_interval_seconds(5)
            .health_check_timeout_seconds(5)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .set_tags(Some(elb_tags(tags)))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let t = resp.target_groups().first().ok_or_else(|| missing(&action, "target group"))?;
        Ok(TargetGroup {
            arn: t.target_group_arn().ok_or_else(|| missing(&action, "target group ARN"))?.to_string(),
            name: name.to_string(),
            port,
            vpc_id: Some(vpc_id.to_string()),
            tags: tags.clone(),
        })
    }

    async fn create_listener(&self, load_balancer_arn: &str, port: u16, target_group_arn: &str, tags: &Tags) -> CloudResult<Listener> {
        let action = format!("creating listener on port {port}");
        let forward = elb::types::Action::builder().r#type(elb::types::ActionTypeEnum::Forward).target_group_arn(target_group_arn).build();
        let resp = self
            .elb
            .create_listener()
            .load_balancer_arn(load_balancer_arn)
            .protocol(elb::types::ProtocolEnum::Tcp)
            .port(port as i32)
            .default_actions(forward)
            .set_tags(Some(elb_tags(tags)))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let l = resp.listeners().first().ok_or_else(|| missing(&action, "listener"))?;
        Ok(Listener {
            arn: l.listener_arn().ok_or_else(|| missing(&action, "listener ARN"))?.to_string(),
            load_balancer_arn: load_balancer_arn.to_string(),
            port,
            target_group_arn: Some(target_group_arn.to_string()),
        })
    }

    async fn register_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()> {
        let targets = instance_ids.iter().map(|id| elb::types::TargetDescription::builder().id(id).port(port as i32).build()).collect();
        self.elb
            .register_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(|e| classify(format!("registering {} in {target_group_arn}", instance_ids.join(", ")), e))?;
        Ok(())
    }

    async fn deregister_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()> {
        let targets = instance_ids.iter().map(|id| elb::types::TargetDescription::builder().id(id).port(port as i32).build()).collect();
        self.elb
            .deregister_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(|e| classify(format!("deregistering {} from {target_group_arn}", instance_ids.join(", ")), e))?;
        Ok(())
    }

    async fn delete_listener(&self, arn: &str) -> CloudResult<()> {
        self.elb.delete_listener().listener_arn(arn).send().await.map_err(|e| classify(format!("deleting listener {arn}"), e))?;
        Ok(())
    }

    async fn delete_load_balancer(&self, arn: &str) -> CloudResult<()> {
        self.elb.delete_load_balancer().load_balancer_arn(arn).send().await.map_err(|e| classify(format!("deleting load balancer {arn}"), e))?;
        Ok(())
    }

    async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        self.elb.delete_target_group().target_group_arn(arn).send().await.map_err(|e| classify(format!("deleting target group {arn}"), e))?;
        Ok(())
    }

    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        self.ec2.delete_security_group().group_id(id).send().await.map_err(|e| classify(format!("deleting security group {id}"), e))?;
        Ok(())
    }

    async fn delete_subnet(&self, id: &str) -> CloudResult<()> {
        self.ec2.delete_subnet().subnet_id(id).send().await.map_err(|e| classify(format!("deleting subnet {id}"), e))?;
        Ok(())
    }

    async fn disassociate_route_table(&self, association_id: &str) -> CloudResult<()> {
        self.ec2
            .disassociate_route_table()
            .association_id(association_id)
            .send()
            .await
            .map_err(|e| classify(format!("disassociating route table link {association_id}"), e))?;
        Ok(())
    }

    async fn delete_route_table(&self, id: &str) -> CloudResult<()> {
        self.ec2.delete_route_table().route_table_id(id).send().await.map_err(|e| classify(format!("deleting route table {id}"), e))?;
        Ok(())
    }

    async fn detach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()> {
        self.ec2
            .detach_internet_gateway()
            .internet_gateway_id(gateway_id)
            .vpc_id(vpc_id)
            .send()
            .await
            .map_err(|e| classify(format!("detaching internet gateway {gateway_id} from {vpc_id}"), e))?;
        Ok(())
    }

    async fn delete_internet_gateway(&self, id: &str) -> CloudResult<()> {
        self.ec2.delete_internet_gateway().internet_gateway_id(id).send().await.map_err(|e| classify(format!("deleting internet gateway {id}"), e))?;
        Ok(())
    }

    async fn delete_vpc(&self, id: &str) -> CloudResult<()> {
        self.ec2.delete_vpc().vpc_id(id).send().await.map_err(|e| classify(format!("deleting VPC {id}"), e))?;
        Ok(())
    }

    async fn delete_key_pair(&self, name: &str) -> CloudResult<()> {
        self.ec2.delete_key_pair().key_name(name).send().await.map_err(|e| classify(format!("deleting key pair {name}"), e))?;
        Ok(())
    }

    async fn create_role(&self, name: &str, path: &str, trust_policy: &str, tags: &Tags) -> CloudResult<Role> {
        let action = format!("creating role {name}");
        let resp = self
            .iam
            .create_role()
            .role_name(name)
            .path(path)
            .assume_role_policy_document(trust_policy)
            .set_tags(Some(iam_tags(tags)))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let mut role = resp.role().map(convert_role).ok_or_else(|| missing(&action, "role"))?;
        role.trust_policy = trust_policy.to_string();
        role.tags = tags.clone();
        Ok(role)
    }

    async fn put_role_policy(&self, role: &str, policy_name: &str, document: &str) -> CloudResult<()> {
        self.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(policy_name)
            .policy_document(document)
            .send()
            .await
            .map_err(|e| classify(format!("putting policy {policy_name} on role {role}"), e))?;
        Ok(())
    }

    async fn create_instance_profile(&self, name: &str, path: &str, tags: &Tags) -> CloudResult<InstanceProfile> {
        let action = format!("creating instance profile {name}");
        let resp = self
            .iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path(path)
            .set_tags(Some(iam_tags(tags)))
            .send()
            .await
            .map_err(|e| classify(action.clone(), e))?;
        let mut profile = resp.instance_profile().map(convert_profile).ok_or_else(|| missing(&action, "instance profile"))?;
        profile.tags = tags.clone();
        Ok(profile)
    }

    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()> {
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
            .map_err(|e| classify(format!("adding role {role} to instance profile {profile}"), e))?;
        Ok(())
    }

    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()> {
        self.iam
            .remove_role_from_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
            .map_err(|e| classify(format!("removing role {role} from instance profile {profile}"), e))?;
        Ok(())
    }

    async fn delete_instance_profile(&self, name: &str) -> CloudResult<()> {
        self.iam
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(|e| classify(format!("deleting instance profile {name}"), e))?;
        Ok(())
    }

    async fn delete_role_policy(&self, role: &str, policy_name: &str) -> CloudResult<()> {
        self.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(policy_name)
            .send()
            .await
            .map_err(|e| classify(format!("deleting policy {policy_name} of role {role}"), e))?;
        Ok(())
    }

    async fn delete_role(&self, name: &str) -> CloudResult<()> {
        self.iam.delete_role().role_name(name).send().await.map_err(|e| classify(format!("deleting role {name}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_are_read_url_encoded_or_plain() {
        let plain = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A b"}]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Sid%22%3A%22A%20b%22%7D%5D%7D";
        assert_eq!(decode_policy(plain), plain);
        assert_eq!(decode_policy(encoded), plain);
    }
}
