//! Who is asking (authentication) and whether they may (authorization).
//!
//! Authentication, first match wins:
//! 1. a client certificate signed by the cluster CA: `CN` is the user, each `O` a group;
//! 2. `Authorization: Bearer <id>.<secret>`, a bootstrap token checked against the Secret
//!    `kube-system/bootstrap-token-<id>` (type `bootstrap.kubernetes.io/token`, keys `token-id`,
//!    `token-secret`, optional `expiration`): user `system:bootstrap:<id>`, group
//!    `system:bootstrappers`;
//! 3. nothing: anonymous, let through only to [`anonymous_allowed`] paths (health, version and the
//!    `kube-public/cluster-info` discovery ConfigMap); everything else is 401.
//!
//! Authorization ([`authorize`]):
//! - group `system:masters`: everything;
//! - a node (`system:node:<name>` in group `system:nodes`): read (get, list, watch) nodes, pods,
//!   services, endpoints, namespaces, leases and network policies (not their subresources: no pod logs or
//!   exec); create a certificate signing request (for its own serving certificate, see [`super::csr`]);
//!   create, update and patch its own Node and
//!   its status; create, update and patch its own Lease in `kube-node-lease`; update and patch the
//!   status of pods bound to it (checked against the stored pod by the caller), and delete those
//!   pods (what ends their graceful deletion); nothing else, no other deletes, no secrets and no
//!   ConfigMaps (its pods use none yet; Kubernetes' node authorizer allows only those they name);
//! - a bootstrap token: create certificatesigningrequests, nothing else;
//! - anyone else: nothing.

use std::fmt;

use axum::http::Method;

use super::error::ApiError;
use super::store::Store;
use crate::api::config::{BOOTSTRAP_TOKEN_NAMESPACE, BOOTSTRAP_TOKEN_SECRET_PREFIX, BOOTSTRAP_TOKEN_SECRET_TYPE};
use crate::api::resource::{self, ResourceType};
use crate::api::{NODE_LEASE_NAMESPACE, Secret, Time};

/// The group whose members may do anything.
pub const MASTERS_GROUP: &str = "system:masters";
/// The group of node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node identity's user name; the node name follows.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group of bootstrap token identities.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
const AUTHENTICATED_GROUP: &str = "system:authenticated";
const ANONYMOUS_USER: &str = "system:anonymous";

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// An authenticated identity (adds `system:authenticated`).
    pub fn new(user: impl Into<String>, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        Identity { user: user.into(), groups }
    }

    /// Someone without credentials.
    pub fn anonymous() -> Self {
        Identity { user: ANONYMOUS_USER.into(), groups: vec!["system:unauthenticated".into()] }
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node name, for a node identity.
    pub fn node_name(&self) -> Option<&str> {
        let name = self.user.strip_prefix(NODE_USER_PREFIX)?;
        (self.in_group(NODES_GROUP) && !name.is_empty()).then_some(name)
    }

    /// Whether this is a bootstrap token identity.
    pub fn is_bootstrapper(&self) -> bool {
        self.in_group(BOOTSTRAPPERS_GROUP)
    }
}

/// The identity a connection's client certificate carries, and when the certificate was issued
/// (Unix seconds); put into every request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct PeerIdentity(pub Option<(Identity, i64)>);

/// What a request does, in Kubernetes' verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        })
    }
}

/// What a request touches.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub verb: Verb,
    pub resource: &'a ResourceType,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed if the stored pod is bound to this node (`spec.nodeName`); the caller checks.
    AllowIfPodOnNode(String),
    /// Allowed if a pod bound to this node names the ConfigMap or Secret (Kubernetes' node
    /// authorizer: its graph of pods and what they reference); the caller checks.
    AllowIfReferencedOnNode(String),
    /// A node's list or watch of pods: allowed for the pods bound to it (the `spec.nodeName` field
    /// selector) or in the pods' network view; the caller checks.
    AllowIfOwnPodsOrNetworkView(String),
    Deny,
}

