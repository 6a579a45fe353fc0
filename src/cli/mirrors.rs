//! `berth admin mirror ...`: pull-through mirrors through the admin API,
//! and what each has cached.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::admin::{Client, seg, spec_file};
use super::table::Output;

#[derive(Subcommand)]
pub enum MirrorCommand {
    /// Every mirror, with what it holds and how its pulls were answered.
    List,
    Show {
        namespace: String,
    },
    /// Create from a file with the fields of [[mirrors]] (TOML or JSON).
    Add {
        file: PathBuf,
    },
    /// Replace with the fields in a file (the namespace must stay; an
    /// empty password keeps the stored one).
    Set {
        namespace: String,
        file: PathBuf,
    },
    /// Delete a mirror made through the API, with everything it cached.
    Delete {
        namespace: String,
    },
    /// The repositories a mirror filled: tags, size, hits, misses, last
    /// pull.
    Repos {
        namespace: String,
    },
}

const MIRRORS: &[(&str, &str)] = &[
    ("NAMESPACE", "namespace"),
    ("UPSTREAM", "upstream"),
    ("CACHED", "cached_bytes"),
    ("MAX", "max_bytes"),
    ("REPOS", "repositories"),
    ("HITS", "hits"),
    ("MISSES", "misses"),
    ("TAG TTL", "tag_ttl_seconds"),
    ("FROM CONFIG", "from_config"),
];

pub(super) async fn run(
    client: &Client,
    out: &Output,
    command: MirrorCommand,
) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        MirrorCommand::List => {
            let rows = client.get("/mirrors").await?;
            out.table(&rows, &rows, MIRRORS);
        }
        MirrorCommand::Show { namespace } => {
            out.object(&client.get(&format!("/mirrors/{}", seg(&namespace))).await?)
        }
        MirrorCommand::Add { file } => {
            let created = client
                .call(Method::POST, "/mirrors", Some(spec_file(&file)?))
                .await?;
            out.object(&created);
        }
        MirrorCommand::Set { namespace, file } => {
            let mut spec = spec_file(&file)?;
            if spec.get("namespace").is_none()
                && let Some(map) = spec.as_object_mut()
            {
                map.insert("namespace".into(), Value::String(namespace.clone()));
            }
            let changed = client
                .call(
                    Method::PUT,
                    &format!("/mirrors/{}", seg(&namespace)),
                    Some(spec),
                )
                .await?;
            out.object(&changed);
        }
        MirrorCommand::Delete { namespace } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/mirrors/{}", seg(&namespace)),
                    None,
                )
                .await?;
            out.done(&format!("deleted mirror {namespace} and its cache"));
        }
        MirrorCommand::Repos { namespace } => {
            let rows = client
                .get(&format!("/mirrors/{}/repositories", seg(&namespace)))
                .await?;
            out.table(
                &rows,
                &rows,
                &[
                    ("REPOSITORY", "name"),
                    ("TAGS", "tag_count"),
                    ("SIZE", "size"),
                    ("HITS", "hits"),
                    ("MISSES", "misses"),
                    ("LAST PULL", "last_pull"),
                    ("LAST FETCH", "last_fetch"),
                ],
            );
        }
    }
    Ok(())
}
