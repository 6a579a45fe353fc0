//! Delivers the outbox. Each event is first fanned out: a pending delivery
//! row per sink that wants it. Then each sink works through its due
//! deliveries, oldest event first, one at a time, so a sink sees events in
//! order. A failed attempt is retried with exponential backoff until the
//! event is older than the give-up age. Every attempt is recorded. Since
//! all state is in the metadata store, a restart resumes where it stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::core::event::Event;
use crate::meta::{AttemptOutcome, LEASE_MS, MetaStore, now_ms};
use crate::metrics::{self, DeliveryResult};

/// Something that takes events: a webhook, a deploy rule.
pub trait Sink: Send + Sync {
    /// Unique and stable across restarts: delivery rows are keyed by it.
    fn name(&self) -> &str;
    fn wants(&self, event: &Event) -> bool;
    /// `Ok(detail)` when delivered; `Err(detail)` to retry later.
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<String, String>>;
    /// Checks the sink works without changing anything it points at (a
    /// webhook gets a `ping` event); the outcome is not recorded.
    fn test(&self) -> BoxFuture<'_, Result<String, String>>;
    /// Picks up work the last run left in progress (rollouts being
    /// watched); called once at start.
    fn resume(&self) -> BoxFuture<'_, crate::core::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// When a failed delivery of `event` must be tried again at the
    /// latest (Unix ms), whatever the backoff says: a deadline of the
    /// sink's own, such as how long a push may wait for its signature.
    fn retry_by(&self, _event: &Event) -> Option<i64> {
        None
    }
}

/// The sinks events go to now. The admin API replaces the set when a
/// webhook or rule changes; the dispatcher follows.
#[derive(Default)]
pub struct SinkSet {
    sinks: std::sync::RwLock<Arc<Vec<Arc<dyn Sink>>>>,
    changed: Notify,
}

impl SinkSet {
    pub fn current(&self) -> Arc<Vec<Arc<dyn Sink>>> {
        self.sinks.read().expect("sink set").clone()
    }

    pub fn replace(&self, sinks: Vec<Arc<dyn Sink>>) {
        *self.sinks.write().expect("sink set") = Arc::new(sinks);
        self.changed.notify_one();
    }

    pub fn find(&self, name: &str) -> Option<Arc<dyn Sink>> {
        self.current().iter().find(|s| s.name() == name).cloned()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub give_up_after: Duration,
}

impl RetryPolicy {
    /// When to try again after `attempts` failures, or `None` to give up.
    fn next_attempt(&self, event: &Event, attempts: i64, now: i64) -> Option<i64> {
        if now - event.created_at >= self.give_up_after.as_millis() as i64 {
            return None;
        }
        let doublings = (attempts - 1).clamp(0, 20) as u32;
        let wait = self
            .first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        Some(now + wait.as_millis() as i64)
    }
}

/// Longest a sink sleeps without looking at the store, in case another
/// process (a replica, the CLI) queued something.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// How long the fan-out waits after an event is written, for the ones
/// written just after it.
const FAN_OUT_PAUSE: Duration = Duration::from_millis(5);
/// Longest one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Dispatcher {
    meta: MetaStore,
    /// Names this process in sink leases: its host and listening address,
    /// which no other live process has, and which a restarted process has
    /// again, so it takes its sinks back at once.
    holder: Arc<str>,
    sinks: Arc<SinkSet>,
    policy: RetryPolicy,
    events_written: Arc<Notify>,
}

/// A running delivery loop and the sink it serves.
struct Worker {
    sink: Arc<dyn Sink>,
    wake: Arc<Notify>,
    /// Set to end the loop after the delivery in flight, if any.
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    pub fn new(
        meta: MetaStore,
        sinks: Arc<SinkSet>,
        policy: RetryPolicy,
        events_written: Arc<Notify>,
        holder: &str,
    ) -> Dispatcher {
        Dispatcher {
            meta,
            holder: holder.into(),
            sinks,
            policy,
            events_written,
        }
    }

    /// Starts the fan-out loop, which keeps one delivery loop per sink.
    pub fn spawn(self) {
        // The first loops start before this returns, so each sink's metrics
        // exist from the first scrape.
        let mut workers: HashMap<String, Worker> = HashMap::new();
        self.follow_sinks(&mut workers);
        tokio::spawn(async move {
            loop {
                self.follow_sinks(&mut workers);
                match self.fan_out().await {
                    Ok(0) => {}
                    Ok(_) => workers.values().for_each(|w| w.wake.notify_one()),
                    Err(e) => tracing::warn!(error = %e, "fanning out events"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = self.events_written.notified() => {
                        // Pushes come in bursts: fan out what a few
                        // milliseconds bring in one transaction.
                        tokio::time::sleep(FAN_OUT_PAUSE).await;
                    }
                    _ = self.sinks.changed.notified() => {}
                }
            }
        });
    }

    /// Starts a delivery loop for each new or changed sink and stops those
    /// of sinks that are gone or changed. A stopping loop finishes the
    /// delivery in flight (and records it) before a changed sink's new loop
    /// starts, so a change never sends an event twice.
    fn follow_sinks(&self, workers: &mut HashMap<String, Worker>) {
        let current = self.sinks.current();
        let mut retiring: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        workers.retain(|name, w| {
            let same = current
                .iter()
                .any(|s| s.name() == name && Arc::ptr_eq(s, &w.sink));
            if !same {
                w.stop.store(true, Ordering::Release);
                w.wake.notify_one();
                let task = std::mem::replace(&mut w.task, tokio::spawn(async {}));
                retiring.insert(name.clone(), task);
            }
            same
        });
        for sink in current.iter() {
            if workers.contains_key(sink.name()) {
                continue;
            }
            metrics::sink_started(sink.name());
            let wake = Arc::new(Notify::new());
            let stop = Arc::new(AtomicBool::new(false));
            let previous = retiring.remove(sink.name());
            let work = deliver_loop(
                self.meta.clone(),
                self.holder.clone(),
                sink.clone(),
                self.policy,
                wake.clone(),
                stop.clone(),
            );
            let task = tokio::spawn(async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                work.await
            });
            workers.insert(
                sink.name().to_owned(),
                Worker {
                    sink: sink.clone(),
                    wake,
                    stop,
                    task,
                },
            );
        }
    }

