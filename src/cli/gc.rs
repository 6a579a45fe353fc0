//! `berth gc`: collect garbage from this process, safe while berth serves.

use berth::config::Config;
use berth::core::{Registry, RegistryOptions};
use berth::meta::MetaStore;
use berth::storage::BlobStore;

use super::table::human_bytes;

pub async fn run(
    config: &Config,
    meta: &MetaStore,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let registry = Registry::new(
        BlobStore::from_config(config)?,
        meta.clone(),
        RegistryOptions {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            delete_enabled: config.delete_enabled,
            record_pulls: false,
            disk: None,
        },
    );
    let report = registry.collect_garbage(config.gc.options(dry_run)).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb} {} manifests, {} of {} blobs, {} uploads and {} stray files: {}",
        report.manifests_deleted,
        report.blobs_deleted,
        report.blobs_examined,
        report.uploads_purged,
        report.orphan_files_deleted,
        human_bytes(report.bytes_freed)
    );
    Ok(())
}
