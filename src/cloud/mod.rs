//! The cloud-controller abstraction: everything a cluster needs from a cloud.
//!
//! Layout:
//! - this file: the [`Cloud`] trait and the plain resource types it speaks in
//!   (no SDK type ever crosses this boundary);
//! - [`error`]: [`CloudError`], AWS answers already turned into meaning
//!   (not found, dependency violation, throttled, ...);
//! - [`resilient`]: [`Resilient`], the decorator that gives every call its
//!   retry semantics (throttling back-off under one shared budget, eventual
//!   consistency, `DependencyViolation` until a deadline, not-found on delete
//!   is success). Layers above always talk to a `Resilient<C>`;
//! - [`aws`]: the implementation on aws-sdk-ec2, aws-sdk-elasticloadbalancingv2 and aws-sdk-iam;
//! - [`fake`]: a stateful in-memory cloud with failure injection, for unit tests;
//! - [`ecr`]: Amazon ECR's registry credentials for a node's agent (aws-sdk-ecr, on the
//!   machine's own role), apart from the [`Cloud`] trait, which is the operator's and masters'.

pub mod aws;
pub mod ecr;
pub mod error;
pub mod fake;
pub mod resilient;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::Serialize;

pub use error::{CloudError, ErrorKind};
pub use resilient::{Resilient, RetryPolicy};

/// Result of a cloud call.
pub type CloudResult<T> = Result<T, CloudError>;

/// Resource tags, ordered so that output and comparisons are stable.
pub type Tags = BTreeMap<String, String>;

/// Tag that marks every resource a cluster owns; its value is the cluster name.
pub const OWNER_TAG: &str = "clusterctl:cluster";
/// Tag naming what a resource is for inside its cluster (`vpc`, `masters`, `api`, ...).
pub const ROLE_TAG: &str = "clusterctl:role";
/// Tag naming the node pool an instance belongs to.
pub const POOL_TAG: &str = "clusterctl:pool";
/// Tag naming an instance's slot (0-based index) inside its pool.
pub const SLOT_TAG: &str = "clusterctl:slot";

/// A VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vpc {
    pub id: String,
    pub cidr: Ipv4Net,
    pub tags: Tags,
}

/// A subnet of a VPC in one availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub zone: String,
    pub cidr: Ipv4Net,
    pub map_public_ip_on_launch: bool,
    pub tags: Tags,
}

/// An internet gateway and the VPCs it is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InternetGateway {
    pub id: String,
    pub attached_vpcs: Vec<String>,
    pub tags: Tags,
}

/// A route in a route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway_id: Option<String>,
    /// The instance that takes the traffic (a node, for its pod range).
    pub instance_id: Option<String>,
    /// Whether AWS shows the route as `blackhole`: its target (an instance) is gone or stopped.
    pub blackhole: bool,
}

/// The link between a route table and a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTableAssociation {
    pub id: String,
    pub subnet_id: Option<String>,
    pub main: bool,
}

/// A route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTable {
    pub id: String,
    pub vpc_id: String,
    pub routes: Vec<Route>,
    pub associations: Vec<RouteTableAssociation>,
    pub tags: Tags,
}

/// IP protocol of a security group rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Every ICMP type (ports unused).
    Icmp,
    /// Every protocol and port (`-1` in the EC2 API).
    All,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::All => "all",
        })
    }
}

/// Where the traffic of an inbound rule may come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleSource {
    /// Any address of a block.
    Cidr(Ipv4Net),
    /// The instances in a security group: its id in the [`Cloud`] calls; its name in the plans of
    /// `provision`, which map one to the other.
    Group(String),
}

/// As in `status -o json`: the block, or `group <name or id>`.
impl Serialize for RuleSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSource::Cidr(c) => write!(f, "{c}"),
            RuleSource::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// One inbound rule of a security group: traffic from a CIDR or a group to a port range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IngressRule {
    pub protocol: Protocol,
    pub from_port: u16,
    pub to_port: u16,
    pub source: RuleSource,
}

impl IngressRule {
    /// The same rule with its group source (if any) renamed by `f` (ids to names, or back);
    /// None when `f` does not know the group.
    pub fn map_group(&self, f: impl Fn(&str) -> Option<String>) -> Option<IngressRule> {
        let source = match &self.source {
            RuleSource::Group(g) => RuleSource::Group(f(g)?),
            other => other.clone(),
        };
        Some(IngressRule { source, ..self.clone() })
    }
}

