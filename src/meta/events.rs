//! The outbox and what became of it: events, their deliveries to sinks,
//! every delivery attempt, and deploy records.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::core::Result;
use crate::core::event::{Action, Event, Origin};
use crate::meta::batch::Batch;
use crate::meta::{MetaStore, WriteTx, now_ms};

/// How a delivery attempt ended.
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    GaveUp,
}

/// One row of the delivery log.
#[derive(Debug)]
pub struct DeliveryRow {
    pub event_seq: i64,
    pub event_id: String,
    pub sink: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

/// A deploy attempt to record.
pub struct NewDeploy<'a> {
    pub event_seq: i64,
    pub rule: &'a str,
    pub namespace: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub container: &'a str,
    pub tag: Option<&'a str>,
    pub old_image: Option<&'a str>,
    pub new_image: &'a str,
    pub state: &'a str,
    pub message: &'a str,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DeployRow {
    pub id: i64,
    pub event_seq: i64,
    pub rule: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    pub tag: Option<String>,
    pub old_image: Option<String>,
    pub new_image: String,
    pub state: String,
    pub message: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// The columns `event_from_row` reads, in order (a macro, since sqlx takes
/// only static SQL).
macro_rules! event_columns {
    ($p:literal) => {
        concat!(
            $p,
            "seq, ",
            $p,
            "id, ",
            $p,
            "created_at, ",
            $p,
            "action, ",
            $p,
            "repository, ",
            $p,
            "digest, ",
            $p,
            "media_type, ",
            $p,
            "size, ",
            $p,
            "tag, ",
            $p,
            "actor, ",
            $p,
            "request_id, ",
            $p,
            "request_addr, ",
            $p,
            "request_host, ",
            $p,
            "request_method, ",
            $p,
            "user_agent"
        )
    };
}

fn event_from_row(r: &AnyRow) -> Event {
    Event {
        seq: r.get(0),
        id: r.get(1),
        created_at: r.get(2),
        action: Action::parse(r.get::<&str, _>(3)).unwrap_or(Action::Push),
        repository: r.get(4),
        digest: r.get(5),
        media_type: r.get(6),
        size: r.get::<Option<i64>, _>(7).map(|s| s as u64),
        tag: r.get(8),
        origin: Origin {
            actor: r.get(9),
            request_id: r.get(10),
            addr: r.get(11),
            host: r.get(12),
            method: r.get(13),
            user_agent: r.get(14),
        },
    }
}

fn deploy_from_row(r: &AnyRow) -> DeployRow {
    DeployRow {
        id: r.get(0),
        event_seq: r.get(1),
        rule: r.get(2),
        namespace: r.get(3),
        kind: r.get(4),
        name: r.get(5),
        container: r.get(6),
        tag: r.get(7),
        old_image: r.get(8),
        new_image: r.get(9),
        state: r.get(10),
        message: r.get(11),
        started_at: r.get(12),
        finished_at: r.get(13),
    }
}

/// Every deploy passes through here when it ends, whichever path it took.
fn count_if_final(state: &str) {
    if !matches!(state, "patching" | "rolling" | "waiting_signature") {
        crate::metrics::deploy_finished(state);
    }
}

/// The columns `deploy_from_row` reads, in order.
macro_rules! deploy_columns {
    () => {
        "id, event_seq, rule, namespace, kind, name, container, tag, old_image, \
         new_image, state, message, started_at, finished_at"
    };
}

impl MetaStore {
    /// Writes an event inside the transaction of the change it describes.
    pub(crate) async fn insert_event(tx: &mut WriteTx, e: &Event) -> Result<()> {
        let mut batch = Batch::default();
        Self::push_event(&mut batch, e);
        tx.run(batch).await?;
        Ok(())
    }

