//! Garbage collection throughput: a registry holding N images, half of
//! them untagged (their manifest, config and layer are garbage), collected
//! with no grace period. Reported: blobs examined and deleted per second,
//! and against a baseline measured in the same run on the same disk: just
//! unlinking as many files, the least any collector must do.
//!
//! Run: `cargo bench --bench gc` (`GC_BENCH_IMAGES=20000` for more;
//! `GC_BENCH_DATABASE_URL=postgres://...` to keep the metadata in an empty
//! PostgreSQL database instead of SQLite).

use std::str::FromStr;
use std::time::{Duration, Instant};

use berth::core::event::Origin;
use berth::core::gc::GcOptions;
use berth::core::names::{Digest, Reference, RepoName, Tag};
use berth::core::{Registry, RegistryOptions};
use berth::meta::MetaStore;
use berth::storage::BlobStore;

async fn registry(dir: &std::path::Path) -> Registry {
    Registry::new(
        BlobStore::open(dir).unwrap(),
        MetaStore::open(&match std::env::var("GC_BENCH_DATABASE_URL") {
            Ok(url) => berth::meta::Location::Postgres(url),
            Err(_) => berth::meta::Location::Sqlite(dir.join("meta.db")),
        })
        .await
        .unwrap(),
        RegistryOptions {
            max_manifest_bytes: 4 << 20,
            delete_enabled: true,
            record_pulls: false,
            disk: None,
        },
    )
}

fn sha256(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    Digest::from_str(&format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(bytes))
    ))
    .unwrap()
}

async fn push_blob(r: &Registry, repo: &RepoName, bytes: Vec<u8>) -> Digest {
    let digest = sha256(&bytes);
    let id = r.start_upload(repo).await.unwrap();
    let body = futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))]);
    r.finish_upload(repo, &id, &digest, Some((None, None, body)))
        .await
        .unwrap();
    digest
}

/// Pushes `n` one-layer images tagged `t<i>`.
async fn populate(r: &Registry, repo: &RepoName, n: usize) {
    let origin = Origin::default();
    for i in 0..n {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","i":{i}}}"#).into_bytes();
        let layer = format!("layer {i} {}", "x".repeat(1000)).into_bytes();
        let (config_size, layer_size) = (config.len(), layer.len());
        let config = push_blob(r, repo, config).await;
        let layer = push_blob(r, repo, layer).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.as_str(), "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.as_str(), "size": layer_size}],
        });
        let tag = Reference::Tag(Tag::from_str(&format!("t{i}")).unwrap());
        r.put_manifest(
            repo,
            &tag,
            None,
            &serde_json::to_vec(&manifest).unwrap(),
            &origin,
        )
        .await
        .unwrap();
    }
}

/// Unlinks `n` files of 1 KiB: the baseline.
fn unlink_baseline(dir: &std::path::Path, n: usize) -> Duration {
    let files: Vec<_> = (0..n).map(|i| dir.join(format!("f{i}"))).collect();
    for f in &files {
        std::fs::write(f, [0u8; 1024]).unwrap();
    }
    let start = Instant::now();
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    start.elapsed()
}

fn main() {
    let images: usize = std::env::var("GC_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir =
            tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or("/var/tmp".into())).unwrap();
        let r = registry(dir.path()).await;
        let repo = RepoName::from_str("bench/gc").unwrap();
        let start = Instant::now();
        populate(&r, &repo, images).await;
        println!("pushed {images} images in {:.1?}", start.elapsed());
        let untag: Vec<String> = (0..images).step_by(2).map(|i| format!("t{i}")).collect();
        r.delete_tags(&repo, &untag, &Origin::default())
            .await
            .unwrap();

        let options = GcOptions {
            grace: Duration::ZERO,
            upload_max_age: Duration::from_secs(3600),
            dry_run: true,
        };
        let dry = r.collect_garbage(options).await.unwrap();
        let report = r
            .collect_garbage(GcOptions {
                dry_run: false,
                ..options
            })
            .await
            .unwrap();
        let secs = report.duration_ms as f64 / 1000.0;
        let baseline_dir = dir.path().join("baseline");
        std::fs::create_dir_all(&baseline_dir).unwrap();
        let baseline = unlink_baseline(&baseline_dir, report.blobs_deleted as usize);
        println!(
            "dry run: {} manifests, {} blobs in {} ms",
            dry.manifests_deleted, dry.blobs_deleted, dry.duration_ms
        );
        println!(
            "gc: examined {} blobs, deleted {} manifests and {} blobs ({} bytes) in {:.2} s",
            report.blobs_examined,
            report.manifests_deleted,
            report.blobs_deleted,
            report.bytes_freed,
            secs
        );
        println!(
            "gc: {:.0} blobs examined/s, {:.0} blobs deleted/s, {:.0} manifests deleted/s",
            report.blobs_examined as f64 / secs,
            report.blobs_deleted as f64 / secs,
            report.manifests_deleted as f64 / secs
        );
        println!(
            "baseline: unlinking {} files took {:.3} s; gc took {:.1}x that",
            report.blobs_deleted,
            baseline.as_secs_f64(),
            secs / baseline.as_secs_f64()
        );
    });
}