impl fmt::Display for IngressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::All => write!(f, "all traffic from {}", self.source),
            Protocol::Icmp => write!(f, "icmp from {}", self.source),
            p if self.from_port == self.to_port => {
                write!(f, "{p}/{} from {}", self.from_port, self.source)
            }
            p => write!(f, "{p}/{}-{} from {}", self.from_port, self.to_port, self.source),
        }
    }
}

/// A security group and its inbound rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroup {
    pub id: String,
    pub vpc_id: String,
    pub name: String,
    pub ingress: Vec<IngressRule>,
    pub tags: Tags,
}

/// An imported SSH key pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPair {
    pub name: String,
    pub id: Option<String>,
    pub tags: Tags,
}

/// A machine image, as far as launching needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub root_device_name: Option<String>,
}

/// Lifecycle state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl InstanceState {
    /// Whether the instance is gone or on its way out.
    pub fn is_gone(self) -> bool {
        matches!(self, InstanceState::ShuttingDown | InstanceState::Terminated)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        })
    }
}

/// An EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub instance_type: String,
    pub image_id: String,
    pub subnet_id: Option<String>,
    pub private_ip: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
    /// ARN of the instance profile the instance was launched with, if any.
    pub instance_profile: Option<String>,
    /// Whether the instance takes only traffic addressed to it (AWS's default); a node whose pod
    /// range is routed to it needs it off.
    pub source_dest_check: bool,
    pub tags: Tags,
}

/// What to launch for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchRequest {
    pub image: Image,
    pub instance_type: String,
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
    pub key_name: String,
    pub disk_gb: u32,
    /// Idempotency token: a retried launch with the same token must not make a second instance.
    pub client_token: String,
    pub user_data: Option<String>,
    /// Name of the IAM instance profile that gives the instance its credentials.
    pub instance_profile: Option<String>,
    pub tags: Tags,
}

/// Health of a running instance as EC2's status checks see it (`DescribeInstanceStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    pub instance_id: String,
    /// The instance status check (`ok`, `impaired`, `initializing`, `insufficient-data`, `not-applicable`).
    pub instance_check: String,
    /// The system status check, same values.
    pub system_check: String,
}

impl InstanceStatus {
    /// Whether either check says the machine is impaired (failed).
    pub fn impaired(&self) -> bool {
        self.instance_check == "impaired" || self.system_check == "impaired"
    }
}

/// A network load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadBalancer {
    pub arn: String,
    pub name: String,
    pub dns_name: String,
    pub vpc_id: Option<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub tags: Tags,
}

/// A target group of instances behind a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub vpc_id: Option<String>,
    pub tags: Tags,
}

/// A TCP listener of a load balancer forwarding to one target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub arn: String,
    pub load_balancer_arn: String,
    pub port: u16,
    pub target_group_arn: Option<String>,
}

/// Health of one registered target as the load balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    pub instance_id: String,
    pub port: u16,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
}

/// An IAM role (global, not regional), with the document that says who may assume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    pub arn: String,
    pub path: String,
    /// The trust policy, as JSON text.
    pub trust_policy: String,
    pub tags: Tags,
}

/// An IAM instance profile: what an EC2 instance is launched with to get a role's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceProfile {
    pub name: String,
    pub arn: String,
    pub path: String,
    /// Names of the roles in the profile (at most one on AWS).
    pub roles: Vec<String>,
    pub tags: Tags,
}

