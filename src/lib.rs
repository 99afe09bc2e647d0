//! clusterctl: turns a TOML cluster spec into a running container cluster on AWS.
//!
//! # Layers
//! Top first: a module uses only the modules below it (tests may use anything).
//! `tests/layers.rs` reads this list and checks every `crate::` path outside test code against it.
//! - [`cli`]: the command line (clap), one file per command, terminal output; the binary's
//!   `main.rs` only parses arguments and calls [`cli::run`].
//! - [`node`]: the node side of the binary (`clusterctl node master|worker`): the top composition
//!   that wires the control plane or the agent together, as k3s's server and agent commands do.
//! - [`cloudcontroller`]: the master's cloud controller manager (service load balancers, node
//!   deletion, machine replacement) and resizing a worker pool from the operator's side.
//! - [`bootstrap`]: from machines to a cluster over SSH (behind the `NodeShell` trait): verified
//!   host keys, install, the create flow, joins, master replacement, images, backups, logs.
//! - [`nodeconfig`]: the node contract: the node's config file, its paths, etcd member naming.
//! - [`agent`]: the kubelet: node registration, lease heartbeats, pods as Docker containers.
//! - [`proxy`]: every node's NodePort listeners forwarding to ready endpoints, and its cluster IP rules.
//! - [`dns`]: the cluster DNS every node's agent serves to its pods.
//! - [`controllers`]: node lifecycle (not-ready marking, eviction), deployments, endpoints.
//! - [`scheduler`]: places unbound pods on nodes (filters, scores, binds; pure decision functions).
//! - [`apiserver`]: the master's HTTPS API (REST, watch, authentication, authorization) over a
//!   durable store behind a trait (SQLite, or etcd).
//! - [`manifest`]: multi-document YAML manifests validated into typed objects, errors with field paths.
//! - [`runtime`]: the one controller runtime every control loop is built on: typed reflector
//!   stores, a de-duplicating work queue, `reconcile(key) -> Action` with per-key back-off and
//!   resync, a client trait and its in-memory fake.
//! - [`client`]: the HTTPS client of that API, used by the CLI, the node agents and the controllers.
//! - [`provision`]: discover what a cluster owns, plan, converge and destroy infrastructure.
//! - [`cloud`]: the cloud-controller abstraction: the [`cloud::Cloud`] trait, its AWS
//!   implementation, the retry decorator and an in-memory fake.
//! - [`pki`]: the cluster CA (made on a master's first start), serving and client certificates,
//!   node CSR signing, join tokens.
//! - [`api`]: the Kubernetes-shaped object model (`Node`, `Lease`, ...) and the resource registry.
//! - [`home`]: the operator's per-cluster folder (SSH key, known hosts, kubeconfig).
//! - [`report`]: the progress-reporting trait the library uses instead of drawing.
//! - [`spec`]: the cluster spec in TOML, validated into typed values with located errors.
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
pub mod dns;
pub mod home;
pub mod manifest;
pub mod node;
pub mod nodeconfig;
pub mod pki;
pub mod provision;
pub mod proxy;
pub mod report;
pub mod runtime;
pub mod scheduler;
pub mod spec;
