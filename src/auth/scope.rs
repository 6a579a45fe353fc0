//! What a request may do, in the words of the Docker token spec: actions
//! (`pull`, `push`, `delete`, plus berth's `admin`) on resources
//! (`repository:<name>` or `registry:catalog`), and the scope grammar that
//! clients send to the token service:
//!
//! ```text
//! scope         := resourcescope [ ' ' resourcescope ]*
//! resourcescope := resourcetype ":" resourcename ":" action [ ',' action ]*
//! resourcetype  := resourcetypevalue [ '(' resourcetypevalue ')' ]
//! resourcename  := [ hostname '/' ] component [ '/' component ]*
//! ```
//!
//! A resource name may start with `host:port/`, so a scope is never split on
//! every `:`: the type ends at the first colon and the actions start after
//! the last one.

use std::fmt;

use crate::core::names::RepoName;

/// A set of actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    /// Manage the namespace: its settings and who may use it.
    pub const ADMIN: Actions = Actions(8);
    pub const ALL: Actions = Actions(15);

    const NAMES: [(&'static str, Actions); 4] = [
        ("pull", Actions::PULL),
        ("push", Actions::PUSH),
        ("delete", Actions::DELETE),
        ("admin", Actions::ADMIN),
    ];

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// One action name; `*` is every action.
    pub fn from_name(name: &str) -> Option<Actions> {
        if name == "*" {
            return Some(Actions::ALL);
        }
        Actions::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }

    /// A comma-separated list, as in a scope. Unknown names are ignored, as
    /// the token spec asks of servers.
    pub fn parse_lenient(list: &str) -> Actions {
        list.split(',')
            .filter_map(Actions::from_name)
            .fold(Actions::NONE, Actions::union)
    }

    /// A comma-separated list typed by an admin: unknown names are errors.
    pub fn parse_strict(list: &str) -> Result<Actions, String> {
        list.split(',')
            .map(str::trim)
            .try_fold(Actions::NONE, |acc, name| {
                Actions::from_name(name)
                    .map(|a| acc.union(a))
                    .ok_or_else(|| {
                        format!("unknown action {name:?}: use pull, push, delete, admin or *")
                    })
            })
    }

    pub fn names(self) -> Vec<&'static str> {
        Actions::NAMES
            .iter()
            .filter(|(_, a)| self.contains(*a))
            .map(|(n, _)| *n)
            .collect()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// The thing a scope is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Repository(RepoName),
    /// `registry:catalog`, the repository listing.
    Catalog,
}

/// Actions on one resource: a request's need, or an entry of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceScope {
    pub resource: Resource,
    pub actions: Actions,
}

impl ResourceScope {
    pub fn repository(name: RepoName, actions: Actions) -> ResourceScope {
        ResourceScope {
            resource: Resource::Repository(name),
            actions,
        }
    }

    pub fn catalog() -> ResourceScope {
        ResourceScope {
            resource: Resource::Catalog,
            actions: Actions::ALL,
        }
    }

    /// The token spec's `type` and `name` of the resource.
    pub fn type_and_name(&self) -> (&'static str, &str) {
        match &self.resource {
            Resource::Repository(name) => ("repository", name.as_str()),
            Resource::Catalog => ("registry", "catalog"),
        }
    }

