//! A crash loop: berth (SQLite and blobs on disk) is killed with SIGKILL
//! every few seconds and started again, while clients push, pull and
//! delete. Afterwards every push that got its 201 pulls back
//! byte-identical (unless a delete of it was acknowledged), every
//! acknowledged push and delete has reached the webhook receiver (as an
//! event with a stable id, so a redelivery after a crash is recognisable),
//! and garbage collection leaves no upload behind.
//!
//! `CRASH_LOOP_SECONDS` sets how long the loop runs (default 20; the long
//! soak in benches/README.md runs it for minutes).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::push::{OCI_MANIFEST, random_bytes};
use common::receiver::Receiver;
use common::{Berth, sha256};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// A push that was acknowledged: what must pull back.
#[derive(Clone)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    layer: Vec<u8>,
}

#[derive(Default)]
struct Ledger {
    pushed: Vec<Pushed>,
    /// Digests whose delete was acknowledged (202).
    deleted: BTreeSet<String>,
    /// Digests a delete was sent for without an answer: either way.
    maybe_deleted: BTreeSet<String>,
    pulls_ok: usize,
    /// Requests that failed because berth was down or died under them.
    failed: usize,
    /// Answers that were neither success nor a connection failure.
    errors: Vec<String>,
}

async fn push_one(c: &Client, base: &str, repo: &str, tag: &str) -> Result<Pushed, String> {
    let layer = random_bytes(64 * 1024 + (tag.len() * 7919) % 200_000);
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#);
    for blob in [config.as_bytes(), layer.as_slice()] {
        let r = c
            .post(format!(
                "{base}/v2/{repo}/blobs/uploads/?digest={}",
                sha256(blob)
            ))
            .body(blob.to_vec())
            .send()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        if r.status() != StatusCode::CREATED {
            return Err(format!("blob: {}", r.status()));
        }
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("manifest: {}", r.status()));
    }
    Ok(Pushed {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest,
        layer,
    })
}

/// Pulls `p` back: manifest by tag and digest, and its layer.
async fn pull(c: &Client, base: &str, p: &Pushed) -> Result<(), String> {
    let digest = sha256(&p.manifest);
    for reference in [p.tag.as_str(), digest.as_str()] {
        let r = c
            .get(format!("{base}/v2/{}/manifests/{reference}", p.repo))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        if r.status() != StatusCode::OK {
            return Err(format!("manifest {reference}: {}", r.status()));
        }
        let body = r.bytes().await.map_err(|e| format!("connection: {e}"))?;
        if body != p.manifest {
            return Err(format!("manifest {reference}: different bytes"));
        }
    }
    let r = c
        .get(format!("{base}/v2/{}/blobs/{}", p.repo, sha256(&p.layer)))
        .send()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    if r.status() != StatusCode::OK {
        return Err(format!("layer: {}", r.status()));
    }
    let body = r.bytes().await.map_err(|e| format!("connection: {e}"))?;
    if body != p.layer {
        return Err("layer: different bytes".into());
    }
    Ok(())
}

