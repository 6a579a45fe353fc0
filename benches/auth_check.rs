//! What checking credentials costs per request: a manifest GET through
//! berth's whole router (in process, no network) by an anonymous caller
//! with a public grant, with a bearer token, and with Basic auth; plus
//! verifying a token signature cold, which the token cache spares every
//! request after the first.
//!
//! Run: `cargo bench --bench auth_check`

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::Digest as _;
use tower::ServiceExt;

use berth::App;
use berth::auth::Credentials;
use berth::auth::manage::AccountAdmin;
use berth::auth::scope::ResourceScope;
use berth::config::Config;
use berth::meta::MetaStore;

struct Fixture {
    app: App,
    token: String,
    basic: String,
    _dir: tempfile::TempDir,
}

async fn call(app: &App, uri: &str, auth: Option<&str>, method: &str, body: Vec<u8>) -> StatusCode {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if method == "PUT" && uri.contains("/manifests/") {
        request = request.header("content-type", "application/vnd.oci.image.manifest.v1+json");
    }
    let response = app
        .router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    response.status()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let meta = MetaStore::open(&berth::meta::Location::Sqlite(dir.path().join("meta.db")))
        .await
        .unwrap();
    let accounts = AccountAdmin::new(meta);
    let password = accounts.add_user("alice", None, false).await.unwrap();
    accounts.grant("alice", "team", "pull,push").await.unwrap();
    accounts.grant("anonymous", "team", "pull").await.unwrap();
    let app = App::build(&config).await.unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"))
    );

    let blob = b"{}".to_vec();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob)));
    let uri = format!("/v2/team/app/blobs/uploads/?digest={digest}");
    assert_eq!(
        call(&app, &uri, Some(&basic), "POST", blob).await,
        StatusCode::CREATED
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2},
        "layers": []
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let status = call(
        &app,
        "/v2/team/app/manifests/latest",
        Some(&basic),
        "PUT",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let caller = app
        .auth
        .caller(Credentials::parse(Some(&basic)).unwrap(), None)
        .await
        .unwrap();
    let scope = ResourceScope::parse("repository:team/app:pull").unwrap();
    let token = format!(
        "Bearer {}",
        app.auth.issue_token(&caller, &[scope]).await.token
    );
    Fixture {
        app,
        token,
        basic,
        _dir: dir,
    }
}

fn manifest_get(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let f = Arc::new(runtime.block_on(fixture()));
    let mut group = c.benchmark_group("manifest GET by tag");
    let cases: [(&str, Option<String>); 3] = [
        ("anonymous (public grant)", None),
        ("bearer token", Some(f.token.clone())),
        ("basic auth", Some(f.basic.clone())),
    ];
    for (name, auth) in cases {
        let f = f.clone();
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let f = f.clone();
                let auth = auth.clone();
                async move {
                    let status = call(
                        &f.app,
                        "/v2/team/app/manifests/latest",
                        auth.as_deref(),
                        "GET",
                        vec![],
                    )
                    .await;
                    assert_eq!(status, StatusCode::OK);
                }
            })
        });
    }
    group.finish();

    // The signature check the cache saves: a new berth-signed token each
    // time, so nothing is cached.
    let caller = runtime
        .block_on(
            f.app
                .auth
                .caller(Credentials::parse(Some(&f.basic)).unwrap(), None),
        )
        .unwrap();
    let scope = ResourceScope::parse("repository:team/app:pull").unwrap();
    c.bench_function("token issue and first verify (uncached)", |b| {
        b.to_async(&runtime).iter(|| {
            let (f, caller, scope) = (f.clone(), caller.clone(), scope.clone());
            async move {
                let token = f.app.auth.issue_token(&caller, &[scope]).await.token;
                f.app
                    .auth
                    .caller(Credentials::Bearer(&token), None)
                    .await
                    .unwrap();
            }
        })
    });
}

criterion_group!(benches, manifest_get);
criterion_main!(benches);