    /// Parses one `type:name:actions`. `None` for anything that is not a
    /// well-formed scope on a resource berth knows.
    pub fn parse(s: &str) -> Option<ResourceScope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin)`: the class does not change what is accessed.
        let kind = kind.split_once('(').map_or(
            kind,
            |(k, class)| {
                if class.ends_with(')') { k } else { "" }
            },
        );
        match kind {
            "repository" => {
                let name = strip_hostname(name)?;
                let actions = Actions::parse_lenient(actions);
                Some(ResourceScope::repository(name.parse().ok()?, actions))
            }
            "registry" if name == "catalog" => Some(ResourceScope {
                resource: Resource::Catalog,
                actions: if actions.split(',').any(|a| a == "*") {
                    Actions::ALL
                } else {
                    Actions::NONE
                },
            }),
            _ => None,
        }
    }

    /// Parses a `scope` parameter: one or more resource scopes separated by
    /// spaces. Any malformed part makes the whole parameter invalid, so a
    /// client never gets a token narrower than it believes without knowing.
    pub fn parse_list(s: &str) -> Result<Vec<ResourceScope>, String> {
        s.split(' ')
            .filter(|part| !part.is_empty())
            .map(|part| ResourceScope::parse(part).ok_or_else(|| format!("invalid scope {part:?}")))
            .collect()
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = self.type_and_name();
        match self.resource {
            Resource::Catalog => write!(f, "{kind}:{name}:*"),
            Resource::Repository(_) => write!(f, "{kind}:{name}:{}", self.actions),
        }
    }
}

/// Drops a leading `host[:port]/` from a resource name. A first component
/// with a `:` can only be a host (names have no colons); one without is
/// part of the repository name, since berth's names may contain dots.
fn strip_hostname(name: &str) -> Option<&str> {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(':') => {
            let (host, port) = first.rsplit_once(':')?;
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            (host_ok && port_ok).then_some(rest)
        }
        _ => Some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, actions: Actions) -> Option<ResourceScope> {
        Some(ResourceScope::repository(name.parse().unwrap(), actions))
    }

    #[test]
    fn scopes_parse_by_the_grammar() {
        let pull_push = Actions::PULL.union(Actions::PUSH);
        let cases = [
            ("repository:team/app:pull", repo("team/app", Actions::PULL)),
            ("repository:team/app:pull,push", repo("team/app", pull_push)),
            ("repository:a:push,pull", repo("a", pull_push)),
            ("repository:a:*", repo("a", Actions::ALL)),
            ("repository:a:pull,frobnicate", repo("a", Actions::PULL)),
            (
                "repository:localhost:5000/team/app:pull",
                repo("team/app", Actions::PULL),
            ),
            ("repository:127.0.0.1:8888/x:push", repo("x", Actions::PUSH)),
            ("repository(plugin):a/b:pull", repo("a/b", Actions::PULL)),
            ("repository:my.app/x:pull", repo("my.app/x", Actions::PULL)),
            (
                "registry:catalog:*",
                Some(ResourceScope {
                    resource: Resource::Catalog,
                    actions: Actions::ALL,
                }),
            ),
            // Injected names and extra actions never become a valid scope.
            ("repository:team/app:pull,push:other", None),
            ("repository:team/app:pull:extra/x:push", None),
            ("repository:../etc:pull", None),
            ("repository:team/../other:pull", None),
            ("repository:%2e%2e/x:pull", None),
            ("repository:team\\app:pull", None),
            ("repository:team/app\0:pull", None),
            ("repository:Team/App:pull", None),
            ("repository::pull", None),
            ("repository:team/app", None),
            ("repository:host:/x:pull", None),
            ("repository:host:port/x:pull", None),
            ("repositoryx:a:pull", None),
            ("repository(plugin:a:pull", None),
            ("registry:other:*", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(ResourceScope::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_scope_parameter_is_all_valid_or_refused() {
        let both = ResourceScope::parse_list("repository:a:pull repository:b:push").unwrap();
        assert_eq!(both.len(), 2);
        assert!(ResourceScope::parse_list("repository:a:pull repository:B:push").is_err());
        assert_eq!(ResourceScope::parse_list("").unwrap(), vec![]);
    }

    #[test]
    fn action_lists() {
        assert_eq!(
            Actions::parse_strict("pull, push").unwrap().to_string(),
            "pull,push"
        );
        assert_eq!(Actions::parse_strict("*").unwrap(), Actions::ALL);
        assert!(Actions::parse_strict("pull,pwn").is_err());
        assert!(Actions::ALL.contains(Actions::DELETE));
        assert!(!Actions::PULL.contains(Actions::PULL.union(Actions::PUSH)));
    }

    #[test]
    fn scopes_print_as_they_parse() {
        for text in ["repository:team/app:pull,push", "registry:catalog:*"] {
            assert_eq!(ResourceScope::parse(text).unwrap().to_string(), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = ResourceScope::parse(&s);
            let _ = ResourceScope::parse_list(&s);
        }
    }
}
