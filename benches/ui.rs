//! The web UI's server side: time to render the repository list among
//! 10,000 repositories and a repository page among 10,000 tags (one page
//! of 50 either way), through the whole router as a browser's request
//! would go; and the bytes of each main page (printed, with the asset
//! bytes once).
//!
//! Run: `cargo bench --bench ui`

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

use berth::auth::accounts::{Grant, Namespace};
use berth::auth::scope::Actions;
use berth::core::names::{Reference, RepoName, Tag};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A distinct small index per `n`, so each tag has its own manifest.
fn manifest(n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [],
        "annotations": { "n": n.to_string() },
    }))
    .unwrap()
}

async fn get(router: &axum::Router, path: &str) -> usize {
    let request = Request::get(path)
        .header("host", "registry.example:5000")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert!(response.status().is_success(), "{path}: {response:?}");
    axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap()
        .len()
}

fn ui(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = berth::config::Config {
        data_dir: dir.path().to_owned(),
        ..berth::config::Config::default()
    };
    let app = runtime.block_on(berth::App::build(&config)).unwrap();
    let origin = berth::core::event::Origin::default();
    runtime.block_on(async {
        // Anonymous visitors may pull everything: the pages render
        // without a session, as for a public registry.
        app.meta
            .put_grant(
                "anonymous",
                &Grant {
                    namespace: Namespace::parse("").unwrap(),
                    actions: Actions::PULL,
                },
            )
            .await
            .unwrap();
        let big: RepoName = "bench/tags".parse().unwrap();
        for i in 0..10_000 {
            let tag = Reference::Tag(format!("v{i}").parse::<Tag>().unwrap());
            app.registry
                .put_manifest(&big, &tag, Some(INDEX), &manifest(i), &origin)
                .await
                .unwrap();
        }
        for i in 0..10_000 {
            let repo: RepoName = format!("bench/r{i:05}").parse().unwrap();
            let tag = Reference::Tag("latest".parse::<Tag>().unwrap());
            app.registry
                .put_manifest(&repo, &tag, Some(INDEX), &manifest(i), &origin)
                .await
                .unwrap();
        }
    });
    let router = app.router.clone();
    let digest = runtime
        .block_on(app.meta.tag_rows(&"bench/tags".parse().unwrap()))
        .unwrap()[0]
        .digest
        .clone();
    let pages = [
        ("repository list, first page of 10,000", "/ui/".to_owned()),
        ("repository list, search", "/ui/?q=r0999".to_owned()),
        (
            "repository list, a later page",
            "/ui/?after=bench%2Fr05000".to_owned(),
        ),
        (
            "repository page, 10,000 tags",
            "/ui/r/bench/tags".to_owned(),
        ),
        (
            "repository page, 10,000 tags, page 100 by name",
            "/ui/r/bench/tags?sort=name&page=100".to_owned(),
        ),
        (
            "manifest page",
            format!("/ui/r/bench/tags/-/manifests/{digest}"),
        ),
        ("sign-in page", "/ui/login".to_owned()),
    ];
    for (name, path) in &pages {
        let bytes = runtime.block_on(get(&router, path));
        println!("bytes: {name}: {bytes}");
    }
    for asset in ["/ui/assets/ui-1.css", "/ui/assets/ui-1.js"] {
        println!("bytes: {asset}: {}", runtime.block_on(get(&router, asset)));
    }
    let mut group = c.benchmark_group("ui render");
    group.sample_size(20);
    for (name, path) in &pages {
        group.bench_function(*name, |b| {
            b.to_async(&runtime).iter(|| get(&router, path));
        });
    }
    group.finish();
}

criterion_group!(benches, ui);
criterion_main!(benches);
