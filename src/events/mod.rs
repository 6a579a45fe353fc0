//! Events: what happened in the registry (a manifest pushed, pulled or
//! deleted), written to the outbox in the same transaction as the change,
//! then delivered to every sink that wants it by [`outbox::Dispatcher`].
//!
//! - [`envelope`]: the JSON a webhook receives (Distribution's notification
//!   envelope, or CloudEvents).
//! - [`webhook`]: the webhook sink.
//! - [`outbox`]: fan-out to sinks, delivery with retries and backoff.

pub mod envelope;
pub mod outbox;
pub mod webhook;

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    Delete,
    /// Never stored: what a sink's test sends, to check it is reachable.
    Ping,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Ping => "ping",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "push" => Some(Action::Push),
            "pull" => Some(Action::Pull),
            "delete" => Some(Action::Delete),
            "ping" => Some(Action::Ping),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request that caused an event, as the HTTP layer saw it.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The account that made it, if any.
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub addr: Option<String>,
    /// The `Host` the client used: how it names this registry.
    pub host: Option<String>,
    pub method: Option<String>,
    pub user_agent: Option<String>,
}

/// One event, as stored in the outbox.
#[derive(Clone, Debug)]
pub struct Event {
    /// Outbox order; 0 until stored.
    pub seq: i64,
    pub id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub action: Action,
    pub repository: String,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub tag: Option<String>,
    pub origin: Origin,
}

impl Event {
    pub fn new(action: Action, repository: &str, origin: &Origin) -> Event {
        Event {
            seq: 0,
            id: uuid::Uuid::new_v4().to_string(),
            created_at: crate::meta::now_ms(),
            action,
            repository: repository.to_owned(),
            digest: None,
            media_type: None,
            size: None,
            tag: None,
            origin: origin.clone(),
        }
    }
}

/// Which events a sink wants: actions and repository patterns (globs such
/// as `team/*`). Empty lists mean all.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub actions: Vec<Action>,
    pub repositories: Vec<glob::Pattern>,
}

impl EventFilter {
    pub fn new(actions: &[String], repositories: &[String]) -> anyhow::Result<EventFilter> {
        let actions = actions
            .iter()
            .map(|a| {
                Action::parse(a).ok_or_else(|| {
                    anyhow::anyhow!("unknown event action {a:?}: use push, pull or delete")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let repositories = repositories
            .iter()
            .map(|r| {
                glob::Pattern::new(r).map_err(|e| anyhow::anyhow!("repository pattern {r:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(EventFilter {
            actions,
            repositories,
        })
    }

    pub fn wants(&self, event: &Event) -> bool {
        (self.actions.is_empty() || self.actions.contains(&event.action))
            && (self.repositories.is_empty()
                || self
                    .repositories
                    .iter()
                    .any(|p| p.matches(&event.repository)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_actions_and_repository_globs() {
        let f = EventFilter::new(&["push".into()], &["team/*".into()]).unwrap();
        let mut e = Event::new(Action::Push, "team/app", &Origin::default());
        assert!(f.wants(&e));
        e.repository = "other/app".into();
        assert!(!f.wants(&e));
        e.repository = "team/a/b".into();
        assert!(f.wants(&e));
        e.action = Action::Delete;
        assert!(!f.wants(&e));
        assert!(EventFilter::default().wants(&e));
        assert!(EventFilter::new(&["fly".into()], &[]).is_err());
    }
}