    /// Adds the writing of an event to `batch`.
    pub(crate) fn push_event<'a>(batch: &mut Batch<'a>, e: &'a Event) {
        batch
            .push(
                "INSERT INTO events (id, created_at, action, repository, digest, media_type, size, tag, \
                 actor, request_id, request_addr, request_host, request_method, user_agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .text(&e.id)
            .int(e.created_at)
            .text(e.action.as_str())
            .text(&e.repository)
            .opt_text(e.digest.as_deref())
            .opt_text(e.media_type.as_deref())
            .opt_int(e.size.map(|s| s as i64))
            .opt_text(e.tag.as_deref())
            .opt_text(e.origin.actor.as_deref())
            .opt_text(e.origin.request_id.as_deref())
            .opt_text(e.origin.addr.as_deref())
            .opt_text(e.origin.host.as_deref())
            .opt_text(e.origin.method.as_deref())
            .opt_text(e.origin.user_agent.as_deref());
    }

    /// Records an event that changes nothing else (a pull).
    pub async fn record_event(&self, e: &Event) -> Result<()> {
        let mut tx = self.write_tx().await?;
        Self::insert_event(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events not yet handed to sinks, oldest first.
    pub async fn events_to_fan_out(&self, limit: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(""),
            " FROM events WHERE fanned_out = 0 ORDER BY seq LIMIT CAST($1 AS BIGINT)"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_from_row).collect())
    }

