//! Micro-benchmarks of the paths every push and pull takes: hashing bytes
//! as they stream in, parsing and validating a manifest, and looking up a
//! tag (from memory, and from SQLite among 10,000 tags), and what metrics
//! add: the layer each request passes, and a scrape among 10,000 blobs.
//! The token check is in `auth_check`.
//!
//! Run: `cargo bench --bench hot_paths`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use berth::core::hashing::UploadHasher;
use berth::core::manifest;
use berth::core::names::{Reference, RepoName, Tag};

fn digest_while_streaming(c: &mut Criterion) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut group = c.benchmark_group("digest while streaming");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("sha256, 1 MiB chunk", |b| {
        let mut hasher = UploadHasher::default();
        b.iter(|| hasher.update(&chunk));
    });
    // A chunked upload saves the running state after each chunk.
    group.bench_function("sha256, 1 MiB chunk + save state", |b| {
        let mut hasher = UploadHasher::default();
        b.iter(|| {
            hasher.update(&chunk);
            hasher.save()
        });
    });
    group.finish();
}

fn oci_manifest(layers: usize) -> Vec<u8> {
    let descriptor = |i: usize, media: &str| {
        serde_json::json!({
            "mediaType": media,
            "digest": format!("sha256:{:064x}", i),
            "size": 1000 + i,
        })
    };
    let layers: Vec<_> = (0..layers)
        .map(|i| descriptor(i + 1, "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(0, "application/vnd.oci.image.config.v1+json"),
        "layers": layers,
        "annotations": { "org.opencontainers.image.created": "2026-11-29T00:00:00Z" },
    }))
    .unwrap()
}

fn manifest_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("manifest parse and validate");
    for layers in [1, 10, 100] {
        let body = oci_manifest(layers);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("OCI manifest, {layers} layers"), |b| {
            b.iter(|| {
                manifest::parse(Some("application/vnd.oci.image.manifest.v1+json"), &body).unwrap()
            });
        });
    }
    group.finish();
}

fn tag_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = berth::config::Config {
        data_dir: dir.path().to_owned(),
        ..berth::config::Config::default()
    };
    let app = runtime.block_on(berth::App::build(&config)).unwrap();
    let repo: RepoName = "bench/tags".parse().unwrap();
    // 10,000 tags on one manifest, stored through the registry itself.
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    }))
    .unwrap();
    let origin = berth::core::event::Origin::default();
    runtime.block_on(async {
        for i in 0..10_000 {
            let reference = Reference::Tag(format!("v{i}").parse::<Tag>().unwrap());
            app.registry
                .put_manifest(
                    &repo,
                    &reference,
                    Some("application/vnd.oci.image.index.v1+json"),
                    &body,
                    &origin,
                )
                .await
                .unwrap();
        }
    });
    let tag: Tag = "v5000".parse().unwrap();
    let reference = Reference::Tag(tag.clone());
    let mut group = c.benchmark_group("tag lookup among 10,000");
    group.bench_function("registry (after the first read: memory)", |b| {
        b.to_async(&runtime).iter(|| async {
            app.registry
                .get_manifest(&repo, &reference, None)
                .await
                .unwrap()
        });
    });
    group.bench_function("metadata store (SQLite)", |b| {
        b.to_async(&runtime).iter(|| async {
            app.meta
                .manifest_by_tag(&repo, &tag)
                .await
                .unwrap()
                .unwrap()
        });
    });
    group.finish();
}

fn metrics(c: &mut Criterion) {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("metrics");
    // The same tiny route with and without the layer: the difference is
    // what counting costs each request.
    let bare = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let counted = bare.clone().layer(berth::api::metrics::TrackLayer);
    for (name, router) in [("request, bare", bare), ("request, counted", counted)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let request = Request::get("/").body(Body::empty()).unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                axum::body::to_bytes(response.into_body(), 16)
                    .await
                    .unwrap()
            });
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let meta = runtime
        .block_on(berth::meta::MetaStore::open(
            &berth::meta::Location::Sqlite(dir.path().join("meta.db")),
        ))
        .unwrap();
    let repo: RepoName = "bench/blobs".parse().unwrap();
    runtime.block_on(async {
        for i in 0..10_000u64 {
            let digest = format!("sha256:{i:064x}").parse().unwrap();
            meta.commit_blob(&repo, &digest, 1000 + i, None, async { Ok(true) })
                .await
                .unwrap();
        }
    });
    group.bench_function("scrape among 10,000 blobs", |b| {
        b.to_async(&runtime)
            .iter(|| async { berth::metrics::render(&meta.usage().await.unwrap()) });
    });
    group.finish();
}

criterion_group!(
    benches,
    digest_while_streaming,
    manifest_parse,
    tag_lookup,
    metrics
);
criterion_main!(benches);
