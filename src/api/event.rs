//! `Event` (v1): something a component saw happen to an object (`Scheduled`, `SuccessfulCreate`,
//! `Started`, `BackOff`), as `kubectl get events` and `kubectl describe` show them. Events are
//! aggregated (one object per component, object, reason and message, its `count` raised on each
//! repeat, see [`crate::runtime::events`]) and expire an hour after their last occurrence.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ObjectMeta, UnknownFields};
use super::resource::{EVENTS, Resource, ResourceType};
use super::service::ObjectReference;
use super::time::{MicroTime, Time};

/// `type` of an event about normal operation.
pub const NORMAL: &str = "Normal";
/// `type` of an event about something that went wrong.
pub const WARNING: &str = "Warning";

/// One (aggregated) occurrence of something that happened to `involvedObject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object the event is about.
    #[serde(default)]
    pub involved_object: ObjectReference,
    /// A short, machine-readable CamelCase reason (`Scheduled`, `FailedScheduling`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The component (and host) that reported it.
    #[serde(default)]
    pub source: EventSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Time>,
    /// How many times it happened.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: i32,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    #[schemars(extend("enum" = ["Normal", "Warning"]))]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_component: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reporting_instance: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl Resource for Event {
    const TYPE: ResourceType = EVENTS;
}

/// Who reported an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: UnknownFields,
}

impl Event {
    /// When it last happened (`lastTimestamp`, else `eventTime`, else when the object was made).
    pub fn last_seen(&self) -> Option<Time> {
        self.last_timestamp.or_else(|| self.event_time.map(Time::from)).or(self.metadata.creation_timestamp)
    }
}
