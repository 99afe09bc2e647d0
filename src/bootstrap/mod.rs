//! Bootstrapping machines over SSH.
//!
//! Layout:
//! - [`hostkeys`]: host keys as cloud-init prints them on the console, fingerprints, and the
//!   trust decision (pinned from the console, else trust on first use);
//! - [`ssh`]: SSH sessions on ssh2, run on blocking threads: connect with bounded back-off while a
//!   machine boots, verified host keys, commands through `sudo -n`, checked uploads;
//! - [`backup`]: `clusterctl backup`/`restore` from the operator's side (snapshots over SSH).
//!
//! The cluster PKI, templates and the install/join flow come with the bootstrap issue.

pub mod hostkeys;
pub mod ssh;
pub mod templates;
pub mod cluster;
pub mod images;
pub mod backup;