async fn worker(id: usize, base: String, ledger: Arc<Mutex<Ledger>>, until: Instant) {
    let c = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut n = 0usize;
    while Instant::now() < until {
        n += 1;
        let repo = format!("crash/w{id}");
        match n % 4 {
            // A pull of something acknowledged and not deleted.
            1 => {
                let pick = {
                    let l = ledger.lock().unwrap();
                    l.pushed
                        .iter()
                        .rev()
                        .find(|p| {
                            let d = sha256(&p.manifest);
                            !l.deleted.contains(&d) && !l.maybe_deleted.contains(&d)
                        })
                        .cloned()
                };
                if let Some(p) = pick {
                    match pull(&c, &base, &p).await {
                        Ok(()) => ledger.lock().unwrap().pulls_ok += 1,
                        Err(e) if e.starts_with("connection") => ledger.lock().unwrap().failed += 1,
                        Err(e) => ledger.lock().unwrap().errors.push(format!("pull: {e}")),
                    }
                }
            }
            // A delete of one of this worker's acknowledged pushes.
            3 => {
                let pick = {
                    let l = ledger.lock().unwrap();
                    l.pushed
                        .iter()
                        .filter(|p| p.repo == repo)
                        .map(|p| sha256(&p.manifest))
                        .find(|d| !l.deleted.contains(d) && !l.maybe_deleted.contains(d))
                };
                if let Some(digest) = pick {
                    ledger.lock().unwrap().maybe_deleted.insert(digest.clone());
                    let r = c
                        .delete(format!("{base}/v2/{repo}/manifests/{digest}"))
                        .send()
                        .await;
                    let mut l = ledger.lock().unwrap();
                    match r {
                        Ok(r) if r.status() == StatusCode::ACCEPTED => {
                            l.maybe_deleted.remove(&digest);
                            l.deleted.insert(digest);
                        }
                        Ok(r) if r.status().is_server_error() => l.failed += 1,
                        Ok(r) => l.errors.push(format!("delete: {}", r.status())),
                        Err(_) => l.failed += 1,
                    }
                }
            }
            _ => match push_one(&c, &base, &repo, &format!("t{n}")).await {
                Ok(p) => ledger.lock().unwrap().pushed.push(p),
                Err(e) if e.starts_with("connection") || e.contains(": 5") => {
                    ledger.lock().unwrap().failed += 1
                }
                Err(e) => ledger.lock().unwrap().errors.push(format!("push: {e}")),
            },
        }
        if Instant::now() < until {
            // Berth may be down: try again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_every_few_seconds_loses_nothing_acknowledged() {
    crash_loop("disk", "", None).await;
}

/// The same with blobs in S3 (moto); on the suite's PostgreSQL pass the
/// metadata is in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_every_few_seconds_loses_nothing_acknowledged_on_s3() {
    let moto = common::s3::MotoServer::start();
    let bucket = moto.bucket().await;
    crash_loop("s3", &bucket.config("part_size = 65536"), Some(&bucket)).await;
}

async fn crash_loop(what: &str, storage: &str, bucket: Option<&common::s3::S3Bucket>) {
    let seconds: u64 = std::env::var("CRASH_LOOP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let receiver = Receiver::start(0).await;
    let mut b = Berth::start_with_config(&format!(
        "[events]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\n\n\
         [[events.webhooks]]\nname = \"crash\"\nurl = \"{}\"\n\n\
         [gc]\ninterval_seconds = 0\ngrace_period_seconds = 0\nupload_max_age_seconds = 0\n\n\
         {storage}",
        receiver.url()
    ));
    let base = b.url("");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(worker(id, base.clone(), ledger.clone(), until)))
        .collect();
    let mut kills = 0;
    while Instant::now() < until {
        // Every 1.5 to 3.5 seconds, varying where requests are cut.
        tokio::time::sleep(Duration::from_millis(1500 + (kills * 700) % 2000)).await;
        b.crash_and_restart();
        kills += 1;
    }
    for w in workers {
        w.await.unwrap();
    }
    b.crash_and_restart();
    kills += 1;

    let l = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(l.errors.is_empty(), "unclear answers: {:?}", l.errors);
    assert!(!l.pushed.is_empty(), "some pushes succeeded between kills");
    // Every acknowledged push, unless its delete was acknowledged (or may
    // have happened), pulls back byte-identical.
    let c = Client::new();
    let mut checked = 0;
    for p in &l.pushed {
        let digest = sha256(&p.manifest);
        if l.deleted.contains(&digest) || l.maybe_deleted.contains(&digest) {
            let r = c
                .get(b.url(&format!("/v2/{}/manifests/{digest}", p.repo)))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            if l.deleted.contains(&digest) {
                assert_eq!(r.status(), StatusCode::NOT_FOUND, "deleted {digest}");
            }
            continue;
        }
        pull(&c, &b.url(""), p)
            .await
            .unwrap_or_else(|e| panic!("{}:{} lost: {e}", p.repo, p.tag));
        checked += 1;
    }

    // Every acknowledged push and delete reached the receiver; a
    // redelivery after a crash carries the same event id.
    let events = || -> Vec<Value> {
        receiver
            .bodies()
            .iter()
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let wanted_pushes: BTreeSet<(String, String)> = l
        .pushed
        .iter()
        .map(|p| (p.repo.clone(), sha256(&p.manifest)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ids, duplicates) = loop {
        let got = events();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for e in &got {
            *ids.entry(e["id"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        let pushes: BTreeSet<(String, String)> = got
            .iter()
            .filter(|e| e["action"] == "push" && e["target"]["tag"].is_string())
            .map(|e| {
                (
                    e["target"]["repository"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["target"]["digest"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        let deletes: BTreeSet<String> = got
            .iter()
            .filter(|e| e["action"] == "delete")
            .filter_map(|e| e["target"]["digest"].as_str().map(str::to_owned))
            .collect();
        let missing_push = wanted_pushes.difference(&pushes).count();
        let missing_delete = l.deleted.difference(&deletes).count();
        if missing_push == 0 && missing_delete == 0 {
            let duplicates = ids.values().filter(|n| **n > 1).count();
            break (ids.len(), duplicates);
        }
        assert!(
            Instant::now() < deadline,
            "{missing_push} acknowledged pushes and {missing_delete} deletes never reached the webhook"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Garbage collection leaves no upload behind.
    let report = b.manage(&["gc", "--json"]);
    let uploads: Vec<String> = match bucket {
        Some(bucket) => bucket.keys("uploads/").await,
        None => std::fs::read_dir(b.data_dir().join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    };
    assert!(
        uploads.is_empty(),
        "uploads left after gc: {uploads:?}; {report}"
    );

    println!(
        "crash loop ({what}): {seconds} s, {kills} SIGKILLs; {} pushes acknowledged ({checked} checked \
         identical, {} deleted), {} pulls, {} requests failed while berth was down; \
         {ids} distinct events delivered, {duplicates} of them more than once; gc: {report}",
        l.pushed.len(),
        l.deleted.len(),
        l.pulls_ok,
        l.failed
    );
}
