//! An in-memory API for unit tests: objects as JSON per resource, one global revision, watches
//! from a revision (410 Gone below the compacted one), optimistic concurrency (409 on a stale
//! `resourceVersion`), `generateName`, status kept apart from the rest as the API server does
//! (the same `apiserver::objects` functions), injected failures, and a record of every write.
//! [`FakeClient::insert_raw`] stores any JSON, bypassing every check, as an old store might hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::client::{Client, WatchStream};
use super::object::{Object, ObjectKey};
use crate::api::resource::ResourceType;
use crate::api::{List, ListMeta, Status, StatusReason, WatchEvent, WatchEventType};
use crate::apiserver::objects::{check_type, merge_patch, merge_update, name_suffix, prepare_create, with_revision};
use crate::client::{ClientError, ListOptions};

#[derive(Clone)]
struct Event {
    revision: u64,
    plural: &'static str,
    namespace: Option<String>,
    event: WatchEvent<Value>,
}

#[derive(Clone)]
enum Message {
    Event(Event),
    /// Every open watch ends (as when the server closes them), with 410 when `gone`.
    End { gone: bool },
}

struct Failure {
    verb: &'static str,
    plural: &'static str,
    remaining: usize,
    code: u16,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<(&'static str, ObjectKey), Value>,
    revision: u64,
    history: Vec<Event>,
    /// Watches from a revision below this one are answered 410.
    compacted: u64,
    failures: Vec<Failure>,
    writes: Vec<String>,
}

/// The in-memory API; clones share it.
#[derive(Clone)]
pub struct FakeClient {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Message>,
}

impl Default for FakeClient {
    fn default() -> Self {
        FakeClient::new()
    }
}

fn error(reason: StatusReason, code: u16, action: String) -> ClientError {
    ClientError::Api { status: Box::new(Status::failure(reason, code, action.clone())), action, code }
}

/// Whether `object` matches equality label and field selectors (`a=b,c=d`; fields as `spec.nodeName`).
fn selected(object: &Value, options: &ListOptions) -> bool {
    let pairs = |s: &Option<String>| -> Vec<(String, String)> {
        s.iter().flat_map(|s| s.split(',')).filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let labels_ok = pairs(&options.label_selector).iter().all(|(k, v)| object.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v.as_str()));
    let fields_ok = pairs(&options.field_selector).iter().all(|(k, v)| {
        let pointer = format!("/{}", k.replace('.', "/"));
        object.pointer(&pointer).and_then(Value::as_str).unwrap_or("") == v
    });
    labels_ok && fields_ok
}

impl FakeClient {
    /// An empty API at revision 0.
    pub fn new() -> Self {
        FakeClient { state: Arc::new(Mutex::new(State::default())), events: broadcast::channel(4096).0 }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next `times` calls of `verb` (`list`, `watch`, `get`, `create`, `replace`,
    /// `replace_status`, `patch`, `patch_status`, `delete`) on `resource` fail with HTTP `code`.
    pub fn fail_next(&self, verb: &'static str, resource: &ResourceType, times: usize, code: u16) {
        self.lock().failures.push(Failure { verb, plural: resource.plural, remaining: times, code });
    }

    /// Creates a Ready node `name` with 2 CPUs and 2 GiB allocatable, as an agent would report it.
    pub async fn ready_node(&self, name: &str) {
        use crate::api::{Node, NodeCondition, time::Time};
        let mut node = Node::new(name);
        node.status.allocatable = [("cpu".to_string(), "2".to_string()), ("memory".to_string(), "2Gi".to_string())].into();
        node.status.conditions = vec![NodeCondition { condition_type: "Ready".into(), status: "True".into(), last_heartbeat_time: Some(Time::now()), ..Default::default() }];
        let created = self.create(&node).await.expect("creating a node in the fake");
        self.replace_status(&Node { metadata: created.metadata.clone(), ..node }).await.expect("writing a node's status in the fake");
    }

    /// Every successful write so far, as `verb plural key` (e.g. `create pods default/web-x1`).
    pub fn writes(&self) -> Vec<String> {
        self.lock().writes.clone()
    }

    /// The stored object of `resource` at `key`, as JSON.
    pub fn raw(&self, resource: &ResourceType, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(&(resource.plural, key.clone())).cloned()
    }

    /// Every stored object of type `T` that decodes.
    pub fn objects<T: Object>(&self) -> Vec<T> {
        let plural = T::TYPE.plural;
        self.lock().objects.iter().filter(|((p, _), _)| *p == plural).filter_map(|(_, v)| serde_json::from_value(v.clone()).ok()).collect()
    }

    /// Stores `object` as it is (no type check, no defaults but a uid and the revision), as if it
    /// had been written before validation existed; watches see it.
    pub fn insert_raw(&self, resource: &ResourceType, mut object: Value) {
                let key = ObjectKey::of_value(&object);
        if object.pointer("/metadata/uid").is_none() {
            object["metadata"]["uid"] = json!(format!("raw-{key}"));
        }
        let mut state = self.lock();
        let kind = if state.objects.contains_key(&(resource.plural, key.clone())) { WatchEventType::Modified } else { WatchEventType::Added };
        self.commit(&mut state, resource, key, kind, object);
    }

    /// Forgets the history before now: watches from an older revision, and those open, get 410.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.revision;
        state.history.clear();
        let _ = self.events.send(Message::End { gone: true });
    }

    /// Ends every open watch normally (the server closing them); reflectors list again.
    pub fn end_watches(&self) {
        let _guard = self.lock();
        let _ = self.events.send(Message::End { gone: false });
    }

    fn check_failure(&self, state: &mut State, verb: &'static str, resource: &ResourceType, action: &str) -> Result<(), ClientError> {
        if let Some(f) = state.failures.iter_mut().find(|f| f.verb == verb && f.plural == resource.plural && f.remaining > 0) {
            f.remaining -= 1;
            let code = f.code;
            let reason = match code {
                404 => StatusReason::NotFound,
                409 => StatusReason::Conflict,
                410 => StatusReason::Expired,
                _ => StatusReason::InternalError,
            };
            return Err(error(reason, code, format!("{action} (injected)")));
        }
        Ok(())
    }

    /// Stores `object` at a new revision and sends its event; returns it with the revision.
    fn commit(&self, state: &mut State, resource: &ResourceType, key: ObjectKey, event_type: WatchEventType, object: Value) -> Value {
        state.revision += 1;
        let object = with_revision(object, state.revision);
        match event_type {
            WatchEventType::Deleted => {
                state.objects.remove(&(resource.plural, key.clone()));
            }
            _ => {
                state.objects.insert((resource.plural, key.clone()), object.clone());
            }
        }
        let event = Event { revision: state.revision, plural: resource.plural, namespace: key.namespace.clone(), event: WatchEvent { event_type, object: object.clone() } };
        state.history.push(event.clone());
        let _ = self.events.send(Message::Event(event));
        object
    }

    fn typed<T: Object>(object: Value, action: &str) -> Result<T, ClientError> {
        serde_json::from_value(object).map_err(|source| ClientError::Decode { action: action.to_string(), source })
    }

    fn write<T: Object>(&self, verb: &'static str, key: &ObjectKey, incoming: Value, status_only: bool) -> Result<T, ClientError> {
        let resource = &T::TYPE;
        let action = format!("{verb} {} {key}", resource.plural);
        let mut state = self.lock();
        self.check_failure(&mut state, verb, resource, &action)?;
        let Some(stored) = state.objects.get(&(resource.plural, key.clone())).cloned() else {
            return Err(error(StatusReason::NotFound, 404, format!("{action}: not found")));
        };
        let sent = incoming.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|v| !v.is_empty());
        let current = stored.pointer("/metadata/resourceVersion").and_then(Value::as_str);
        if sent.is_some() && sent != current {
            return Err(error(StatusReason::Conflict, 409, format!("{action}: the object has been modified")));
        }
        let next = merge_update(&stored, incoming, status_only);
        let written = self.commit(&mut state, resource, key.clone(), WatchEventType::Modified, next);
        state.writes.push(format!("{verb} {} {key}", resource.plural));
        drop(state);
        Self::typed(written, &action)
    }