const NODE_READABLE: &[ResourceType] =
    &[resource::NODES, resource::SERVICES, resource::ENDPOINTS, resource::NAMESPACES, resource::LEASES, resource::NETWORK_POLICIES];

/// Decides whether `identity` may do what `attrs` describe.
pub fn authorize(identity: &Identity, attrs: &Attributes<'_>) -> Decision {
    if identity.in_group(MASTERS_GROUP) {
        return Decision::Allow;
    }
    if let Some(node) = identity.node_name() {
        return authorize_node(node, attrs);
    }
    if identity.is_bootstrapper() {
        let csr = *attrs.resource == resource::CERTIFICATE_SIGNING_REQUESTS;
        return if csr && attrs.verb == Verb::Create && attrs.subresource.is_none() { Decision::Allow } else { Decision::Deny };
    }
    Decision::Deny
}

fn authorize_node(node: &str, a: &Attributes<'_>) -> Decision {
    let own = a.name == Some(node);
    let sourced = *a.resource == resource::CONFIG_MAPS || *a.resource == resource::SECRETS;
    if sourced && a.verb == Verb::Get && a.subresource.is_none() && a.name.is_some() {
        return Decision::AllowIfReferencedOnNode(node.to_string());
    }
    if *a.resource == resource::PODS && a.subresource.is_none() {
        match a.verb {
            Verb::Get => return Decision::AllowIfPodOnNode(node.to_string()),
            Verb::List | Verb::Watch => return Decision::AllowIfOwnPodsOrNetworkView(node.to_string()),
            _ => {}
        }
    }
    let allowed = match a.verb {
        Verb::Get | Verb::List | Verb::Watch => NODE_READABLE.contains(a.resource) && a.subresource.is_none(),
        Verb::Create => {
            // Its agent's serving certificate (the CSR admission checks the name).
            (*a.resource == resource::CERTIFICATE_SIGNING_REQUESTS && a.subresource.is_none()) ||
            (*a.resource == resource::NODES && own && a.subresource.is_none())
                || (*a.resource == resource::LEASES && own && a.namespace == Some(NODE_LEASE_NAMESPACE))
                || *a.resource == resource::EVENTS
        }
        Verb::Update | Verb::Patch => {
            if *a.resource == resource::PODS && a.subresource == Some("status") {
                return Decision::AllowIfPodOnNode(node.to_string());
            }
            // Events: a node reports what happens to its pods (and raises their counts), as a
            // kubelet does.
            if *a.resource == resource::EVENTS {
                return if a.subresource.is_none() { Decision::Allow } else { Decision::Deny };
            }
            (*a.resource == resource::NODES && own && matches!(a.subresource, None | Some("status")))
                || (*a.resource == resource::LEASES && own && a.namespace == Some(NODE_LEASE_NAMESPACE) && a.subresource.is_none())
        }
        // The last step of a pod's graceful deletion: its agent removes it once stopped.
        Verb::Delete if *a.resource == resource::PODS && a.subresource.is_none() => return Decision::AllowIfPodOnNode(node.to_string()),
        Verb::Delete | Verb::DeleteCollection => false,
    };
    if allowed { Decision::Allow } else { Decision::Deny }
}

/// The 403 for a denied request, naming user, verb and resource (Kubernetes' wording).
pub fn forbidden(identity: &Identity, attrs: &Attributes<'_>) -> ApiError {
    let mut resource = attrs.resource.plural.to_string();
    if let Some(sub) = attrs.subresource {
        resource = format!("{resource}/{sub}");
    }
    let object = match attrs.name {
        Some(name) => format!("{} {name:?}", attrs.resource),
        None => attrs.resource.to_string(),
    };
    let scope = match attrs.namespace {
        Some(ns) if attrs.resource.namespaced => format!("in the namespace {ns:?}"),
        _ => "at the cluster scope".into(),
    };
    ApiError::forbidden(
        attrs.resource,
        attrs.name.unwrap_or(""),
        format!(
            "{object} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            identity.user, attrs.verb, attrs.resource.group
        ),
    )
}

/// Whether a request without credentials may go through.
pub fn anonymous_allowed(method: &Method, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez" | "/version")
        || (method == Method::GET && path == super::CLUSTER_INFO_PATH)
}

