//! The cluster's control loops, run on the master.
//!
//! Layout: [`cache`] is the watch-fed cache they read; [`node_lifecycle`] marks nodes whose lease
//! went stale as not ready and evicts their pods after a toleration; [`deployment`] keeps
//! Deployments' ReplicaSets and ReplicaSets' pods; [`endpoints`] lists each Service's pods and
//! allocates NodePorts. Each controller is one task that reconciles every object in turn, so no
//! object is ever reconciled twice at once. The cloud controller comes with a later issue.

pub mod cache;
pub mod deployment;
pub mod endpoints;
pub mod node_lifecycle;

#[cfg(test)]
pub(crate) mod tests;