    /// Creates deliveries for every event not yet fanned out; returns how
    /// many events it handled.
    async fn fan_out(&self) -> crate::core::Result<usize> {
        let mut handled = 0;
        loop {
            let events = self.meta.events_to_fan_out(100).await?;
            if events.is_empty() {
                return Ok(handled);
            }
            let sinks = self.sinks.current();
            let fanned: Vec<(i64, Vec<String>)> = events
                .iter()
                .map(|event| {
                    let names = sinks
                        .iter()
                        .filter(|s| s.wants(event))
                        .map(|s| s.name().to_owned())
                        .collect();
                    (event.seq, names)
                })
                .collect();
            self.meta.fan_out(&fanned).await?;
            handled += events.len();
        }
    }
}

/// Delivers one sink's events while this process holds the sink's lease.
/// On taking the sink (at start, or from a replica that died) it first
/// picks up the work left in progress, such as rollouts being watched.
async fn deliver_loop(
    meta: MetaStore,
    holder: Arc<str>,
    sink: Arc<dyn Sink>,
    policy: RetryPolicy,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
) {
    // An SQLite file has one serving process, which holds every sink.
    let shared = meta.is_shared();
    let lease = format!("sink:{}", sink.name());
    let mut holding = false;
    while !stop.load(Ordering::Acquire) {
        let held = !shared
            || match meta.hold_lease(&lease, &holder, LEASE_MS).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(sink = sink.name(), error = %e, "taking the sink's lease");
                    false
                }
            };
        if held
            && !holding
            && let Err(e) = sink.resume().await
        {
            tracing::warn!(sink = sink.name(), error = %e, "resuming work in progress");
        }
        holding = held;
        if !held {
            let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
            continue;
        }
        let delivered = match shared {
            true => {
                meta.renewing(
                    &lease,
                    &holder,
                    LEASE_MS,
                    deliver_next(&meta, sink.as_ref(), &policy),
                )
                .await
            }
            false => deliver_next(&meta, sink.as_ref(), &policy).await,
        };
        match delivered {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(sink = sink.name(), error = %e, "delivering events"),
        }
        let now = now_ms();
        let wait = match meta.next_delivery_time(sink.name()).await {
            Ok(Some(at)) if at > now => Duration::from_millis((at - now) as u64).min(IDLE_POLL),
            Ok(Some(_)) => Duration::ZERO,
            _ => IDLE_POLL,
        };
        let _ = tokio::time::timeout(wait, wake.notified()).await;
    }
    if shared
        && holding
        && let Err(e) = meta.release_lease(&lease, &holder).await
    {
        tracing::warn!(sink = sink.name(), error = %e, "releasing the sink lease");
    }
}

/// Makes one attempt at the sink's next due delivery; false if none is due.
async fn deliver_next(
    meta: &MetaStore,
    sink: &dyn Sink,
    policy: &RetryPolicy,
) -> crate::core::Result<bool> {
    let Some((event, attempts)) = meta.next_due_delivery(sink.name(), now_ms()).await? else {
        return Ok(false);
    };
    let attempt = attempts + 1;
    let result = match tokio::time::timeout(DELIVERY_TIMEOUT, sink.deliver(&event)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {DELIVERY_TIMEOUT:?}")),
    };
    let (detail, outcome, counted) = match result {
        Ok(detail) => (detail, AttemptOutcome::Delivered, DeliveryResult::Delivered),
        Err(detail) => {
            let now = now_ms();
            let (outcome, counted) = match policy.next_attempt(&event, attempt, now) {
                Some(at) => {
                    let at = sink.retry_by(&event).map_or(at, |by| at.min(by.max(now)));
                    (AttemptOutcome::RetryAt(at), DeliveryResult::Retrying)
                }
                None => (AttemptOutcome::GaveUp, DeliveryResult::GaveUp),
            };
            tracing::warn!(sink = sink.name(), event = %event.id, attempt, %detail, "delivery failed");
            (detail, outcome, counted)
        }
    };
    // Recorded and counted as one, as far as a scrape can tell.
    let _counting = metrics::counting().await;
    meta.record_attempt(event.seq, sink.name(), attempt, &detail, outcome)
        .await?;
    metrics::delivery_attempted(sink.name(), counted);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{Action, Origin};

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let policy = RetryPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            give_up_after: Duration::from_secs(60),
        };
        let event = Event::new(Action::Push, "a", &Origin::default());
        let t0 = event.created_at;
        assert_eq!(policy.next_attempt(&event, 1, t0), Some(t0 + 1000));
        assert_eq!(policy.next_attempt(&event, 2, t0), Some(t0 + 2000));
        assert_eq!(policy.next_attempt(&event, 4, t0), Some(t0 + 8000));
        assert_eq!(policy.next_attempt(&event, 9, t0), Some(t0 + 10_000));
        assert_eq!(policy.next_attempt(&event, 3, t0 + 60_000), None);
    }
}
