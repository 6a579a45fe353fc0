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

use crate::core::event::{Action, Event};

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
    use crate::core::event::Origin;

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
