//! PostgreSQL faults, on a throwaway server of the test's own
//! (scripts/test-postgres.sh): berth's connections killed with
//! pg_terminate_backend, and the server stopped and started again, in the
//! middle of pushes. Each request succeeds or fails clearly (503, never a
//! 500); /readyz answers 503 while the server is down and 200 once it is
//! back; berth reconnects by itself; a chunked upload goes on across the
//! outage without losing or doubling a chunk; every acknowledged push
//! pulls back identical and its event reaches the webhook.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::push::{OCI_MANIFEST, random_bytes};
use common::receiver::Receiver;
use common::{Berth, sha256};
use reqwest::{Client, StatusCode};
use serde_json::json;

/// A PostgreSQL server in a directory of its own; stopped and removed on
/// drop.
struct Server {
    dir: PathBuf,
    url: String,
    _parent: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("pg");
        let out = Command::new(common::repo_root().join("scripts/test-postgres.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/test-postgres.sh");
        assert!(
            out.status.success(),
            "starting PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Server {
            dir,
            url,
            _parent: parent,
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .expect("a PostgreSQL server installed");
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "postgres",
                "--regid",
                "postgres",
                "--init-groups",
                "--",
            ])
            .arg(format!("/usr/lib/postgresql/{version}/bin/pg_ctl"))
            .arg("--pgdata")
            .arg(self.dir.join("data"))
            .args(["--wait", "--silent"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        self.pg_ctl(&["--mode", "immediate", "stop"]);
    }

    fn start_again(&self) {
        // restart with no server running starts one with the options it
        // was first started with (postmaster.opts).
        self.pg_ctl(&[
            "--log",
            self.dir.join("data/server.log").to_str().unwrap(),
            "restart",
        ]);
    }

    /// Terminates every connection to `database`; how many there were.
    fn terminate(&self, database: &str) -> usize {
        self.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{database}'"
        ))
        .parse()
        .unwrap()
    }

    /// Runs one SQL command; what it printed.
    fn psql(&self, command: &str) -> String {
        let out = Command::new("psql")
            .args(["--no-psqlrc", "--quiet", "--tuples-only", "--no-align"])
            .args(["--dbname", &self.url])
            .args(["--command", command])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(common::repo_root().join("scripts/test-postgres.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap().split('?').next().unwrap()
}

#[derive(Default)]
struct Tally {
    /// Manifest digests acknowledged with 201, with what to pull back.
    pushed: Vec<(String, Vec<u8>, Vec<u8>)>,
    unavailable: usize,
    connection: usize,
    other: Vec<String>,
}

/// Pushes small images in a loop until `until`, recording each answer.
async fn pusher(id: usize, base: String, tally: Arc<Mutex<Tally>>, until: Instant) {
    let c = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let tag = format!("p{id}-{n}");
        let layer = random_bytes(20_000);
        let config = format!(r#"{{"os":"linux","tag":"{tag}"}}"#);
        let mut outcome = Ok(());
        for blob in [config.as_bytes(), layer.as_slice()] {
            let r = c
                .post(format!(
                    "{base}/v2/pg/app/blobs/uploads/?digest={}",
                    sha256(blob)
                ))
                .body(blob.to_vec())
                .send()
                .await;
            outcome = match r {
                Ok(r) if r.status() == StatusCode::CREATED => Ok(()),
                Ok(r) => Err(r.status()),
                Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
            };
            if outcome.is_err() {
                break;
            }
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
        }))
        .unwrap();
        if outcome.is_ok() {
            outcome = match c
                .put(format!("{base}/v2/pg/app/manifests/{tag}"))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone())
                .send()
                .await
            {
                Ok(r) if r.status() == StatusCode::CREATED => Ok(()),
                Ok(r) => Err(r.status()),
                Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
            };
        }
        let mut t = tally.lock().unwrap();
        match outcome {
            Ok(()) => t.pushed.push((tag, manifest, layer)),
            Err(StatusCode::SERVICE_UNAVAILABLE) => t.unavailable += 1,
            Err(StatusCode::REQUEST_TIMEOUT) => t.connection += 1,
            Err(other) => t.other.push(format!("{tag}: {other}")),
        }
    }
}

