//! The cluster's control loops, run on the master.
//!
//! Layout: [`node_lifecycle`] marks nodes whose lease went stale as not ready. The deployment,
//! endpoints and cloud controllers come with later issues.

pub mod node_lifecycle;
