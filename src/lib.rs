//! clusterctl: turns a TOML cluster spec into a running container cluster on AWS.
pub mod cloud;