async fn ready(c: &Client, b: &Berth) -> StatusCode {
    c.get(b.url("/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .status()
}

async fn patch(c: &Client, location: &str, start: usize, bytes: &[u8]) -> reqwest::Response {
    c.patch(location)
        .header(
            "content-range",
            format!("{start}-{}", start + bytes.len() - 1),
        )
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

fn location(b: &Berth, r: &reqwest::Response) -> String {
    b.url(&common::header(r, "location"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_and_a_restarted_server_lose_nothing() {
    let server = Server::start();
    let database = common::create_database(&server.url);
    // The throwaway server acknowledges commits before their WAL is written
    // (synchronous_commit=off, for speed); an immediate stop then loses
    // acknowledged ones, which is the server's doing, not berth's. Commits
    // to this test's database wait for their WAL, as on a real server.
    server.psql(&format!(
        "ALTER DATABASE \"{}\" SET synchronous_commit = on",
        database_name(&database)
    ));
    let receiver = Receiver::start(0).await;
    let b = Berth::start_with_config(&format!(
        "[database]\nurl = {database:?}\n\n\
         [events]\nfirst_backoff_seconds = 1\nmax_backoff_seconds = 1\n\n\
         [[events.webhooks]]\nname = \"pg\"\nurl = \"{}\"\n",
        receiver.url()
    ));
    let c = Client::new();
    assert_eq!(ready(&c, &b).await, StatusCode::OK);

    // A chunked upload that will span the outage.
    let r = c
        .post(b.url("/v2/pg/chunked/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut at = location(&b, &r);
    let chunks: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(1 << 20)).collect();
    let r = patch(&c, &at, 0, &chunks[0]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    at = location(&b, &r);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + Duration::from_secs(14);
    let pushers: Vec<_> = (0..3)
        .map(|id| tokio::spawn(pusher(id, b.url(""), tally.clone(), until)))
        .collect();

    // Connections killed twice under the pushes.
    let mut terminated = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        terminated += server.terminate(database_name(&database));
    }
    // The server down for four seconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop();
    let down = Instant::now();
    let mut ready_while_down = Vec::new();
    let mut chunk_while_down = None;
    while down.elapsed() < Duration::from_secs(4) {
        ready_while_down.push(ready(&c, &b).await);
        if chunk_while_down.is_none() {
            chunk_while_down = Some(patch(&c, &at, chunks[0].len(), &chunks[1]).await.status());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.start_again();
    let back = Instant::now();
    while ready(&c, &b).await != StatusCode::OK {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "berth never ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reconnected = back.elapsed();
    for p in pushers {
        p.await.unwrap();
    }

    assert!(
        ready_while_down
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "/readyz while the server was down: {ready_while_down:?}"
    );
    assert_eq!(
        chunk_while_down,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "a chunk sent while the server is down fails clearly"
    );
    // The upload goes on where it was acknowledged: the chunk refused
    // during the outage was not kept.
    let r = c.get(&at).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        common::header(&r, "range"),
        format!("0-{}", chunks[0].len() - 1)
    );
    let r = patch(&c, &at, chunks[0].len(), &chunks[1]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    at = location(&b, &r);
    let whole = chunks.concat();
    let digest = sha256(&whole);
    let start = chunks[0].len() + chunks[1].len();
    let separator = if at.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{at}{separator}digest={digest}"))
        .header("content-range", format!("{start}-{}", whole.len() - 1))
        .header("content-type", "application/octet-stream")
        .body(chunks[2].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let got = c
        .get(b.url(&format!("/v2/pg/chunked/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, whole, "the upload neither lost nor doubled a chunk");

    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(t.other.is_empty(), "unclear answers: {:?}", t.other);
    assert!(!t.pushed.is_empty());
    for (tag, manifest, layer) in &t.pushed {
        let r = c
            .get(b.url(&format!("/v2/pg/app/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{tag}");
        assert_eq!(&r.bytes().await.unwrap()[..], &manifest[..], "{tag}");
        let r = c
            .get(b.url(&format!("/v2/pg/app/blobs/{}", sha256(layer))))
            .send()
            .await
            .unwrap();
        assert_eq!(&r.bytes().await.unwrap()[..], &layer[..], "{tag}");
    }
    // Every acknowledged push's event arrives.
    let wanted: BTreeSet<String> = t.pushed.iter().map(|(tag, _, _)| tag.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (events, duplicates) = loop {
        let all: Vec<serde_json::Value> = receiver
            .bodies()
            .iter()
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .collect();
        let tags: BTreeSet<String> = all
            .iter()
            .filter(|e| e["action"] == "push")
            .filter_map(|e| e["target"]["tag"].as_str().map(str::to_owned))
            .collect();
        if wanted.is_subset(&tags) {
            let ids: BTreeSet<&str> = all.iter().filter_map(|e| e["id"].as_str()).collect();
            break (all.len(), all.len() - ids.len());
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged pushes have no event",
            wanted.difference(&tags).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "postgres faults: {terminated} connections terminated, server down 4 s, ready again \
         {reconnected:?} after it was; pushes: {} acknowledged (all pull back identical), \
         {} answered 503, {} cut off; {events} events delivered, {duplicates} redelivered",
        t.pushed.len(),
        t.unavailable,
        t.connection
    );
}
