//! The object model, shaped like Kubernetes' JSON (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
//!
//! # Layout
//! - [`meta`]: `ObjectMeta`, lists, watch events and the `Status` failure object.
//! - [`resource`]: the registry of served resources ([`ResourceType`]): REST paths, store keys,
//!   namespaced or not; the [`Resource`] trait ties a typed object to its resource.
//! - [`time`]: RFC 3339 timestamps (`Time` to the second, `MicroTime` to the microsecond).
//! - Typed objects: [`node`] (`Node`), [`lease`] (`Lease`), [`certificates`]
//!   (`CertificateSigningRequest`), [`config`] (`Secret`, `ConfigMap`), [`pod`] (`Pod`, `Container`,
//!   probes, status), [`affinity`] (where a pod may run: affinity, topology spread), [`deployment`] (`Deployment`, `ReplicaSet`), [`service`] (`Service`, `Endpoints`),
//!   [`event`] (`Event`).
//! - [`machinepool`]: `MachinePool`, a worker pool's desired size and what the machine controller saw.
//! - [`columns`]: the columns each kind of object is listed with (`clusterctl get`, kubectl's Tables).
//! - [`quantity`]: resource quantities (`500m`, `64Mi`) and `IntOrString`.
//!
//! Typed objects leave `apiVersion` and `kind` empty when built by hand; the client and the server fill
//! them from the resource.

pub mod affinity;
pub mod certificates;
pub mod columns;
pub mod config;
pub mod deployment;
pub mod event;
pub mod lease;
pub mod machinepool;
pub mod meta;
pub mod networkpolicy;
pub mod node;
pub mod pod;
pub mod quantity;
pub mod resource;
pub mod schema;
pub mod service;
pub mod time;

pub use certificates::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
    CertificateSigningRequestStatus, INSTANCE_IDENTITY_DOCUMENT_ANNOTATION, INSTANCE_IDENTITY_SIGNATURE_ANNOTATION, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER,
};
pub use config::{ConfigMap, Secret};
pub use machinepool::{MachinePool, MachinePoolSpec, MachinePoolStatus};
pub use lease::{Lease, LeaseSpec, NODE_LEASE_NAMESPACE};
pub use meta::{
    List, ListMeta, ObjectMeta, OwnerReference, Status, StatusCause, StatusDetails, StatusReason, UnknownFields, WatchEvent, WatchEventType,
};
pub use node::{DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Taint};
pub use resource::{Resource, ResourceType};
pub use time::{MicroTime, Time};
