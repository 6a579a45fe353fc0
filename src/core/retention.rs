//! Retention policies: which tags a repository lets go. A tag that the
//! policy's pattern does not match is always kept; among those it matches,
//! a tag is kept if it is one of the newest `keep_last`, or was pushed
//! within `keep_days`. Only tags go; the manifests and blobs they leave
//! behind are garbage collection's business.

use serde::{Deserialize, Serialize};

use crate::core::{RegistryError, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest N matching tags (by push time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 1_000_000)]
    pub keep_last: Option<u32>,
    /// Keep matching tags pushed within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 36_500)]
    pub keep_days: Option<u32>,
    /// Glob over tag names the policy applies to (`*` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_pattern: Option<String>,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The largest `keep_last` and `keep_days` (a century) accepted: bounds the
/// document states, so a client can tell a valid policy from the schema.
pub const MAX_KEEP_LAST: u32 = 1_000_000;
pub const MAX_KEEP_DAYS: u32 = 36_500;

impl RetentionPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.keep_last.is_none() && self.keep_days.is_none() {
            return Err(RegistryError::Invalid(
                "a retention policy needs keep_last or keep_days".into(),
            ));
        }
        if self.keep_last.is_some_and(|n| n > MAX_KEEP_LAST) {
            return Err(RegistryError::Invalid(format!(
                "keep_last is at most {MAX_KEEP_LAST}"
            )));
        }
        if self.keep_days.is_some_and(|d| d > MAX_KEEP_DAYS) {
            return Err(RegistryError::Invalid(format!(
                "keep_days is at most {MAX_KEEP_DAYS}"
            )));
        }
        if let Some(p) = &self.tag_pattern {
            glob::Pattern::new(p)
                .map_err(|e| RegistryError::Invalid(format!("tag_pattern {p:?}: {e}")))?;
        }
        Ok(())
    }

    /// The tags to delete, given every tag with its push time (Unix ms).
    pub fn expired(&self, tags: &[(String, i64)], now: i64) -> Vec<String> {
        let pattern = self
            .tag_pattern
            .as_deref()
            .and_then(|p| glob::Pattern::new(p).ok());
        let mut matching: Vec<&(String, i64)> = tags
            .iter()
            .filter(|(name, _)| pattern.as_ref().is_none_or(|p| p.matches(name)))
            .collect();
        // Newest first; equal times by name, so the outcome is stable.
        matching.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        matching
            .iter()
            .enumerate()
            .filter(|(rank, (_, pushed))| {
                let kept_by_count = self
                    .keep_last
                    .is_some_and(|n| (*rank as u64) < u64::from(n));
                let kept_by_age = self
                    .keep_days
                    .is_some_and(|d| now - pushed < i64::from(d) * DAY_MS);
                !kept_by_count && !kept_by_age
            })
            .map(|(_, (name, _))| name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Vec<(String, i64)> {
        // v1 oldest, v4 newest; `latest` is newest of all.
        vec![
            ("v1".into(), DAY_MS),
            ("v2".into(), 2 * DAY_MS),
            ("v3".into(), 3 * DAY_MS),
            ("v4".into(), 4 * DAY_MS),
            ("latest".into(), 5 * DAY_MS),
        ]
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn keep_last_keeps_the_newest_matching() {
        let p = RetentionPolicy {
            keep_last: Some(2),
            tag_pattern: Some("v*".into()),
            ..Default::default()
        };
        assert_eq!(sorted(p.expired(&tags(), 6 * DAY_MS)), ["v1", "v2"]);
    }

    #[test]
    fn keep_days_keeps_recent_pushes() {
        let p = RetentionPolicy {
            keep_days: Some(2),
            ..Default::default()
        };
        // now = day 6: within 2 days means pushed after day 4.
        assert_eq!(
            sorted(p.expired(&tags(), 6 * DAY_MS)),
            ["v1", "v2", "v3", "v4"]
        );
    }

    #[test]
    fn either_rule_keeps_a_tag() {
        // v4 is kept by count; v3, pushed 3 days before day 6, by age
        // alone (within 4 days). Pushed exactly keep_days ago is not
        // within, as keep_days_keeps_recent_pushes pins.
        let p = RetentionPolicy {
            keep_last: Some(1),
            keep_days: Some(4),
            tag_pattern: Some("v*".into()),
        };
        // v4 is kept as the newest, v3 as pushed within 4 days.
        assert_eq!(sorted(p.expired(&tags(), 6 * DAY_MS)), ["v1", "v2"]);
    }

    #[test]
    fn a_policy_needs_a_rule_and_a_valid_pattern() {
        assert!(RetentionPolicy::default().validate().is_err());
        let bad = RetentionPolicy {
            keep_last: Some(1),
            tag_pattern: Some("[".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn counts_beyond_the_documented_bounds_are_refused() {
        let at = |keep_last, keep_days| RetentionPolicy {
            keep_last,
            keep_days,
            tag_pattern: None,
        };
        assert!(
            at(Some(MAX_KEEP_LAST), Some(MAX_KEEP_DAYS))
                .validate()
                .is_ok()
        );
        assert!(at(Some(MAX_KEEP_LAST + 1), None).validate().is_err());
        assert!(at(None, Some(MAX_KEEP_DAYS + 1)).validate().is_err());
    }
}
