//! Typed objects and the keys the runtime works on.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::config::{ConfigMap, Secret};
use crate::api::deployment::{Deployment, ReplicaSet};
use crate::api::event::Event;
use crate::api::lease::Lease;
use crate::api::machinepool::MachinePool;
use crate::api::networkpolicy::{Namespace, NetworkPolicy};
use crate::api::pod::Pod;
use crate::api::resource::Resource;
use crate::api::service::{Endpoints, Service};
use crate::api::{Node, ObjectMeta};

/// A typed API object: its resource, its metadata, and serde both ways.
pub trait Object: Resource + Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The object's metadata.
    fn meta(&self) -> &ObjectMeta;

    /// The object's metadata, to change.
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// The object's key in stores and queues.
    fn key(&self) -> ObjectKey {
        ObjectKey::of(self.meta())
    }
}

macro_rules! object {
    ($($t:ty),*) => {
        $(impl Object for $t {
            fn meta(&self) -> &ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
        })*
    };
}
object!(Pod, Node, Deployment, ReplicaSet, Service, Endpoints, Lease, MachinePool, Event, NetworkPolicy, Namespace, ConfigMap, Secret);

/// Names one object: `namespace/name`, or `name` for cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced object.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { namespace: Some(namespace.into()), name: name.into() }
    }

    /// The key of a cluster-scoped object (or of a controller's single piece of work).
    pub fn cluster(name: impl Into<String>) -> Self {
        ObjectKey { namespace: None, name: name.into() }
    }

    /// The key of the object with this metadata (an empty namespace counts as none).
    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey { namespace: meta.namespace.clone().filter(|n| !n.is_empty()), name: meta.name.clone() }
    }

    /// The key of an object still in JSON (for naming one that does not decode).
    pub fn of_value(object: &Value) -> Self {
        let text = |field: &str| object.pointer(&format!("/metadata/{field}")).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
        ObjectKey { namespace: text("namespace"), name: text("name").unwrap_or_default() }
    }

    /// The namespace, `default` when none (for namespaced calls).
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Decodes one listed or watched object, or logs why it cannot be (naming it, its kind and the
/// serde error) and returns `None`: one bad object must not fail a list or stop a loop.
pub fn decode<T: Object>(object: Value) -> Option<T> {
    let key = ObjectKey::of_value(&object);
    match serde_json::from_value::<T>(object) {
        Ok(typed) => Some(typed),
        Err(e) => {
            tracing::error!(object = %key, kind = T::TYPE.kind, error = %e, "skipping an object that does not decode");
            None
        }
    }
}
