//! `clusterctl delete -f manifest.yaml`: the objects of the manifests, deleted in reverse order
//! (their ReplicaSets, pods and Endpoints follow through the controllers' garbage collection).

pub use super::apply::{ManifestArgs as DeleteArgs, run_delete as run};
