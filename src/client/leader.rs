//! Leader election on a `Lease` in `kube-system`, as client-go's leaderelection does it for
//! kube-scheduler and kube-controller-manager: on a highly available control plane every master
//! runs the scheduler, the controllers and the cloud controller manager, and a lease per loop lets
//! exactly one of each act.
//!
//! A candidate takes the lease when it is free or when its holder has not renewed it for the lease
//! duration (15 s), as measured on the candidate's own clock from when it last saw the lease change
//! (so clock skew between masters does not matter). The leader renews every retry period (2 s);
//! when it has not managed to renew for the renew deadline (10 s) it stops its work before anyone
//! else may take the lease (10 s < 15 s), then competes again. Writes are compare-and-swap on the
//! lease's `resourceVersion`, so two candidates never both win. A master that is stopped cleanly
//! gives its leases up ([`LeaderElection::release`], client-go's `ReleaseOnCancel`), so that a
//! restart or an upgrade hands them over within one retry period instead of one lease duration.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{ApiClient, ClientError};
use crate::api::lease::{Lease, LeaseSpec};
use crate::api::meta::ObjectMeta;
use crate::api::resource::LEASES;
use crate::api::time::MicroTime;

/// The namespace of the control loops' leases.
pub const LEADER_LEASE_NAMESPACE: &str = "kube-system";

/// One election: which lease, who we are, and its timings.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// The lease's name, e.g. `kube-scheduler`.
    pub lease: String,
    /// This candidate's identity (the master's node name and instance id).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// A task that is aborted when its handle is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What this candidate last saw of the lease, and when (on its own clock).
#[derive(Debug, Clone)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

