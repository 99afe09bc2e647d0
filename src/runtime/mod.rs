//! The one controller runtime every control loop is built on, in the style of kube-runtime.
//!
//! # Layout
//! - [`object`]: [`Object`] (a typed API object that knows its resource and metadata) and
//!   [`ObjectKey`] (`namespace/name`), the unit of work.
//! - [`client`]: [`Client`], the typed API calls the runtime and the controllers make,
//!   implemented by [`crate::client::ApiClient`] and, for unit tests, by `fake::FakeClient`.
//! - [`store`]: [`Store`], a typed cache fed by a reflector (list, then watch from the list's
//!   revision, list again on 410 Gone or when the watch ends). An object that does not decode
//!   into the type is skipped with a logged error naming it; the loop never stops for it.
//! - [`queue`]: [`WorkQueue`], keys with a time they are due, de-duplicated per key, and never
//!   handed out twice at once.
//! - [`events`]: [`events::Recorder`], which records (and aggregates) the Events controllers report.
//! - [`controller`]: [`Controller`], which feeds the queue from store changes (mapped to keys),
//!   periodic resyncs and requeues, runs `reconcile(key, ctx) -> Result<Action, E>`, and backs a
//!   failing key off exponentially (reset by its next success).
//!
//! Guarantees: a reconcile of a key never runs while another of the same key does (a change in
//! between queues it once more, after); a key queued many times before it runs is reconciled once;
//! reconciles start only once every store of the controller has made its first list.

pub mod client;
pub mod controller;
pub mod events;
#[cfg(test)]
pub mod fake;
pub mod object;
pub mod queue;
pub mod store;

pub use client::Client;
pub use controller::{Action, Backoff, Controller};
pub use object::{Object, ObjectKey};
pub use queue::WorkQueue;
pub use store::Store;

#[cfg(test)]
mod tests;
