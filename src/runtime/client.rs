//! The typed API calls the runtime and the controllers make, behind a trait so that unit tests
//! drive controllers with the in-memory fake and the nodes with the real [`ApiClient`].

use std::future::Future;

use futures::stream::BoxStream;
use serde_json::Value;

use super::object::{Object, ObjectKey, decode};
use crate::api::resource::ResourceType;
use crate::api::{List, WatchEvent};
use crate::client::{ApiClient, ClientError, ListOptions};

/// A stream of watch events, as JSON so that an undecodable object is skipped, not fatal.
pub type WatchStream = BoxStream<'static, Result<WatchEvent<Value>, ClientError>>;

/// Typed calls on the API (list and watch stay JSON for the reflector, which decodes each object
/// on its own).
pub trait Client: Clone + Send + Sync + 'static {
    /// Lists a collection (every namespace with `None`) as JSON objects.
    fn list_raw(&self, resource: &ResourceType, namespace: Option<&str>, options: &ListOptions) -> impl Future<Output = Result<List<Value>, ClientError>> + Send;

    /// Watches a collection from `resource_version`: every later change, in order. A too old
    /// version is answered 410 (as an `Err`, at once or as the stream's item).
    fn watch_raw(&self, resource: &ResourceType, namespace: Option<&str>, resource_version: &str, options: &ListOptions) -> impl Future<Output = Result<WatchStream, ClientError>> + Send;

    /// Reads one object.
    fn get<T: Object>(&self, key: &ObjectKey) -> impl Future<Output = Result<T, ClientError>> + Send;

    /// Creates an object in its own namespace (or `default`).
    fn create<T: Object>(&self, object: &T) -> impl Future<Output = Result<T, ClientError>> + Send;

    /// Replaces an object but its status; its `resourceVersion`, when set, must be current.
    fn replace<T: Object>(&self, object: &T) -> impl Future<Output = Result<T, ClientError>> + Send;

    /// Replaces an object's status only; its `resourceVersion`, when set, must be current.
    fn replace_status<T: Object>(&self, object: &T) -> impl Future<Output = Result<T, ClientError>> + Send;

    /// Applies a JSON merge patch to an object (not its status).
    fn patch<T: Object>(&self, key: &ObjectKey, patch: &Value) -> impl Future<Output = Result<T, ClientError>> + Send;

    /// Applies a JSON merge patch to an object's status.
    fn patch_status<T: Object>(&self, key: &ObjectKey, patch: &Value) -> impl Future<Output = Result<T, ClientError>> + Send;

    /// Deletes an object (a pod a node runs is given its grace period: it is marked, and goes when
    /// its node's agent has stopped it).
    fn delete<T: Object>(&self, key: &ObjectKey) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Deletes an object with `DeleteOptions` (grace period, preconditions, propagation).
    fn delete_with<T: Object>(&self, key: &ObjectKey, options: &Value) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// Deletes an object at once (grace period 0), if it is still the one with `uid`: what an
    /// agent sends once a pod's containers are gone, and what evicts the pods of a lost node.
    fn delete_now<T: Object>(&self, key: &ObjectKey, uid: &str) -> impl Future<Output = Result<(), ClientError>> + Send {
        async move {
            let options = serde_json::json!({ "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": { "uid": uid } });
            self.delete_with::<T>(key, &options).await
        }
    }

    /// Lists a collection typed; objects that do not decode are skipped with a logged error.
    fn list<T: Object>(&self, namespace: Option<&str>, options: &ListOptions) -> impl Future<Output = Result<Vec<T>, ClientError>> + Send {
        async move {
            let resource = T::TYPE;
            Ok(self.list_raw(&resource, namespace, options).await?.items.into_iter().filter_map(decode::<T>).collect())
        }
    }
}

/// The namespace to address an object of `resource` in.
fn scope<'a>(resource: &ResourceType, key: &'a ObjectKey) -> Option<&'a str> {
    resource.namespaced.then(|| key.namespace_or_default())
}

impl Client for ApiClient {
    async fn list_raw(&self, resource: &ResourceType, namespace: Option<&str>, options: &ListOptions) -> Result<List<Value>, ClientError> {
        ApiClient::list(self, resource, namespace, options).await
    }

    async fn watch_raw(&self, resource: &ResourceType, namespace: Option<&str>, resource_version: &str, options: &ListOptions) -> Result<WatchStream, ClientError> {
        ApiClient::watch(self, resource, namespace, Some(resource_version), options).await
    }

    async fn get<T: Object>(&self, key: &ObjectKey) -> Result<T, ClientError> {
        ApiClient::get(self, &T::TYPE, scope(&T::TYPE, key), &key.name).await
    }

    async fn create<T: Object>(&self, object: &T) -> Result<T, ClientError> {
        let key = object.key();
        ApiClient::create(self, &T::TYPE, scope(&T::TYPE, &key), object).await
    }

    async fn replace<T: Object>(&self, object: &T) -> Result<T, ClientError> {
        let key = object.key();
        ApiClient::replace(self, &T::TYPE, scope(&T::TYPE, &key), &key.name, object).await
    }

    async fn replace_status<T: Object>(&self, object: &T) -> Result<T, ClientError> {
        let key = object.key();
        ApiClient::replace_status(self, &T::TYPE, scope(&T::TYPE, &key), &key.name, object).await
    }

    async fn patch<T: Object>(&self, key: &ObjectKey, patch: &Value) -> Result<T, ClientError> {
        ApiClient::patch(self, &T::TYPE, scope(&T::TYPE, key), &key.name, patch).await
    }

    async fn patch_status<T: Object>(&self, key: &ObjectKey, patch: &Value) -> Result<T, ClientError> {
        ApiClient::patch_status(self, &T::TYPE, scope(&T::TYPE, key), &key.name, patch).await
    }

    async fn delete<T: Object>(&self, key: &ObjectKey) -> Result<(), ClientError> {
        ApiClient::delete(self, &T::TYPE, scope(&T::TYPE, key), &key.name).await
    }

    async fn delete_with<T: Object>(&self, key: &ObjectKey, options: &Value) -> Result<(), ClientError> {
        ApiClient::delete_with(self, &T::TYPE, scope(&T::TYPE, key), &key.name, options).await
    }
}
