//! clusterctl: turns a TOML cluster spec into a running container cluster on AWS.
//!
//! # Layout
//! - [`cli`]: the command line (clap), one file per command, terminal output; the binary's
//!   `main.rs` only parses arguments and calls [`cli::run`].
//! - [`spec`]: the cluster spec in TOML, validated into typed values with located errors.
//! - [`cloud`]: the cloud-controller abstraction: the [`cloud::Cloud`] trait, its AWS
//!   implementation, the retry decorator and an in-memory fake.
//! - [`provision`]: discover what a cluster owns, plan, converge and destroy infrastructure.
//! - [`api`]: the Kubernetes-shaped object model (`Node`, `Lease`, ...) and the resource registry.
//! - [`apiserver`]: the master's HTTPS API (REST, watch, authentication, authorization) over a durable
//!   store behind a trait (SQLite by default).
//! - [`client`]: the HTTPS client of that API, used by the CLI, the node agents and the controllers.
//! - [`bootstrap`]: from machines to a cluster over SSH: verified host keys, checked uploads,
//!   install script and units from `templates/`, the create flow, image side-loading.
//! - [`pki`]: the cluster CA, serving and client certificates, node CSR signing, join tokens.
//! - [`node`]: the node side of the binary (`clusterctl node master|worker`) and its config file.
//! - [`agent`]: the kubelet: node registration, lease heartbeats, pods as Docker containers.
//! - [`runtime`]: the one controller runtime: typed reflector stores, a de-duplicating work queue,
//!   `reconcile(key) -> Action` with per-key back-off and resync, a client trait and its fake.
//! - [`controllers`]: node lifecycle (not-ready marking, eviction), deployments, endpoints.
//! - [`cloudcontroller`]: the master's cloud controller manager (service load balancers, node deletion, machine replacement).
//! - [`proxy`]: every node's NodePort listeners forwarding to ready endpoints.
//! - [`manifest`]: multi-document YAML manifests validated into typed objects, errors with field paths.
//! - [`scheduler`]: places unbound pods on nodes (filters, scores, binds; pure decision functions).
//! - [`home`]: the operator's per-cluster folder (SSH key, known hosts, kubeconfig).
//! - [`report`]: the progress-reporting trait the library uses instead of drawing.
//!
//! See `docs/ARCHITECTURE.md` for the decisions behind this shape.

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod cloud;
pub mod cloudcontroller;
pub mod controllers;
pub mod home;
pub mod manifest;
pub mod node;
pub mod pki;
pub mod provision;
pub mod proxy;
pub mod report;
pub mod runtime;
pub mod scheduler;
pub mod spec;
