//! The event record: what happened in the registry (a manifest pushed,
//! pulled or deleted) and who caused it. The core makes events, the
//! metadata store keeps them (in the same transaction as the change), and
//! `events` delivers them; this module depends on none of those.

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

/// An [`Origin`] worked out the first time something records it: most
/// requests (reads) record nothing, and working it out copies several
/// headers and formats an address.
pub struct LazyOrigin<'a> {
    origin: std::sync::OnceLock<Origin>,
    make: &'a (dyn Fn() -> Origin + Sync),
}

impl<'a> LazyOrigin<'a> {
    pub fn new(make: &'a (dyn Fn() -> Origin + Sync)) -> LazyOrigin<'a> {
        LazyOrigin {
            origin: std::sync::OnceLock::new(),
            make,
        }
    }

    pub fn get(&self) -> &Origin {
        self.origin.get_or_init(self.make)
    }
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
            created_at: crate::core::clock::now_ms(),
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
