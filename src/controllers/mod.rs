//! The cluster's control loops, run on the master, each built on the [`runtime`](crate::runtime).
//!
//! Layout: [`node_lifecycle`] marks nodes whose lease went stale as not ready and evicts their
//! pods after a toleration; [`deployment`] keeps Deployments' ReplicaSets and ReplicaSets' pods;
//! [`endpoints`] lists each Service's pods and allocates NodePorts; [`event_ttl`] deletes Events an
//! hour after they last happened; [`node_ipam`] gives every Node its pod range; [`api_service`]
//! keeps the `default/kubernetes` Service and its Endpoints (the Ready masters); [`token_cleaner`]
//! deletes expired bootstrap tokens. Every one reconciles one key
//! at a time per object (the runtime never runs two reconciles of one key at once).

pub mod api_service;
pub mod deployment;
pub mod endpoints;
pub mod event_ttl;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod token_cleaner;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
pub(crate) mod tests;