impl LeaderElection {
    /// kube-controller-manager's timings: a 15 s lease, renewed within 10 s, tried every 2 s.
    pub fn new(lease: &str, identity: &str) -> Self {
        LeaderElection {
            lease: lease.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Runs `work` whenever this candidate leads, forever: acquires the lease (retrying every
    /// retry period), spawns `work()`, renews; when renewing has failed for the renew deadline (or
    /// another holder is seen) the work is aborted and the candidate competes again. `work` must
    /// keep everything it acts with inside its own task, so that aborting it stops it.
    pub async fn run<F, Fut>(self, client: ApiClient, work: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut observed: Option<Observed> = None;
        loop {
            // Candidate.
            loop {
                match self.try_acquire_or_renew(&client, &mut observed).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::debug!(lease = %self.lease, error = %e, "trying to acquire the lease"),
                }
                tokio::time::sleep(self.retry_period).await;
            }
            tracing::info!(lease = %self.lease, identity = %self.identity, "became the leader");
            // Aborted when leadership ends, and when this election itself is dropped.
            let mut task = AbortOnDrop(tokio::spawn(work()));
            let mut renewed = Instant::now();
            // Whether the task's handle gave its output already (polling it again would panic).
            let mut ended = false;
            // Leader.
            let reason = loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.retry_period) => {}
                    _ = &mut task.0 => {
                        ended = true;
                        break "the work ended".to_string();
                    }
                }
                match self.try_acquire_or_renew(&client, &mut observed).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break format!("another candidate ({:?}) holds the lease", observed.as_ref().and_then(|o| o.holder.clone())),
                    Err(e) => {
                        if renewed.elapsed() >= self.renew_deadline {
                            break format!("could not renew for {:?}: {e}", self.renew_deadline);
                        }
                        tracing::debug!(lease = %self.lease, error = %e, "renewing the lease");
                    }
                }
            };
            task.0.abort();
            if !ended {
                let _ = (&mut task.0).await;
            }
            tracing::warn!(lease = %self.lease, identity = %self.identity, "stopped leading: {reason}");
            // Work that ended by itself starts again, but not in a tight loop.
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Gives the lease up when this candidate holds it: the holder is cleared (and the duration
    /// cut to 1 s), so another candidate takes it on its next try instead of waiting for it to
    /// expire. Call it once the election's task has stopped, so that nothing renews it again.
    /// Ok(true) when the lease was released.
    pub async fn release(&self, client: &ApiClient) -> Result<bool, ClientError> {
        let current = match client.get::<Lease>(&LEASES, Some(LEADER_LEASE_NAMESPACE), &self.lease).await {
            Ok(lease) => lease,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        if current.spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let mut next = current;
        next.spec.holder_identity = None;
        next.spec.lease_duration_seconds = Some(1);
        next.spec.renew_time = Some(MicroTime::now());
        match client.replace(&LEASES, Some(LEADER_LEASE_NAMESPACE), &self.lease, &next).await {
            Ok(_) => Ok(true),
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt: Ok(true) when this candidate holds the lease afterwards.
    async fn try_acquire_or_renew(&self, client: &ApiClient, observed: &mut Option<Observed>) -> Result<bool, ClientError> {
        let now = MicroTime::now();
        let current = match client.get::<Lease>(&LEASES, Some(LEADER_LEASE_NAMESPACE), &self.lease).await {
            Ok(lease) => lease,
            Err(e) if e.is_not_found() => {
                let lease = Lease {
                    api_version: LEASES.api_version(),
                    kind: LEASES.kind.into(),
                    metadata: ObjectMeta::namespaced(LEADER_LEASE_NAMESPACE, &self.lease),
                    spec: self.held_spec(now, now, 0),
                    ..Default::default()
                };
                return match client.create(&LEASES, Some(LEADER_LEASE_NAMESPACE), &lease).await {
                    Ok(_) => {
                        *observed = Some(Observed { holder: Some(self.identity.clone()), renew_time: Some(now), at: Instant::now() });
                        Ok(true)
                    }
                    Err(e) if e.is_already_exists() || e.is_conflict() => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let spec = &current.spec;
        let changed = observed.as_ref().is_none_or(|o| o.holder != spec.holder_identity || o.renew_time != spec.renew_time);
        if changed {
            *observed = Some(Observed { holder: spec.holder_identity.clone(), renew_time: spec.renew_time, at: Instant::now() });
        }
        let seen = observed.as_ref().expect("set above");
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec.lease_duration_seconds.map(|s| Duration::from_secs(s.max(1) as u64)).unwrap_or(self.lease_duration);
        if holder.is_some() && !mine && seen.at.elapsed() < duration {
            return Ok(false);
        }
        let mut next = current.clone();
        next.spec = if mine {
            self.held_spec(spec.acquire_time.unwrap_or(now), now, spec.lease_transitions.unwrap_or(0))
        } else {
            self.held_spec(now, now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        match client.replace(&LEASES, Some(LEADER_LEASE_NAMESPACE), &self.lease, &next).await {
            Ok(_) => {
                *observed = Some(Observed { holder: Some(self.identity.clone()), renew_time: Some(now), at: Instant::now() });
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn held_spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn quick(identity: &str) -> LeaderElection {
        LeaderElection {
            lease: "test-loop".into(),
            identity: identity.into(),
            // Whole seconds: the lease object carries its duration in seconds.
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1300),
            retry_period: Duration::from_millis(100),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_candidate_leads_and_another_takes_over_when_it_dies() {
        let client = crate::client::test_server::start().await;
        let (active, most, started) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let work = |who: &'static str| {
            let (active, most, started) = (active.clone(), most.clone(), started.clone());
            move || {
                let (active, most, started) = (active.clone(), most.clone(), started.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Counted down when the task is aborted.
                    struct Leave(Arc<AtomicUsize>);
                    impl Drop for Leave {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _leave = Leave(active);
                    tracing::debug!("{who} works");
                    std::future::pending::<()>().await;
                }
            }
        };
        let a = tokio::spawn(quick("a").run(client.clone(), work("a")));
        let b = tokio::spawn(quick("b").run(client.clone(), work("b")));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let lease: Lease = client.get(&LEASES, Some(LEADER_LEASE_NAMESPACE), "test-loop").await.unwrap();
        let first = lease.spec.holder_identity.clone().unwrap();
        assert_eq!((started.load(Ordering::SeqCst), most.load(Ordering::SeqCst)), (1, 1), "exactly one leader while both live");

        // The leader's process dies: its election and its work stop at once, without releasing.
        let (dead, survivor) = if first == "a" { (a, b) } else { (b, a) };
        dead.abort();
        let died = tokio::time::Instant::now();
        loop {
            let lease: Lease = client.get(&LEASES, Some(LEADER_LEASE_NAMESPACE), "test-loop").await.unwrap();
            if lease.spec.holder_identity.as_deref() != Some(first.as_str()) {
                assert_eq!(lease.spec.lease_transitions, Some(1));
                break;
            }
            assert!(died.elapsed() < Duration::from_secs(5), "no takeover within 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = died.elapsed();
        assert!(took >= Duration::from_millis(1800), "the lease was taken before it expired ({took:?})");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(started.load(Ordering::SeqCst), 2, "the survivor started its work");
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
        survivor.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_that_ends_by_itself_is_started_again_while_leading() {
        let client = crate::client::test_server::start().await;
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        let election = tokio::spawn(quick("a").run(client.clone(), move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
        // Each round: the work ends, the election waits a retry period, renews its own lease, starts it again.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!election.is_finished(), "the election stopped (panicked?) after its work ended");
        assert!(started.load(Ordering::SeqCst) >= 3, "started {} times in 1.2 s", started.load(Ordering::SeqCst));
        let lease: Lease = client.get(&LEASES, Some(LEADER_LEASE_NAMESPACE), "test-loop").await.unwrap();
        assert_eq!(lease.spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(lease.spec.lease_transitions, Some(0), "renewed as its own, never handed over");
        election.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_stopped_cleanly_releases_the_lease_and_another_takes_it_at_once() {
        let client = crate::client::test_server::start().await;
        let (a, b) = (quick("a"), quick("b"));
        let task_a = tokio::spawn(a.clone().run(client.clone(), std::future::pending::<()>));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let task_b = tokio::spawn(b.clone().run(client.clone(), std::future::pending::<()>));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let holder = |client: ApiClient| async move {
            let lease: Lease = client.get(&LEASES, Some(LEADER_LEASE_NAMESPACE), "test-loop").await.unwrap();
            lease.spec.holder_identity
        };
        assert_eq!(holder(client.clone()).await.as_deref(), Some("a"));
        // Only the holder can release it.
        assert!(!b.release(&client).await.unwrap(), "b does not hold the lease");
        assert_eq!(holder(client.clone()).await.as_deref(), Some("a"));

        task_a.abort();
        let _ = task_a.await;
        let stopped = tokio::time::Instant::now();
        assert!(a.release(&client).await.unwrap(), "a held the lease");
        loop {
            if holder(client.clone()).await.as_deref() == Some("b") {
                break;
            }
            assert!(stopped.elapsed() < Duration::from_secs(1), "b did not take the released lease within its retry period");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Well before the 2 s the lease would have needed to expire.
        assert!(stopped.elapsed() < Duration::from_millis(500), "took {:?}", stopped.elapsed());
        assert!(!a.release(&client).await.unwrap(), "a no longer holds it");
        task_b.abort();
    }
}