/// The identity of a `<id>.<secret>` bootstrap token, if a live token Secret matches it.
pub async fn bootstrap_token_identity(store: &dyn Store, token: &str) -> Result<Identity, ApiError> {
    let invalid = || ApiError::unauthorized("invalid bearer token");
    let (id, secret) = token.split_once('.').ok_or_else(invalid)?;
    let well_formed = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed(id, 6) || !well_formed(secret, 16) {
        return Err(invalid());
    }
    let key = resource::SECRETS.store_key(Some(BOOTSTRAP_TOKEN_NAMESPACE), &format!("{BOOTSTRAP_TOKEN_SECRET_PREFIX}{id}"));
    let stored = store.get(&key).await.map_err(|e| ApiError::from_store(e, &resource::SECRETS, id))?.ok_or_else(invalid)?;
    let s: Secret = serde_json::from_value(stored.value).map_err(|_| invalid())?;
    if s.secret_type.as_deref() != Some(BOOTSTRAP_TOKEN_SECRET_TYPE) || s.get_str("token-id").as_deref() != Some(id) {
        return Err(invalid());
    }
    let stored_secret = s.get_str("token-secret").unwrap_or_default();
    if !constant_time_eq(stored_secret.as_bytes(), secret.as_bytes()) {
        return Err(invalid());
    }
    if let Some(usage) = s.get_str("usage-bootstrap-authentication")
        && usage != "true"
    {
        return Err(invalid());
    }
    if let Some(expiration) = s.get_str("expiration") {
        // An unreadable expiration counts as expired.
        let expired = Time::parse(&expiration).map(|t| t.to_system_time() <= std::time::SystemTime::now()).unwrap_or(true);
        if expired {
            tracing::info!(token_id = id, %expiration, "refused an expired bootstrap token");
            return Err(ApiError::unauthorized("the bootstrap token has expired"));
        }
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    if let Some(extra) = s.get_str("auth-extra-groups") {
        groups.extend(extra.split(',').map(str::trim).filter(|g| g.starts_with("system:bootstrappers:")).map(String::from));
    }
    Ok(Identity::new(format!("system:bootstrap:{id}"), groups))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resource::{CERTIFICATE_SIGNING_REQUESTS, CONFIG_MAPS, LEASES, NODES, PODS, SECRETS};

    fn node(name: &str) -> Identity {
        Identity::new(format!("system:node:{name}"), vec![NODES_GROUP.into()])
    }

    fn attrs<'a>(verb: Verb, resource: &'a ResourceType, namespace: Option<&'a str>, name: Option<&'a str>, sub: Option<&'a str>) -> Attributes<'a> {
        Attributes { verb, resource, subresource: sub, namespace, name }
    }

    #[test]
    fn masters_may_do_anything() {
        let admin = Identity::new("admin", vec![MASTERS_GROUP.into()]);
        assert_eq!(authorize(&admin, &attrs(Verb::Delete, &SECRETS, Some("kube-system"), Some("x"), None)), Decision::Allow);
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_lease() {
        let w1 = node("w1");
        assert_eq!(authorize(&w1, &attrs(Verb::Update, &NODES, None, Some("w1"), Some("status"))), Decision::Allow);
        assert_eq!(authorize(&w1, &attrs(Verb::Create, &NODES, None, Some("w1"), None)), Decision::Allow);
        assert_eq!(authorize(&w1, &attrs(Verb::Update, &NODES, None, Some("w2"), Some("status"))), Decision::Deny);
        assert_eq!(authorize(&w1, &attrs(Verb::Create, &LEASES, Some("kube-node-lease"), Some("w1"), None)), Decision::Allow);
        assert_eq!(authorize(&w1, &attrs(Verb::Create, &LEASES, Some("default"), Some("w1"), None)), Decision::Deny);
        assert_eq!(authorize(&w1, &attrs(Verb::Delete, &NODES, None, Some("w1"), None)), Decision::Deny);
        assert_eq!(authorize(&w1, &attrs(Verb::Delete, &PODS, Some("default"), Some("p"), None)), Decision::AllowIfPodOnNode("w1".into()));
        assert_eq!(authorize(&w1, &attrs(Verb::Delete, &PODS, Some("default"), Some("p"), Some("status"))), Decision::Deny);
    }

    #[test]
    fn a_node_reads_what_it_needs_and_only_the_secrets_its_pods_name() {
        let w1 = node("w1");
        assert_eq!(authorize(&w1, &attrs(Verb::Watch, &PODS, None, None, None)), Decision::AllowIfOwnPodsOrNetworkView("w1".into()));
        assert_eq!(authorize(&w1, &attrs(Verb::Get, &PODS, Some("default"), Some("p"), None)), Decision::AllowIfPodOnNode("w1".into()));
        assert_eq!(authorize(&w1, &attrs(Verb::Get, &SECRETS, Some("default"), Some("s"), None)), Decision::AllowIfReferencedOnNode("w1".into()));
        assert_eq!(authorize(&w1, &attrs(Verb::Get, &CONFIG_MAPS, Some("default"), Some("c"), None)), Decision::AllowIfReferencedOnNode("w1".into()));
        assert_eq!(authorize(&w1, &attrs(Verb::List, &SECRETS, Some("default"), None, None)), Decision::Deny);
        assert_eq!(authorize(&w1, &attrs(Verb::Update, &SECRETS, Some("default"), Some("s"), None)), Decision::Deny);
        for verb in [Verb::Get, Verb::List, Verb::Watch] {
            assert_eq!(authorize(&w1, &attrs(verb, &CONFIG_MAPS, Some("default"), None, None)), Decision::Deny, "no ConfigMaps");
        }
    }

    #[test]
    fn a_node_may_write_pod_status_only_if_the_pod_is_bound_to_it() {
        let w1 = node("w1");
        assert_eq!(authorize(&w1, &attrs(Verb::Update, &PODS, Some("default"), Some("p"), Some("status"))), Decision::AllowIfPodOnNode("w1".into()));
        assert_eq!(authorize(&w1, &attrs(Verb::Update, &PODS, Some("default"), Some("p"), None)), Decision::Deny);
    }

    #[test]
    fn a_node_user_without_the_nodes_group_is_nobody() {
        let fake = Identity::new("system:node:w1", vec![]);
        assert_eq!(authorize(&fake, &attrs(Verb::Get, &NODES, None, Some("w1"), None)), Decision::Deny);
    }

    #[test]
    fn a_bootstrap_token_only_creates_signing_requests() {
        let b = Identity::new("system:bootstrap:abcdef", vec![BOOTSTRAPPERS_GROUP.into()]);
        assert_eq!(authorize(&b, &attrs(Verb::Create, &CERTIFICATE_SIGNING_REQUESTS, None, Some("c"), None)), Decision::Allow);
        assert_eq!(authorize(&b, &attrs(Verb::Get, &CERTIFICATE_SIGNING_REQUESTS, None, Some("c"), None)), Decision::Deny);
        assert_eq!(authorize(&b, &attrs(Verb::List, &NODES, None, None, None)), Decision::Deny);
    }

    #[test]
    fn forbidden_names_user_verb_and_resource() {
        let w1 = node("w1");
        let e = forbidden(&w1, &attrs(Verb::Update, &NODES, None, Some("w2"), Some("status")));
        assert_eq!(e.0.message, r#"nodes "w2" is forbidden: User "system:node:w1" cannot update resource "nodes/status" in API group "" at the cluster scope"#);
        assert_eq!(e.0.code, 403);
    }

    #[test]
    fn anonymous_reaches_only_health_and_discovery() {
        assert!(anonymous_allowed(&Method::GET, "/healthz"));
        assert!(anonymous_allowed(&Method::GET, "/api/v1/namespaces/kube-public/configmaps/cluster-info"));
        assert!(!anonymous_allowed(&Method::PUT, "/api/v1/namespaces/kube-public/configmaps/cluster-info"));
        assert!(!anonymous_allowed(&Method::GET, "/api/v1/nodes"));
    }
}