    /// Creates a pending delivery of each event to each of its sinks, and
    /// marks the events as fanned out, in one transaction. It need not wait
    /// for the disk: lost in a crash, it is redone the same way from the
    /// events, and a delivery's outcome, which is synced, covers it.
    ///
    /// `fanned` is every event not yet fanned out up to its last, oldest
    /// first ([`events_to_fan_out`](Self::events_to_fan_out)): events are
    /// written under the write lock, so they commit in `seq` order and none
    /// below the last can appear later.
    pub async fn fan_out(&self, fanned: &[(i64, Vec<String>)]) -> Result<()> {
        let Some((last, _)) = fanned.last() else {
            return Ok(());
        };
        let now = now_ms();
        let mut batch = Batch::default();
        for (seq, sinks) in fanned {
            for sink in sinks {
                batch
                    .push(
                        "INSERT INTO deliveries (event_seq, sink, state, next_attempt_at, updated_at) \
                         VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .int(*seq)
                    .text(sink)
                    .int(now)
                    .int(now);
            }
        }
        batch
            .push("UPDATE events SET fanned_out = 1 WHERE fanned_out = 0 AND seq <= $1")
            .int(*last);
        let mut tx = self.write_tx().await?;
        tx.run(batch).await?;
        tx.commit_unsynced().await?;
        Ok(())
    }

    /// The next delivery of `sink` that is due at `now`, oldest event
    /// first, with the attempts made so far.
    pub async fn next_due_delivery(&self, sink: &str, now: i64) -> Result<Option<(Event, i64)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_columns!("e."),
            ", d.attempts FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE d.sink = $1 AND d.state = 'pending' AND d.next_attempt_at <= $2 \
             ORDER BY d.event_seq LIMIT 1"
        ))
        .bind(sink)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (event_from_row(&r), r.get(15))))
    }

    /// When `sink` next has a delivery due (Unix ms), if any is pending.
    pub async fn next_delivery_time(&self, sink: &str) -> Result<Option<i64>> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE sink = $1 AND state = 'pending'",
        )
        .bind(sink)
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }

    /// Records one attempt and its outcome.
    pub async fn record_attempt(
        &self,
        seq: i64,
        sink: &str,
        attempt: i64,
        detail: &str,
        outcome: AttemptOutcome,
    ) -> Result<()> {
        let now = now_ms();
        let (state, next, ok) = match outcome {
            AttemptOutcome::Delivered => ("delivered", now, true),
            AttemptOutcome::RetryAt(at) => ("pending", at, false),
            AttemptOutcome::GaveUp => ("gave_up", now, false),
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (event_seq, sink, attempt, at, ok, detail) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(seq)
        .bind(sink)
        .bind(attempt)
        .bind(now)
        .bind(i64::from(ok))
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_error = $4, updated_at = $5 \
             WHERE event_seq = $6 AND sink = $7",
        )
        .bind(state)
        .bind(attempt)
        .bind(next)
        .bind((!ok).then_some(detail))
        .bind(now)
        .bind(seq)
        .bind(sink)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest deliveries, newest first, of one sink and in one state
    /// if given.
    pub async fn deliveries(
        &self,
        limit: u32,
        sink: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT d.event_seq, e.id, d.sink, d.state, d.attempts, d.last_error, d.updated_at \
             FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE ($1 IS NULL OR d.sink = $1) AND ($2 IS NULL OR d.state = $2) \
             ORDER BY d.event_seq DESC, d.sink LIMIT CAST($3 AS BIGINT)",
        )
        .bind(sink)
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeliveryRow {
                event_seq: r.get(0),
                event_id: r.get(1),
                sink: r.get(2),
                state: r.get(3),
                attempts: r.get(4),
                last_error: r.get(5),
                updated_at: r.get(6),
            })
            .collect())
    }

    pub async fn insert_deploy(&self, d: &NewDeploy<'_>) -> Result<i64> {
        let _counting = crate::metrics::counting().await;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deploys (event_seq, rule, namespace, kind, name, container, tag, old_image, \
             new_image, state, message, started_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             CASE WHEN $13 IN ('patching', 'rolling', 'waiting_signature') THEN NULL ELSE $14 END) \
             RETURNING id",
        )
        .bind(d.event_seq)
        .bind(d.rule)
        .bind(d.namespace)
        .bind(d.kind)
        .bind(d.name)
        .bind(d.container)
        .bind(d.tag)
        .bind(d.old_image)
        .bind(d.new_image)
        .bind(d.state)
        .bind(d.message)
        .bind(now_ms())
        .bind(d.state)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        self.durable().await?;
        count_if_final(d.state);
        Ok(id)
    }

    /// Moves a deploy to `state`; states other than patching, rolling and
    /// waiting_signature are final and stamp the finish time.
    pub async fn update_deploy(&self, id: i64, state: &str, message: &str) -> Result<bool> {
        let _counting = crate::metrics::counting().await;
        // An ended deploy stays as it ended: when two replicas watch one
        // rollout (one took over the rule from the other), the first to
        // finish records it.
        let done = sqlx::query(
            "UPDATE deploys SET state = $1, message = $2, \
             finished_at = CASE WHEN $3 IN ('patching', 'rolling', 'waiting_signature') \
             THEN NULL ELSE $4 END \
             WHERE id = $5 AND state IN ('patching', 'rolling', 'waiting_signature')",
        )
        .bind(state)
        .bind(message)
        .bind(state)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        let updated = done.rows_affected() == 1;
        if updated {
            count_if_final(state);
        }
        Ok(updated)
    }

    /// The newest deploys, newest first, of one rule if given.
    pub async fn deploys(&self, limit: u32, rule: Option<&str>) -> Result<Vec<DeployRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            deploy_columns!(),
            " FROM deploys WHERE ($1 IS NULL OR rule = $1) ORDER BY id DESC LIMIT CAST($2 AS BIGINT)"
        ))
        .bind(rule)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deploy_from_row).collect())
    }

    /// The deploys of `rule` for one event that wait for a signature.
    pub async fn waiting_deploys(&self, event_seq: i64, rule: &str) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM deploys WHERE event_seq = $1 AND rule = $2 \
             AND state = 'waiting_signature' ORDER BY id",
        )
        .bind(event_seq)
        .bind(rule)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Makes the pending deliveries to `sink` of events of `repository`
    /// due now: something they wait for (a signature) may have arrived.
    pub async fn hurry_deliveries(&self, sink: &str, repository: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $1 WHERE sink = $2 AND state = 'pending' \
             AND event_seq IN (SELECT seq FROM events WHERE repository = $3)",
        )
        .bind(now_ms())
        .bind(sink)
        .bind(repository)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deploys whose rollout was being watched when berth last stopped.
    pub async fn rolling_deploys(&self) -> Result<Vec<DeployRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            deploy_columns!(),
            " FROM deploys WHERE state IN ('patching', 'rolling') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(deploy_from_row).collect())
    }

    /// The last deploy onto a workload that went through, for the
    /// downgrade check.
    pub async fn last_successful_deploy(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<DeployRow>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            deploy_columns!(),
            " FROM deploys WHERE namespace = $1 AND kind = $2 AND name = $3 \
             AND state IN ('rolling', 'succeeded') ORDER BY id DESC LIMIT 1"
        ))
        .bind(namespace)
        .bind(kind)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(deploy_from_row))
    }
}