    fn patched<T: Object>(&self, verb: &'static str, key: &ObjectKey, patch: &Value, status_only: bool) -> Result<T, ClientError> {
        let resource = &T::TYPE;
        let stored = self.lock().objects.get(&(resource.plural, key.clone())).cloned();
        let Some(mut next) = stored else {
            return Err(error(StatusReason::NotFound, 404, format!("{verb} {} {key}: not found", resource.plural)));
        };
        merge_patch(&mut next, patch);
        if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        self.write(verb, key, next, status_only)
    }
}

impl Client for FakeClient {
    async fn list_raw(&self, resource: &ResourceType, namespace: Option<&str>, options: &ListOptions) -> Result<List<Value>, ClientError> {
                let mut state = self.lock();
        self.check_failure(&mut state, "list", resource, &format!("listing {}", resource.plural))?;
        let items = state
            .objects
            .iter()
            .filter(|((p, k), v)| *p == resource.plural && (namespace.is_none() || k.namespace.as_deref() == namespace) && selected(v, options))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(List { api_version: "v1".into(), kind: format!("{}List", resource.kind), metadata: ListMeta { resource_version: state.revision.to_string() }, items })
    }

    async fn watch_raw(&self, resource: &ResourceType, namespace: Option<&str>, resource_version: &str, options: &ListOptions) -> Result<WatchStream, ClientError> {
                let action = format!("watching {}", resource.plural);
        let mut state = self.lock();
        self.check_failure(&mut state, "watch", resource, &action)?;
        let from: u64 = resource_version.parse().unwrap_or(0);
        if from < state.compacted {
            return Err(error(StatusReason::Expired, 410, format!("{action}: revision {from} is compacted")));
        }
        let namespace = namespace.map(String::from);
        let options = options.clone();
        let plural = resource.plural;
        let wanted = move |e: &Event| e.revision > from && e.plural == plural && (namespace.is_none() || e.namespace == namespace) && selected(&e.event.object, &options);
        let past: Vec<Event> = state.history.iter().filter(|e| wanted(e)).cloned().collect();
        let receiver = self.events.subscribe();
        drop(state);
        let past = futures::stream::iter(past.into_iter().map(|e| Ok(e.event)));
        let live = futures::stream::unfold(Some(receiver), move |receiver| {
            let wanted = wanted.clone();
            let action = action.clone();
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(Message::Event(e)) if wanted(&e) => return Some((Ok(e.event), Some(receiver))),
                        Ok(Message::Event(_)) => {}
                        Ok(Message::End { gone: false }) | Err(broadcast::error::RecvError::Closed) => return None,
                        Ok(Message::End { gone: true }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((Err(error(StatusReason::Expired, 410, format!("{action}: too old"))), None));
                        }
                    }
                }
            }
        });
        Ok(past.chain(live).boxed())
    }

    async fn get<T: Object>(&self, key: &ObjectKey) -> Result<T, ClientError> {
        let resource = &T::TYPE;
        let action = format!("getting {} {key}", resource.plural);
        let mut state = self.lock();
        self.check_failure(&mut state, "get", resource, &action)?;
        let found = state.objects.get(&(resource.plural, key.clone())).cloned();
        drop(state);
        match found {
            Some(v) => Self::typed(v, &action),
            None => Err(error(StatusReason::NotFound, 404, format!("{action}: not found"))),
        }
    }

    async fn create<T: Object>(&self, object: &T) -> Result<T, ClientError> {
        let resource = &T::TYPE;
        let mut value = serde_json::to_value(object).map_err(|source| ClientError::Decode { action: "encoding".into(), source })?;
        let namespace = resource.namespaced.then(|| object.key().namespace_or_default().to_string());
        let action = format!("creating {}", resource.plural);
        check_type(resource, &mut value).map_err(|m| error(StatusReason::BadRequest, 400, format!("{action}: {m}")))?;
        let mut state = self.lock();
        self.check_failure(&mut state, "create", resource, &action)?;
        let mut name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        if name.is_empty() {
            let prefix = value.pointer("/metadata/generateName").and_then(Value::as_str).unwrap_or("");
            if prefix.is_empty() {
                return Err(error(StatusReason::Invalid, 422, format!("{action}: no name")));
            }
            name = format!("{prefix}{}", name_suffix());
            value["metadata"]["name"] = json!(name);
        }
        let key = ObjectKey { namespace: namespace.clone(), name };
        if state.objects.contains_key(&(resource.plural, key.clone())) {
            return Err(error(StatusReason::AlreadyExists, 409, format!("{action} {key}: already exists")));
        }
        prepare_create(&mut value, namespace.as_deref());
        let written = self.commit(&mut state, resource, key.clone(), WatchEventType::Added, value);
        state.writes.push(format!("create {} {key}", resource.plural));
        drop(state);
        Self::typed(written, &action)
    }

    async fn replace<T: Object>(&self, object: &T) -> Result<T, ClientError> {
        let value = serde_json::to_value(object).map_err(|source| ClientError::Decode { action: "encoding".into(), source })?;
        self.write("replace", &object.key(), value, false)
    }

    async fn replace_status<T: Object>(&self, object: &T) -> Result<T, ClientError> {
        let value = serde_json::to_value(object).map_err(|source| ClientError::Decode { action: "encoding".into(), source })?;
        self.write("replace_status", &object.key(), value, true)
    }

    async fn patch<T: Object>(&self, key: &ObjectKey, patch: &Value) -> Result<T, ClientError> {
        self.patched("patch", key, patch, false)
    }

    async fn patch_status<T: Object>(&self, key: &ObjectKey, patch: &Value) -> Result<T, ClientError> {
        self.patched("patch_status", key, patch, true)
    }

    async fn delete<T: Object>(&self, key: &ObjectKey) -> Result<(), ClientError> {
        let resource = &T::TYPE;
        let action = format!("deleting {} {key}", resource.plural);
        let mut state = self.lock();
        self.check_failure(&mut state, "delete", resource, &action)?;
        let Some(stored) = state.objects.get(&(resource.plural, key.clone())).cloned() else {
            return Err(error(StatusReason::NotFound, 404, format!("{action}: not found")));
        };
        self.commit(&mut state, resource, key.clone(), WatchEventType::Deleted, stored);
        state.writes.push(format!("delete {} {key}", resource.plural));
        Ok(())
    }

    /// The fake deletes at once whatever the options say, after checking a uid precondition.
    async fn delete_with<T: Object>(&self, key: &ObjectKey, options: &Value) -> Result<(), ClientError> {
        let stored_uid = self.lock().objects.get(&(T::TYPE.plural, key.clone())).and_then(|v| v.pointer("/metadata/uid").and_then(Value::as_str).map(String::from));
        let uid = options.pointer("/preconditions/uid").and_then(Value::as_str);
        if let Some(uid) = uid
            && stored_uid.as_deref().is_some_and(|s| s != uid)
        {
            return Err(error(StatusReason::Conflict, 409, format!("deleting {} {key}: Precondition failed: UID in precondition: {uid}, UID in object meta: {}", T::TYPE.plural, stored_uid.unwrap_or_default())));
        }
        self.delete::<T>(key).await
    }
}
