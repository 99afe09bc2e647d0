//! The deployment controller: Deployment → one ReplicaSet per pod template (named
//! `<deployment>-<hash>`, label `pod-template-hash`) → pods, all tied by controller owner
//! references.
//!
//! Two controllers on the [`runtime`](crate::runtime), level-triggered from its stores: one
//! reconciles a Deployment (keyed by it; its ReplicaSets and their pods map to it), the other a
//! ReplicaSet (its pods map to it, a Deployment to the sets it owns). A Deployment's new
//! ReplicaSet is scaled up while old ones are scaled down within `maxSurge` (pods above
//! `replicas`) and `maxUnavailable` (ready pods below `replicas`). A ReplicaSet creates or deletes
//! pods to match its `replicas` (unbound and not-ready pods go first). ReplicaSets and pods whose
//! owner is gone are deleted (garbage collection). After its writes a reconcile waits until the
//! store shows them, so a pod is never made twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::deployment::{Deployment, DeploymentCondition, DeploymentStatus, ANNOTATIONS_NOT_COPIED, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, ReplicaSet, ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus};
use crate::api::pod::{Pod, PodTemplateSpec};
use crate::api::time::Time;
use crate::api::{ObjectMeta, OwnerReference};
use crate::client::{ClientError, ListOptions};
use crate::api::event::{NORMAL, WARNING};
use crate::runtime::events::Recorder;
use crate::runtime::{Action, Client, Controller, Object, ObjectKey, Store};

/// How often every object is reconciled without any change.
pub const RESYNC: Duration = Duration::from_secs(5);
/// The largest batch of pod creates in flight at once.
pub const MAX_CREATE_BATCH: usize = 32;

/// A short stable hash of a pod template (10 hex digits), as the `pod-template-hash` label.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))[..10].to_string()
}

fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..Default::default()
    }
}

fn owned_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.controller_owner().is_some_and(|o| o.uid == owner_uid)
}

/// Makes `owner` the controller of each of `orphans`. `Some(the highest revision written)` when
/// there was any (one lost to a race counts: the next pass sees how it ended), else `None`.
async fn adopt<'a, C: Client, T: Object>(client: &C, orphans: impl Iterator<Item = &'a T>, owner: OwnerReference) -> Result<Option<u64>, ClientError> {
    let mut adopted = None;
    for orphan in orphans {
        let mut next = orphan.clone();
        next.meta_mut().owner_references.push(owner.clone());
        match client.replace(&next).await {
            Ok(written) => {
                tracing::info!(owner = %owner.name, kind = T::TYPE.kind, object = %orphan.meta().name, "adopted");
                adopted = Some(adopted.unwrap_or(0).max(rev_of(written.meta())));
            }
            Err(ClientError::Api { code: 404 | 409, .. }) => adopted = Some(adopted.unwrap_or(0)),
            Err(e) => return Err(e),
        }
    }
    Ok(adopted)
}

/// Whether an object may be adopted by a controller with `selector`: it matches, has no
/// controller, and neither is being deleted.
fn adoptable(meta: &ObjectMeta, selector: &crate::api::deployment::LabelSelector, owner_deleting: bool) -> bool {
    !owner_deleting && meta.deletion_timestamp.is_none() && meta.controller_owner().is_none() && selector.matches(&meta.labels)
}

fn is_active(pod: &Pod) -> bool {
    !pod.is_terminating() && !pod.is_terminal()
}

/// The replica counts a rolling update should move to: `(new, [old...])`, given the wanted
/// replicas, the limits, the current `replicas` of the new and old sets and the ready pods of
/// each.
pub fn rolling_step(replicas: u32, max_surge: u32, max_unavailable: u32, new: (u32, u32), old: &[(u32, u32)]) -> (u32, Vec<u32>) {
    let old_total: u32 = old.iter().map(|o| o.0).sum();
    if old_total == 0 {
        return (replicas, old.iter().map(|_| 0).collect());
    }
    // Scale up the new set within the surge.
    let allowed = replicas + max_surge;
    let current = new.0 + old_total;
    let new_target = if current < allowed { (new.0 + (allowed - current)).min(replicas) } else { new.0.min(replicas) };
    // Scale down old sets: their not-ready pods freely, ready ones while enough stay ready.
    let min_available = replicas.saturating_sub(max_unavailable);
    let ready_total: u32 = new.1 + old.iter().map(|o| o.1).sum::<u32>();
    let mut budget = ready_total.saturating_sub(min_available);
    // Never scale old sets below what keeps the total at `replicas` once the new set is full.
    let mut removable_total = (new_target + old_total).saturating_sub(replicas).max(budget.min(old_total));
    let mut targets = Vec::new();
    for &(count, ready) in old {
        let unready = count.saturating_sub(ready);
        let remove_unready = unready.min(removable_total);
        removable_total -= remove_unready;
        let remove_ready = ready.min(budget).min(removable_total);
        budget -= remove_ready;
        removable_total -= remove_ready;
        targets.push(count - remove_unready - remove_ready);
    }
    (new_target, targets)
}

