//! How library code reports progress without drawing anything itself.
//!
//! Long operations call a [`Reporter`]; the CLI implements it with indicatif
//! bars on a terminal and plain lines otherwise. Tests use [`NoReport`] or
//! [`RecordingReport`].

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Receives progress from long-running library operations.
pub trait Reporter: Send + Sync {
    /// A new phase starts (`network`, `instances`, `load balancer`, ...).
    fn phase(&self, name: &str);
    /// Something was done, e.g. `created subnet 10.0.0.0/20 in us-east-1a`.
    fn done(&self, message: &str);
    /// One tracked item (an instance, a node) is in a new state; items are shown side by side while waiting.
    fn item(&self, key: &str, status: &str);
    /// A tracked item reached its goal.
    fn item_done(&self, key: &str, status: &str);
    /// Something noteworthy that is not an error.
    fn warn(&self, message: &str);
}

/// A reporter that ignores everything.
pub struct NoReport;

impl Reporter for NoReport {
    fn phase(&self, _: &str) {}
    fn done(&self, _: &str) {}
    fn item(&self, _: &str, _: &str) {}
    fn item_done(&self, _: &str, _: &str) {}
    fn warn(&self, _: &str) {}
}

/// The last state reported for each item, so that reporters that write lines show a state once
/// however often a wait reports it, and again only when it changes.
#[derive(Default)]
pub struct ItemStates {
    last: Mutex<BTreeMap<String, String>>,
}

impl ItemStates {
    /// Records `status` as `key`'s state; true when it differs from the state recorded before.
    pub fn changed(&self, key: &str, status: &str) -> bool {
        // A poisoned map still holds valid states: a panic elsewhere must not silence progress.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.insert(key.to_string(), status.to_string()).as_deref() != Some(status)
    }
}

/// A reporter that writes log lines (`tracing`), for loops running on a node. Item states are
/// logged only when they change, so that waits do not flood the journal.
#[derive(Default)]
pub struct LogReport {
    states: ItemStates,
}

impl LogReport {
    fn changed(&self, key: &str, status: &str) -> bool {
        self.states.changed(key, status)
    }
}

impl Reporter for LogReport {
    fn phase(&self, name: &str) {
        tracing::info!("{name}");
    }
    fn done(&self, message: &str) {
        tracing::info!("{message}");
    }
    fn item(&self, key: &str, status: &str) {
        if self.changed(key, status) {
            tracing::info!("{key}: {status}");
        }
    }
    fn item_done(&self, key: &str, status: &str) {
        if self.changed(key, status) {
            tracing::info!("{key}: {status}");
        }
    }
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}

/// A reporter that keeps every event as a line, for tests.
#[derive(Default)]
pub struct RecordingReport {
    lines: Mutex<Vec<String>>,
}

impl RecordingReport {
    /// Every event so far, as `kind: text` lines.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }
}

impl Reporter for RecordingReport {
    fn phase(&self, name: &str) {
        self.push(format!("phase: {name}"));
    }
    fn done(&self, message: &str) {
        self.push(format!("done: {message}"));
    }
    fn item(&self, key: &str, status: &str) {
        self.push(format!("item: {key}: {status}"));
    }
    fn item_done(&self, key: &str, status: &str) {
        self.push(format!("item done: {key}: {status}"));
    }
    fn warn(&self, message: &str) {
        self.push(format!("warn: {message}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_state_counts_as_changed_once_and_again_after_another_state() {
        let states = ItemStates::default();
        assert!(states.changed("w0", "not ready yet"));
        assert!(!states.changed("w0", "not ready yet"));
        assert!(states.changed("w1", "not ready yet"), "items are apart");
        assert!(states.changed("w0", "Ready"));
        assert!(!states.changed("w0", "Ready"));
        assert!(states.changed("w0", "not ready yet"), "a state that comes back is a change");
    }
}
