//! Delivers the outbox. Each event is first fanned out: a pending delivery
//! row per sink that wants it. Then each sink works through its due
//! deliveries, oldest event first, one at a time, so a sink sees events in
//! order. A failed attempt is retried with exponential backoff until the
//! event is older than the give-up age. Every attempt is recorded. Since
//! all state is in the metadata store, a restart resumes where it stopped.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::events::Event;
use crate::meta::{AttemptOutcome, MetaStore, now_ms};
use crate::metrics::{self, DeliveryResult};

/// Something that takes events: a webhook, a deploy rule.
pub trait Sink: Send + Sync {
    /// Unique and stable across restarts: delivery rows are keyed by it.
    fn name(&self) -> &str;
    fn wants(&self, event: &Event) -> bool;
    /// `Ok(detail)` when delivered; `Err(detail)` to retry later.
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<String, String>>;
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
/// Longest one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Dispatcher {
    meta: MetaStore,
    sinks: Vec<Arc<dyn Sink>>,
    policy: RetryPolicy,
    events_written: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        meta: MetaStore,
        sinks: Vec<Arc<dyn Sink>>,
        policy: RetryPolicy,
        events_written: Arc<Notify>,
    ) -> Dispatcher {
        Dispatcher {
            meta,
            sinks,
            policy,
            events_written,
        }
    }

    /// Starts the fan-out loop and one delivery loop per sink.
    pub fn spawn(self) {
        let wakers: Vec<Arc<Notify>> = self.sinks.iter().map(|_| Arc::new(Notify::new())).collect();
        for (sink, wake) in self.sinks.iter().zip(&wakers) {
            metrics::sink_started(sink.name());
            tokio::spawn(deliver_loop(
                self.meta.clone(),
                sink.clone(),
                self.policy,
                wake.clone(),
            ));
        }
        tokio::spawn(async move {
            loop {
                match self.fan_out().await {
                    Ok(0) => {}
                    Ok(_) => wakers.iter().for_each(|w| w.notify_one()),
                    Err(e) => tracing::warn!(error = %e, "fanning out events"),
                }
                let _ = tokio::time::timeout(IDLE_POLL, self.events_written.notified()).await;
            }
        });
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
            for event in &events {
                let sinks: Vec<String> = self
                    .sinks
                    .iter()
                    .filter(|s| s.wants(event))
                    .map(|s| s.name().to_owned())
                    .collect();
                self.meta.fan_out(event.seq, &sinks).await?;
            }
            handled += events.len();
        }
    }
}

async fn deliver_loop(
    meta: MetaStore,
    sink: Arc<dyn Sink>,
    policy: RetryPolicy,
    wake: Arc<Notify>,
) {
    loop {
        match deliver_next(&meta, sink.as_ref(), &policy).await {
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
            let (outcome, counted) = match policy.next_attempt(&event, attempt, now_ms()) {
                Some(at) => (AttemptOutcome::RetryAt(at), DeliveryResult::Retrying),
                None => (AttemptOutcome::GaveUp, DeliveryResult::GaveUp),
            };
            tracing::warn!(sink = sink.name(), event = %event.id, attempt, %detail, "delivery failed");
            (detail, outcome, counted)
        }
    };
    metrics::delivery_attempted(sink.name(), counted);
    meta.record_attempt(event.seq, sink.name(), attempt, &detail, outcome)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Action, Origin};

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