/// Revisions written in a pass, to wait for before the next.
#[derive(Default)]
struct Written {
    replica_sets: u64,
    pods: u64,
}

/// A ReplicaSet's `deployment.kubernetes.io/revision`.
fn revision_of(rs: &ReplicaSet) -> Option<u64> {
    rs.metadata.annotations.get(REVISION_ANNOTATION)?.parse().ok()
}

/// Copies the Deployment's annotations (but the controller's own and kubectl's last-applied) onto
/// a ReplicaSet's metadata, as Kubernetes does (so `kubernetes.io/change-cause` shows in `rollout
/// history` and comes back with `rollout undo`). Whether anything changed.
fn copy_annotations(d: &Deployment, meta: &mut ObjectMeta) -> bool {
    let mut changed = false;
    for (key, value) in &d.metadata.annotations {
        if !ANNOTATIONS_NOT_COPIED.contains(&key.as_str()) && meta.annotations.get(key) != Some(value) {
            meta.annotations.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    changed
}

/// Raises a set's revision to `revision`, keeping the one it had in its revision history.
/// Whether it changed.
fn set_revision(meta: &mut ObjectMeta, revision: u64) -> bool {
    let current = meta.annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    if current >= revision {
        return false;
    }
    if current > 0 {
        let history = match meta.annotations.get(REVISION_HISTORY_ANNOTATION) {
            Some(h) if !h.is_empty() => format!("{h},{current}"),
            _ => current.to_string(),
        };
        meta.annotations.insert(REVISION_HISTORY_ANNOTATION.into(), history);
    }
    meta.annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
    true
}

fn rev_of(meta: &ObjectMeta) -> u64 {
    meta.revision().unwrap_or(0)
}

/// The `Progressing` reason of a rollout past its `progressDeadlineSeconds`.
const TIMED_OUT: &str = "ProgressDeadlineExceeded";

/// Reconciles one Deployment: its ReplicaSets' sizes and its status.
async fn reconcile_deployment<C: Client>(client: &C, events: &Recorder<C>, d: &Deployment, sets: &[ReplicaSet], pods: &[Pod], written: &mut Written) -> Result<(), ClientError> {
    let ns = d.metadata.namespace_or_default().to_string();
    // Sets its selector matches that no controller owns (left by `delete --cascade=orphan`)
    // become this Deployment's, as Kubernetes' controller-ref manager adopts them; the next pass
    // counts them.
    let orphans = sets.iter().filter(|rs| rs.metadata.namespace_or_default() == ns && adoptable(&rs.metadata, &d.spec.selector, d.metadata.deletion_timestamp.is_some()));
    if let Some(rev) = adopt(client, orphans, owner_ref("apps/v1", "Deployment", &d.metadata)).await? {
        written.replica_sets = written.replica_sets.max(rev);
        return Ok(());
    }
    let hash = template_hash(&d.spec.template);
    let mut owned: Vec<&ReplicaSet> = sets.iter().filter(|rs| owned_by(&rs.metadata, &d.metadata.uid)).collect();
    owned.sort_by_key(|rs| (rs.metadata.annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0), rs.metadata.creation_timestamp));
    let replicas = d.spec.replicas();
    let new = owned.iter().find(|rs| rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL) == Some(&hash)).copied();
    // The new set's revision is one above every other set's: a rollback (`rollout undo`) makes an
    // old set new again, and it moves to the top with its earlier number in its history.
    let next_revision = owned.iter().filter(|rs| new.is_none_or(|n| n.metadata.uid != rs.metadata.uid)).filter_map(|rs| revision_of(rs)).max().unwrap_or(0) + 1;
    let new = match new {
        Some(rs) => {
            let mut next = rs.clone();
            let copied = copy_annotations(d, &mut next.metadata);
            let renumbered = set_revision(&mut next.metadata, next_revision);
            if copied || renumbered {
                let written_rs = client.replace(&next).await?;
                written.replica_sets = written.replica_sets.max(rev_of(&written_rs.metadata));
                written_rs
            } else {
                rs.clone()
            }
        }
        None => {
            let revision = next_revision;
            let mut template = d.spec.template.clone();
            template.metadata.labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
            let mut selector = d.spec.selector.clone();
            selector.match_labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
            let mut meta = ObjectMeta::namespaced(&ns, format!("{}-{hash}", d.metadata.name));
            meta.labels = template.metadata.labels.clone();
            copy_annotations(d, &mut meta);
            meta.annotations.insert(REVISION_ANNOTATION.into(), revision.to_string());
            meta.owner_references.push(owner_ref("apps/v1", "Deployment", &d.metadata));
            let only_set = owned.iter().all(|rs| rs.spec.replicas() == 0);
            let rs = ReplicaSet {
                metadata: meta,
                spec: ReplicaSetSpec { replicas: Some(if only_set && !d.spec.is_recreate() { replicas as i32 } else { 0 }), selector, template, min_ready_seconds: d.spec.min_ready_seconds, ..Default::default() },
                ..Default::default()
            };
            let created = client.create(&rs).await?;
            tracing::info!(deployment = %d.metadata.name, replicaset = %created.metadata.name, "created replica set");
            written.replica_sets = written.replica_sets.max(rev_of(&created.metadata));
            created
        }
    };
    let olds: Vec<&ReplicaSet> = owned.iter().filter(|rs| rs.metadata.uid != new.metadata.uid).copied().collect();
    let ready_of = |rs: &ReplicaSet| pods.iter().filter(|p| is_active(p) && owned_by(&p.metadata, &rs.metadata.uid) && p.is_ready()).count() as u32;
    let count_of = |rs: &ReplicaSet| pods.iter().filter(|p| is_active(p) && owned_by(&p.metadata, &rs.metadata.uid)).count() as u32;
    let (new_target, old_targets) = if d.spec.is_recreate() {
        let old_pods: u32 = olds.iter().map(|rs| count_of(rs)).sum();
        (if old_pods == 0 { replicas } else { 0 }, olds.iter().map(|_| 0).collect())
    } else {
        let (surge, unavailable) = d.spec.rolling_limits();
        // A set's ready pods count only up to its `replicas`: those above it are being deleted (the
        // ReplicaSet controller runs beside this one and the pod store may not show it yet), and
        // counting them would let more old pods go than maxUnavailable allows.
        let counted = |rs: &ReplicaSet| (rs.spec.replicas(), ready_of(rs).min(rs.spec.replicas()));
        let old: Vec<(u32, u32)> = olds.iter().map(|rs| counted(rs)).collect();
        rolling_step(replicas, surge, unavailable, counted(&new), &old)
    };
    let resize = |rs: &ReplicaSet, to: u32| {
        let mut next = rs.clone();
        next.spec.replicas = Some(to as i32);
        next
    };
    let mut updates = Vec::new();
    if new.spec.replicas() != new_target {
        updates.push(resize(&new, new_target));
    }
    for (rs, to) in olds.iter().zip(old_targets) {
        if rs.spec.replicas() != to {
            updates.push(resize(rs, to));
        }
    }
    for rs in updates {
        let was = owned.iter().find(|o| o.metadata.uid == rs.metadata.uid).map_or(0, |o| o.spec.replicas());
        let written_rs = client.replace(&rs).await?;
        tracing::info!(deployment = %d.metadata.name, replicaset = %rs.metadata.name, replicas = rs.spec.replicas(), "scaled replica set");
        let direction = if rs.spec.replicas() > was { "up" } else { "down" };
        events.record(d, NORMAL, "ScalingReplicaSet", format!("Scaled {direction} replica set {} from {was} to {}", rs.metadata.name, rs.spec.replicas()));
        written.replica_sets = written.replica_sets.max(rev_of(&written_rs.metadata));
    }
    // The Deployment carries its new set's revision (what `rollout history` marks as current).
    let revision = new.metadata.annotations.get(REVISION_ANNOTATION);
    if revision.is_some() && d.metadata.annotations.get(REVISION_ANNOTATION) != revision {
        let mut next = d.clone();
        next.metadata.annotations.insert(REVISION_ANNOTATION.into(), revision.cloned().unwrap_or_default());
        match client.replace(&next).await {
            // The next pass writes the status on the updated object.
            Ok(_) => return Ok(()),
            Err(ClientError::Api { code: 409, .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    // Status from the pods as they are.
    let all: Vec<&Pod> = pods.iter().filter(|p| is_active(p) && owned.iter().chain(std::iter::once(&&new)).any(|rs| owned_by(&p.metadata, &rs.metadata.uid))).collect();
    let ready = all.iter().filter(|p| p.is_ready()).count() as i32;
    let updated = count_of(&new) as i32;
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: all.len() as i32,
        updated_replicas: updated,
        ready_replicas: ready,
        available_replicas: ready,
        unavailable_replicas: (replicas as i32 - ready).max(0),
        conditions: conditions(d, &new.metadata.name, all.len() as i32, updated, ready),
        ..Default::default()
    };
    // A finished rollout drops the oldest empty sets beyond `revisionHistoryLimit`.
    let complete = status.updated_replicas == replicas as i32 && status.available_replicas >= replicas as i32 && status.replicas == replicas as i32;
    if complete {
        let empty: Vec<&&ReplicaSet> = olds.iter().filter(|rs| rs.spec.replicas() == 0 && count_of(rs) == 0 && rs.metadata.deletion_timestamp.is_none()).collect();
        for rs in empty.iter().take(empty.len().saturating_sub(d.spec.revision_history_limit())) {
            match client.delete::<ReplicaSet>(&ObjectKey::of(&rs.metadata)).await {
                Ok(()) | Err(ClientError::Api { code: 404 | 409, .. }) => tracing::info!(deployment = %d.metadata.name, replicaset = %rs.metadata.name, "deleted an old replica set beyond the revision history limit"),
                Err(e) => return Err(e),
            }
        }
    }
    if status != d.status {
        let mut next = d.clone();
        next.status = status;
        match client.replace_status(&next).await {
            Ok(_) | Err(ClientError::Api { code: 409, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The Deployment's `Available` and `Progressing` conditions, as Kubernetes' controller words them
/// (what `kubectl wait --for=condition=available` and `rollout status` read). A condition keeps its
/// transition time while its status holds, and its update time while its reason and message do.
fn conditions(d: &Deployment, new_set: &str, total: i32, updated: i32, available: i32) -> Vec<DeploymentCondition> {
    let replicas = d.spec.replicas() as i32;
    // Kubernetes' maxUnavailable is 0 for Recreate.
    let max_unavailable = if d.spec.is_recreate() { 0 } else { d.spec.rolling_limits().1 as i32 };
    let minimum = available >= replicas - max_unavailable;
    let complete = updated == replicas && available >= replicas && total == replicas;
    let before = &d.status;
    let progressed = updated > before.updated_replicas || available > before.ready_replicas || available > before.available_replicas || total - updated < before.replicas - before.updated_replicas;
    let now = Time::now();
    let condition = |kind: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let previous = d.status.conditions.iter().find(|c| c.condition_type == kind);
        let same_status = previous.is_some_and(|p| p.status == status);
        let same_words = same_status && previous.is_some_and(|p| p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(message.as_str()));
        DeploymentCondition {
            condition_type: kind.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: if same_words { previous.and_then(|p| p.last_update_time) } else { Some(now) },
            last_transition_time: if same_status { previous.and_then(|p| p.last_transition_time) } else { Some(now) },
            ..Default::default()
        }
    };
    let available = if minimum {
        condition("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
    } else {
        condition("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
    };
    // Progress (Kubernetes' `DeploymentProgressing`): more updated, ready or available pods, or
    // fewer old ones, than the last status said. Progress restarts the deadline's clock; a rollout
    // that makes none for `progressDeadlineSeconds` has timed out until it moves again.
    let previous = d.status.conditions.iter().find(|c| c.condition_type == "Progressing");
    let same_rollout = previous.is_some_and(|p| p.message.as_deref().is_some_and(|m| m.contains(&format!("{new_set:?}"))));
    let timed_out = same_rollout
        && !progressed
        && previous.is_some_and(|p| {
            p.reason.as_deref() == Some(TIMED_OUT)
                || p.last_update_time.is_some_and(|t| t.age() >= d.spec.progress_deadline())
        });
    let progressing = if complete {
        condition("Progressing", true, "NewReplicaSetAvailable", format!("ReplicaSet {new_set:?} has successfully progressed."))
    } else if timed_out {
        condition("Progressing", false, TIMED_OUT, format!("ReplicaSet {new_set:?} has timed out progressing."))
    } else {
        let mut c = condition("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet {new_set:?} is progressing."));
        if progressed {
            c.last_update_time = Some(now);
        }
        c
    };
    let mut out = vec![available, progressing];
    // Conditions others wrote (of other types) stay.
    out.extend(d.status.conditions.iter().filter(|c| c.condition_type != "Available" && c.condition_type != "Progressing").cloned());
    out
}

/// Pods to delete first: unbound, then not ready, then the newest.
fn deletion_order(mut pods: Vec<&Pod>) -> Vec<&Pod> {
    pods.sort_by_key(|p| (p.spec.bound_node().is_some(), p.is_ready(), std::cmp::Reverse(p.metadata.creation_timestamp), p.metadata.name.clone()));
    pods
}

/// Reconciles one ReplicaSet: creates or deletes pods to match `replicas`; writes its status.
async fn reconcile_replica_set<C: Client>(client: &C, events: &Recorder<C>, rs: &ReplicaSet, pods: &[Pod], written: &mut Written) -> Result<(), ClientError> {
    let ns = rs.metadata.namespace_or_default().to_string();
    // Finished pods (e.g. failed ones) are replaced, and removed so that they do not pile up.
    for done in pods.iter().filter(|p| p.is_terminal() && !p.is_terminating() && owned_by(&p.metadata, &rs.metadata.uid)) {
        match client.delete::<Pod>(&done.key()).await {
            Ok(()) => tracing::info!(pod = %done.metadata.name, phase = %done.phase(), "deleted finished pod"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // Pods its selector matches that no controller owns become this set's (adoption).
    let orphans = pods.iter().filter(|p| p.metadata.namespace_or_default() == ns && is_active(p) && adoptable(&p.metadata, &rs.spec.selector, rs.metadata.deletion_timestamp.is_some()));
    if let Some(rev) = adopt(client, orphans, owner_ref("apps/v1", "ReplicaSet", &rs.metadata)).await? {
        written.pods = written.pods.max(rev);
        return Ok(());
    }
    let mine: Vec<&Pod> = pods.iter().filter(|p| is_active(p) && owned_by(&p.metadata, &rs.metadata.uid)).collect();
    let failure = manage_replicas(client, events, rs, &mine, written).await.err();
    let ready = mine.iter().filter(|p| p.is_ready()).count() as i32;
    let status = ReplicaSetStatus {
        replicas: mine.len() as i32,
        fully_labeled_replicas: mine.iter().filter(|p| rs.spec.template.metadata.labels.iter().all(|(k, v)| p.metadata.labels.get(k) == Some(v))).count() as i32,
        ready_replicas: ready,
        available_replicas: ready,
        observed_generation: rs.metadata.generation,
        conditions: replica_failure(&rs.status.conditions, failure.as_ref()),
        ..Default::default()
    };
    if status != rs.status {
        let mut next = rs.clone();
        next.status = status;
        match client.replace_status(&next).await {
            Ok(_) | Err(ClientError::Api { code: 409, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    match failure {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// The `ReplicaFailure` condition as Kubernetes' ReplicaSet controller keeps it: `True` with the
/// reason (`FailedCreate`, `FailedDelete`) and the error while creating or deleting pods fails,
/// gone once it works again; the transition time is kept while the condition holds.
fn replica_failure(current: &[ReplicaSetCondition], failure: Option<&(&'static str, ClientError)>) -> Vec<ReplicaSetCondition> {
    let mut conditions: Vec<ReplicaSetCondition> = current.iter().filter(|c| c.condition_type != REPLICA_FAILURE).cloned().collect();
    if let Some((reason, e)) = failure {
        let since = current.iter().find(|c| c.condition_type == REPLICA_FAILURE && c.status == "True").and_then(|c| c.last_transition_time);
        conditions.push(ReplicaSetCondition {
            condition_type: REPLICA_FAILURE.into(),
            status: "True".into(),
            reason: Some((*reason).into()),
            message: Some(e.to_string()),
            last_transition_time: Some(since.unwrap_or_else(Time::now)),
            ..Default::default()
        });
    }
    conditions
}

const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Creates or deletes pods until the set has its replicas; the error says which of the two failed.
async fn manage_replicas<C: Client>(client: &C, events: &Recorder<C>, rs: &ReplicaSet, mine: &[&Pod], written: &mut Written) -> Result<(), (&'static str, ClientError)> {
    let ns = rs.metadata.namespace_or_default().to_string();
    let want = rs.spec.replicas() as usize;
    if mine.len() < want {
        let mut meta = ObjectMeta { generate_name: Some(format!("{}-", rs.metadata.name)), namespace: Some(ns.clone()), ..Default::default() };
        meta.labels = rs.spec.template.metadata.labels.clone();
        meta.annotations = rs.spec.template.metadata.annotations.clone();
        meta.owner_references.push(owner_ref("apps/v1", "ReplicaSet", &rs.metadata));
        let pod = Pod { metadata: meta, spec: rs.spec.template.spec.clone(), ..Default::default() };
        // Slow start (as Kubernetes' ReplicaSet controller): batches of 1, 2, 4, ... creates in
        // flight at once, so that 100 replicas cost a few round trips, and a create that fails
        // (quota, a bad template) fails once, not 100 times.
        let (mut remaining, mut batch) = (want - mine.len(), 1);
        while remaining > 0 {
            let n = batch.min(remaining);
            let results = futures::future::join_all((0..n).map(|_| client.create(&pod))).await;
            // Every create that worked is waited for by the next pass, even when another failed.
            let mut failed = None;
            for created in results {
                match created {
                    Ok(pod) => {
                        written.pods = written.pods.max(rev_of(&pod.metadata));
                        events.record(rs, NORMAL, "SuccessfulCreate", format!("Created pod: {}", pod.metadata.name));
                    }
                    Err(e) => {
                        if failed.is_none() {
                            events.record(rs, WARNING, "FailedCreate", format!("Error creating: {e}"));
                        }
                        failed = failed.or(Some(e));
                    }
                }
            }
            if let Some(e) = failed {
                return Err(("FailedCreate", e));
            }
            remaining -= n;
            batch = (batch * 2).min(MAX_CREATE_BATCH);
        }
        tracing::info!(replicaset = %rs.metadata.name, created = want - mine.len(), "created pods");
    } else if mine.len() > want {
        for pod in deletion_order(mine.to_vec()).into_iter().take(mine.len() - want) {
            match client.delete::<Pod>(&pod.key()).await {
                Ok(()) => {
                    written.pods = written.pods.max(rev_of(&pod.metadata) + 1);
                    events.record(rs, NORMAL, "SuccessfulDelete", format!("Deleted pod: {}", pod.metadata.name));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    events.record(rs, WARNING, "FailedDelete", format!("Error deleting: {e}"));
                    return Err(("FailedDelete", e));
                }
            }
        }
        tracing::info!(replicaset = %rs.metadata.name, deleted = mine.len() - want, "deleted pods");
    }
    Ok(())
}

/// The controllers' view of the cluster and their client.
pub struct Context<C> {
    pub client: C,
    /// Events as `deployment-controller` and `replicaset-controller` report them.
    pub deployment_events: Recorder<C>,
    pub replica_set_events: Recorder<C>,
    pub deployments: Store<Deployment>,
    pub replica_sets: Store<ReplicaSet>,
    pub pods: Store<Pod>,
}

impl<C: Client> Context<C> {
    /// Stores of every Deployment, ReplicaSet and Pod fed by `client`.
    pub fn new(client: C) -> Arc<Self> {
        Arc::new(Context {
            deployments: Store::reflect(client.clone(), None, ListOptions::default()),
            replica_sets: Store::reflect(client.clone(), None, ListOptions::default()),
            pods: Store::reflect(client.clone(), None, ListOptions::default()),
            deployment_events: Recorder::new(client.clone(), "deployment-controller", ""),
            replica_set_events: Recorder::new(client.clone(), "replicaset-controller", ""),
            client,
        })
    }
}

/// The key of the object of `kind` that controls `meta`, in the same namespace.
fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<ObjectKey> {
    let owner = meta.controller_owner().filter(|o| o.kind == kind)?;
    Some(ObjectKey::namespaced(meta.namespace_or_default(), owner.name.clone()))
}

/// The deployment controller: keyed by Deployment; a change of one of its ReplicaSets or of
/// their pods reconciles it.
pub fn deployment_controller<C: Client>(ctx: &Context<C>) -> Controller {
    let sets = ctx.replica_sets.clone();
    Controller::new("deployment")
        .owns(&ctx.deployments, RESYNC)
        .watches(&ctx.replica_sets, |rs: &ReplicaSet| controller_key(&rs.metadata, "Deployment").into_iter().collect())
        .watches(&ctx.pods, move |pod: &Pod| {
            let Some(set) = controller_key(&pod.metadata, "ReplicaSet").and_then(|k| sets.get(&k)) else { return Vec::new() };
            controller_key(&set.metadata, "Deployment").into_iter().collect()
        })
}

/// The ReplicaSet controller: keyed by ReplicaSet; a change of one of its pods, or of the
/// Deployment owning it, reconciles it; so does a pod whose set is gone (under the set's key).
pub fn replica_set_controller<C: Client>(ctx: &Context<C>) -> Controller {
    let sets = ctx.replica_sets.clone();
    let (orphan_pods, orphan_sets) = (ctx.pods.clone(), ctx.replica_sets.clone());
    // A set's own status writes (its ReplicaFailure condition, say) do not queue it again: that
    // would cut a failing set's back-off short. Its spec, metadata and its going do.
    let (store, seen) = (ctx.replica_sets.clone(), Arc::new(std::sync::Mutex::new(std::collections::HashMap::<ObjectKey, String>::new())));
    let all_sets = ctx.replica_sets.clone();
    Controller::new("replicaset")
        .watches(&ctx.replica_sets, move |rs: &ReplicaSet| {
            let key = ObjectKey::of(&rs.metadata);
            let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if store.get(&key).is_none_or(|now| now.metadata.uid != rs.metadata.uid) {
                seen.remove(&key);
                return vec![key];
            }
            let m = &rs.metadata;
            let fingerprint = serde_json::to_string(&(&m.uid, m.generation, &m.deletion_timestamp, &m.owner_references, &m.finalizers, &m.labels, &m.annotations, &rs.spec)).unwrap_or_default();
            if seen.insert(key.clone(), fingerprint.clone()).as_ref() == Some(&fingerprint) { Vec::new() } else { vec![key] }
        })
        .resync_every(RESYNC, move || all_sets.keys())
        .watches(&ctx.pods, |pod: &Pod| controller_key(&pod.metadata, "ReplicaSet").into_iter().collect())
        .watches(&ctx.deployments, move |d: &Deployment| sets.snapshot().iter().filter(|rs| owned_by(&rs.metadata, &d.metadata.uid)).map(|rs| ObjectKey::of(&rs.metadata)).collect())
        .resync_every(RESYNC, move || {
            // Pods of sets that went while no one watched.
            let uids: HashSet<String> = orphan_sets.snapshot().iter().map(|rs| rs.metadata.uid.clone()).collect();
            let mut keys: Vec<ObjectKey> = orphan_pods
                .snapshot()
                .iter()
                .filter(|p| p.metadata.controller_owner().is_some_and(|o| o.kind == "ReplicaSet" && !uids.contains(&o.uid)))
                .filter_map(|p| controller_key(&p.metadata, "ReplicaSet"))
                .collect();
            keys.dedup();
            keys
        })
}

/// Reconciles the Deployment at `key`: its ReplicaSets' sizes and its status; waits until the
/// store shows the sets it wrote.
pub async fn reconcile_deployment_key<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let Some(d) = ctx.deployments.get(&key) else { return Ok(Action::AwaitChange) };
    if d.metadata.deletion_timestamp.is_some() {
        // Being deleted: no more rollouts; in the foreground, its sets go first (theirs too).
        let sets = ctx.replica_sets.cloned();
        let owned: Vec<&ReplicaSet> = sets.iter().filter(|rs| owned_by(&rs.metadata, &d.metadata.uid)).collect();
        let keys = owned.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).map(|rs| ObjectKey::of(&rs.metadata)).collect();
        collect_in_foreground::<C, ReplicaSet, Deployment>(&ctx.client, &d, keys, owned.is_empty()).await?;
        return Ok(Action::AwaitChange);
    }
    let sets = ctx.replica_sets.cloned();
    let pods = ctx.pods.cloned();
    let mut written = Written::default();
    let result = reconcile_deployment(&ctx.client, &ctx.deployment_events, &d, &sets, &pods, &mut written).await;
    if written.replica_sets > 0 {
        ctx.replica_sets.wait_for(written.replica_sets, Duration::from_secs(5)).await;
    }
    result.map(|()| Action::AwaitChange)
}

/// Reconciles the ReplicaSet at `key`: its pods and status; deletes it when its Deployment is
/// gone, and the pods it left when it is gone itself. Waits until the store shows the pods written.
pub async fn reconcile_replica_set_key<C: Client>(key: ObjectKey, ctx: Arc<Context<C>>) -> Result<Action, ClientError> {
    let mut written = Written::default();
    let result = match ctx.replica_sets.get(&key) {
        None => delete_orphaned_pods(&ctx, &key, &mut written).await,
        Some(rs) if rs.metadata.deletion_timestamp.is_some() => {
            // Being deleted: no new pods; in the foreground, its pods go first.
            let pods: Vec<Arc<Pod>> = ctx.pods.snapshot().into_iter().filter(|p| owned_by(&p.metadata, &rs.metadata.uid)).collect();
            let keys = pods.iter().filter(|p| !p.is_terminating()).map(|p| ObjectKey::of(&p.metadata)).collect();
            collect_in_foreground::<C, Pod, ReplicaSet>(&ctx.client, &rs, keys, pods.is_empty()).await
        }
        Some(rs) => {
            let deployment_gone = rs.metadata.controller_owner().filter(|o| o.kind == "Deployment").is_some_and(|o| {
                !ctx.deployments.snapshot().iter().any(|d| d.metadata.uid == o.uid)
            });
            if deployment_gone {
                match ctx.client.delete::<ReplicaSet>(&key).await {
                    Ok(()) => {
                        tracing::info!(replicaset = %key, "deleted: its deployment is gone");
                        Ok(())
                    }
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(e) => Err(e),
                }
            } else {
                let pods = ctx.pods.cloned();
                reconcile_replica_set(&ctx.client, &ctx.replica_set_events, &rs, &pods, &mut written).await
            }
        }
    };
    if written.pods > 0 {
        ctx.pods.wait_for(written.pods, Duration::from_secs(5)).await;
    }
    result.map(|()| Action::AwaitChange)
}

/// The garbage collector's part in a `Foreground` delete of `owner` (marked, with the
/// `foregroundDeletion` finalizer): deletes the dependents at `keys` (sets themselves in the
/// foreground), and once `none_left` (not even terminating ones) takes the finalizer off, which
/// lets the API server remove the owner. An owner marked for another reason is left alone.
async fn collect_in_foreground<C: Client, D: Object, O: Object>(client: &C, owner: &O, keys: Vec<ObjectKey>, none_left: bool) -> Result<(), ClientError> {
    const FOREGROUND: &str = "foregroundDeletion";
    let meta = owner.meta();
    if !meta.finalizers.iter().any(|f| f == FOREGROUND) {
        return Ok(());
    }
    for key in keys {
        // Sets in the foreground too (their pods first); pods have no dependents.
        let policy = if D::TYPE.kind == "Pod" { "Background" } else { "Foreground" };
        match client.delete_with::<D>(&key, &serde_json::json!({ "propagationPolicy": policy })).await {
            Ok(()) => tracing::info!(owner = %meta.name, dependent = %key, "deleting a dependent first (foreground)"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if none_left {
        let rest: Vec<&String> = meta.finalizers.iter().filter(|f| *f != FOREGROUND).collect();
        let patch = serde_json::json!({ "metadata": { "finalizers": rest, "resourceVersion": meta.resource_version } });
        match client.patch::<O>(&ObjectKey::of(meta), &patch).await {
            Ok(_) => tracing::info!(owner = %meta.name, "its dependents are gone: foreground delete done"),
            Err(e) if e.is_not_found() || matches!(e, ClientError::Api { code: 409, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the pods controlled by a ReplicaSet named `key` that no longer exists.
async fn delete_orphaned_pods<C: Client>(ctx: &Context<C>, key: &ObjectKey, written: &mut Written) -> Result<(), ClientError> {
    let uids: HashSet<String> = ctx.replica_sets.snapshot().iter().map(|rs| rs.metadata.uid.clone()).collect();
    for pod in ctx.pods.snapshot() {
        let orphaned = controller_key(&pod.metadata, "ReplicaSet").as_ref() == Some(key) && pod.metadata.controller_owner().is_some_and(|o| !uids.contains(&o.uid));
        if !orphaned {
            continue;
        }
        match ctx.client.delete::<Pod>(&ObjectKey::of(&pod.metadata)).await {
            Ok(()) => written.pods = written.pods.max(rev_of(&pod.metadata) + 1),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs both controllers until dropped, on the given client (a `system:masters` identity).
pub async fn run<C: Client>(client: C) {
    let ctx = Context::new(client);
    tokio::join!(
        deployment_controller(&ctx).run(reconcile_deployment_key, ctx.clone()),
        replica_set_controller(&ctx).concurrency(4).run(reconcile_replica_set_key, ctx.clone()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_failure_holds_while_creates_fail_and_goes_when_they_work() {
        let forbidden = || ClientError::Api {
            action: "creating pod".into(),
            status: Box::new(crate::api::meta::Status::failure(crate::api::meta::StatusReason::Forbidden, 403, "exceeded quota")),
            code: 403,
        };
        let first = replica_failure(&[], Some(&("FailedCreate", forbidden())));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].condition_type.as_str(), first[0].status.as_str(), first[0].reason.as_deref()), ("ReplicaFailure", "True", Some("FailedCreate")));
        assert!(first[0].message.as_deref().unwrap().contains("exceeded quota"), "{first:?}");
        let mut old = first.clone();
        old[0].last_transition_time = Some(Time::parse("2026-01-01T00:00:00Z").unwrap());
        let again = replica_failure(&old, Some(&("FailedCreate", forbidden())));
        assert_eq!(again[0].last_transition_time, old[0].last_transition_time, "the transition time stays while the failure lasts");
        assert!(replica_failure(&old, None).is_empty(), "gone once pods can be created");
    }

    #[test]
    fn without_old_sets_the_new_set_gets_every_replica() {
        assert_eq!(rolling_step(3, 1, 0, (0, 0), &[]), (3, vec![]));
        assert_eq!(rolling_step(3, 1, 0, (3, 1), &[(0, 0)]), (3, vec![0]));
    }

    #[test]
    fn a_rolling_update_surges_first_and_keeps_replicas_minus_max_unavailable_ready() {
        // 3 replicas, surge 1, unavailable 0: one new pod first, no old pod removed.
        assert_eq!(rolling_step(3, 1, 0, (0, 0), &[(3, 3)]), (1, vec![3]));
        // The new pod is not ready yet: nothing more happens.
        assert_eq!(rolling_step(3, 1, 0, (1, 0), &[(3, 3)]), (1, vec![3]));
        // It is ready: one old pod goes.
        assert_eq!(rolling_step(3, 1, 0, (1, 1), &[(3, 3)]), (1, vec![2]));
        // Room again: a second new pod.
        assert_eq!(rolling_step(3, 1, 0, (1, 1), &[(2, 2)]), (2, vec![2]));
        assert_eq!(rolling_step(3, 1, 0, (3, 3), &[(1, 1)]), (3, vec![0]));
    }

    #[test]
    fn max_unavailable_lets_old_pods_go_before_new_ones_are_ready() {
        // 4 replicas, surge 0, unavailable 1.
        assert_eq!(rolling_step(4, 0, 1, (0, 0), &[(4, 4)]), (0, vec![3]));
        assert_eq!(rolling_step(4, 0, 1, (0, 0), &[(3, 3)]), (1, vec![3]));
    }

    #[test]
    fn not_ready_old_pods_are_removed_freely() {
        assert_eq!(rolling_step(3, 1, 0, (1, 0), &[(3, 0)]), (1, vec![2]));
    }

    #[test]
    fn template_hashes_are_stable_and_change_with_the_template() {
        let mut t = PodTemplateSpec::default();
        t.metadata.labels.insert("app".into(), "web".into());
        let h = template_hash(&t);
        assert_eq!(h.len(), 10);
        assert_eq!(h, template_hash(&t.clone()));
        t.metadata.labels.insert("v".into(), "2".into());
        assert_ne!(h, template_hash(&t));
    }
}