/// Everything a cluster needs from a cloud.
///
/// Listing calls take a tag selector: a resource matches when it carries every
/// given tag with the given value. Implementations report errors faithfully
/// (a delete of something missing is [`ErrorKind::NotFound`]); the retry and
/// idempotency semantics live in [`Resilient`].
#[async_trait]
pub trait Cloud: Send + Sync {
    /// VPCs carrying the tags.
    async fn vpcs(&self, tags: &Tags) -> CloudResult<Vec<Vpc>>;
    /// Subnets carrying the tags.
    async fn subnets(&self, tags: &Tags) -> CloudResult<Vec<Subnet>>;
    /// Internet gateways carrying the tags.
    async fn internet_gateways(&self, tags: &Tags) -> CloudResult<Vec<InternetGateway>>;
    /// Route tables carrying the tags.
    async fn route_tables(&self, tags: &Tags) -> CloudResult<Vec<RouteTable>>;
    /// Security groups carrying the tags.
    async fn security_groups(&self, tags: &Tags) -> CloudResult<Vec<SecurityGroup>>;
    /// Key pairs carrying the tags.
    async fn key_pairs(&self, tags: &Tags) -> CloudResult<Vec<KeyPair>>;
    /// Instances carrying the tags, in any state but terminated.
    async fn instances(&self, tags: &Tags) -> CloudResult<Vec<Instance>>;
    /// Instances by id, in any state. Unknown ids are [`ErrorKind::NotFound`].
    async fn instances_by_id(&self, ids: &[String]) -> CloudResult<Vec<Instance>>;
    /// Network load balancers carrying the tags.
    async fn load_balancers(&self, tags: &Tags) -> CloudResult<Vec<LoadBalancer>>;
    /// Target groups carrying the tags.
    async fn target_groups(&self, tags: &Tags) -> CloudResult<Vec<TargetGroup>>;
    /// Listeners of a load balancer.
    async fn listeners(&self, load_balancer_arn: &str) -> CloudResult<Vec<Listener>>;
    /// Registered targets of a target group and their health.
    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<TargetHealth>>;
    /// Status checks of running instances among `ids` (instances not running are left out).
    async fn instance_statuses(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>>;
    /// The newest image whose name matches the pattern (`*` wildcards), optionally of one owner.
    async fn find_image(&self, pattern: &str, owner: Option<&str>) -> CloudResult<Option<Image>>;
    /// One image by id.
    async fn image(&self, id: &str) -> CloudResult<Image>;
    /// What the instance printed on its console (decoded), if anything yet.
    async fn console_output(&self, instance_id: &str) -> CloudResult<Option<String>>;
    /// An IAM role by name; `None` when there is none. (IAM is global and names are unique per
    /// account, so roles are found by name and then checked for the cluster's tag.)
    async fn role(&self, name: &str) -> CloudResult<Option<Role>>;
    /// The inline policy document of a role (JSON text, decoded); `None` when the role has no
    /// policy of that name.
    async fn role_policy(&self, role: &str, policy_name: &str) -> CloudResult<Option<String>>;
    /// An IAM instance profile by name; `None` when there is none.
    async fn instance_profile(&self, name: &str) -> CloudResult<Option<InstanceProfile>>;

    /// Creates a VPC.
    async fn create_vpc(&self, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Vpc>;
    /// Creates a subnet that gives instances a public address.
    async fn create_subnet(&self, vpc_id: &str, zone: &str, cidr: Ipv4Net, tags: &Tags) -> CloudResult<Subnet>;
    /// Makes instances launched in the subnet get a public address.
    async fn enable_public_ips(&self, subnet_id: &str) -> CloudResult<()>;
    /// Creates an internet gateway.
    async fn create_internet_gateway(&self, tags: &Tags) -> CloudResult<InternetGateway>;
    /// Attaches an internet gateway to a VPC.
    async fn attach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()>;
    /// Creates a route table.
    async fn create_route_table(&self, vpc_id: &str, tags: &Tags) -> CloudResult<RouteTable>;
    /// Adds a route through an internet gateway.
    async fn create_route(&self, route_table_id: &str, destination: Ipv4Net, gateway_id: &str) -> CloudResult<()>;
    /// Adds a route to an instance (a node's pod range to the node).
    async fn create_instance_route(&self, route_table_id: &str, destination: Ipv4Net, instance_id: &str) -> CloudResult<()>;
    /// Removes the route to `destination`.
    async fn delete_route(&self, route_table_id: &str, destination: Ipv4Net) -> CloudResult<()>;
    /// Turns off an instance's source/destination check, so that it receives traffic routed to it.
    async fn disable_source_dest_check(&self, instance_id: &str) -> CloudResult<()>;
    /// Gives a running or stopped instance the instance profile `profile` (by name), in place of
    /// the one it has, if any (EC2's `AssociateIamInstanceProfile`, or
    /// `ReplaceIamInstanceProfileAssociation` of its current association).
    async fn set_instance_profile(&self, instance_id: &str, profile: &str) -> CloudResult<()>;
    /// Associates a route table with a subnet.
    async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> CloudResult<()>;
    /// Creates a security group with no inbound rules.
    async fn create_security_group(&self, vpc_id: &str, name: &str, description: &str, tags: &Tags) -> CloudResult<SecurityGroup>;
    /// Adds inbound rules.
    async fn authorize_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()>;
    /// Removes inbound rules.
    async fn revoke_ingress(&self, group_id: &str, rules: &[IngressRule]) -> CloudResult<()>;
    /// Imports an OpenSSH public key as a key pair.
    async fn import_key_pair(&self, name: &str, public_key: &str, tags: &Tags) -> CloudResult<KeyPair>;
    /// Launches one instance.
    async fn run_instance(&self, request: &LaunchRequest) -> CloudResult<Instance>;
    /// Terminates instances.
    async fn terminate_instances(&self, ids: &[String]) -> CloudResult<()>;
    /// Creates an internet-facing network load balancer.
    async fn create_load_balancer(&self, name: &str, subnet_ids: &[String], security_group_ids: &[String], tags: &Tags) -> CloudResult<LoadBalancer>;
    /// Creates a TCP target group of instances with TCP health checks.
    async fn create_target_group(&self, name: &str, vpc_id: &str, port: u16, tags: &Tags) -> CloudResult<TargetGroup>;
    /// Creates a TCP listener forwarding to a target group.
    async fn create_listener(&self, load_balancer_arn: &str, port: u16, target_group_arn: &str, tags: &Tags) -> CloudResult<Listener>;
    /// Registers instances as targets on a port.
    async fn register_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()>;
    /// Deregisters instances.
    async fn deregister_targets(&self, target_group_arn: &str, instance_ids: &[String], port: u16) -> CloudResult<()>;

    /// Deletes a listener.
    async fn delete_listener(&self, arn: &str) -> CloudResult<()>;
    /// Deletes a load balancer.
    async fn delete_load_balancer(&self, arn: &str) -> CloudResult<()>;
    /// Deletes a target group.
    async fn delete_target_group(&self, arn: &str) -> CloudResult<()>;
    /// Deletes a security group.
    async fn delete_security_group(&self, id: &str) -> CloudResult<()>;
    /// Deletes a subnet.
    async fn delete_subnet(&self, id: &str) -> CloudResult<()>;
    /// Removes a route table's link to a subnet.
    async fn disassociate_route_table(&self, association_id: &str) -> CloudResult<()>;
    /// Deletes a route table.
    async fn delete_route_table(&self, id: &str) -> CloudResult<()>;
    /// Detaches an internet gateway from a VPC.
    async fn detach_internet_gateway(&self, gateway_id: &str, vpc_id: &str) -> CloudResult<()>;
    /// Deletes an internet gateway.
    async fn delete_internet_gateway(&self, id: &str) -> CloudResult<()>;
    /// Deletes a VPC.
    async fn delete_vpc(&self, id: &str) -> CloudResult<()>;
    /// Deletes a key pair.
    async fn delete_key_pair(&self, name: &str) -> CloudResult<()>;

    /// Creates an IAM role under `path` (`/clusterctl/`) that `trust_policy` lets assume it.
    async fn create_role(&self, name: &str, path: &str, trust_policy: &str, tags: &Tags) -> CloudResult<Role>;
    /// Creates or replaces a role's inline policy.
    async fn put_role_policy(&self, role: &str, policy_name: &str, document: &str) -> CloudResult<()>;
    /// Creates an IAM instance profile with no role.
    async fn create_instance_profile(&self, name: &str, path: &str, tags: &Tags) -> CloudResult<InstanceProfile>;
    /// Puts a role into an instance profile.
    async fn add_role_to_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()>;
    /// Takes a role out of an instance profile.
    async fn remove_role_from_instance_profile(&self, profile: &str, role: &str) -> CloudResult<()>;
    /// Deletes an instance profile (it must hold no role).
    async fn delete_instance_profile(&self, name: &str) -> CloudResult<()>;
    /// Deletes a role's inline policy.
    async fn delete_role_policy(&self, role: &str, policy_name: &str) -> CloudResult<()>;
    /// Deletes a role (it must have no inline policy and be in no instance profile).
    async fn delete_role(&self, name: &str) -> CloudResult<()>;
}

/// Whether `tags` carries every tag of `selector`.
pub fn tags_match(tags: &Tags, selector: &Tags) -> bool {
    selector.iter().all(|(k, v)| tags.get(k) == Some(v))
}

/// A tag selector with the cluster's ownership tag.
pub fn owned_by(cluster: &str) -> Tags {
    Tags::from([(OWNER_TAG.to_string(), cluster.to_string())])
}
