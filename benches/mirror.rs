//! A pull-through mirror against its baselines, each measured in the same
//! run on release builds, everything on loopback:
//!
//! 1. cold pull through berth (a fresh mirror: everything fetched from the
//!    upstream while the client reads it) vs the same pull straight from
//!    the upstream: the mirror's overhead;
//! 2. warm pull through berth (all cached) vs a plain pull of the same
//!    image pushed to berth's own namespace;
//! 3. the bytes the upstream sends for N concurrent cold pulls of one
//!    image, as a multiple of the image's size (the goal is 1 for any N);
//! 4. berth's peak RSS rise during a cold pull of a 2 GiB layer: flat,
//!    whatever the size.
//!
//! The upstream is another berth. Pulls read every blob to its end (and
//! the manifest) and drop the bytes. Each timing is the median of
//! `MIRROR_BENCH_REPS` runs (default 3).
//!
//! Run: `cargo bench --bench mirror` (`MIRROR_BENCH_MIB`: the layer of 1
//! and 2, default 512; `MIRROR_BENCH_CLIENTS`: N of 3, default 20;
//! `MIRROR_BENCH_BIG_MIB`: the layer of 4, default 2048).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::Berth;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::Digest as _;

const CHUNK: usize = 1 << 20;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The n-th MiB of a layer seeded `seed`: distinct bytes, generated fast.
fn chunk(seed: u64, n: u64) -> bytes::Bytes {
    let mut block = vec![0u8; CHUNK];
    let mut x = (n ^ seed.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in block.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    block.into()
}

/// Streams a layer of `mib` MiB and a small config into `repo:tag` of
/// `base`; returns the image's size in bytes.
async fn push_image(c: &reqwest::Client, base: &str, repo: &str, seed: u64, mib: u64) -> u64 {
    let mut hasher = sha2::Sha256::new();
    for n in 0..mib {
        hasher.update(chunk(seed, n));
    }
    let layer = format!("sha256:{}", hex::encode(hasher.finalize()));
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body =
        futures_util::stream::iter(0..mib).map(move |n| Ok::<_, std::io::Error>(chunk(seed, n)));
    let r = c
        .patch(format!("{base}{location}"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{r:?}");
    let r = c
        .put(format!("{base}{location}?digest={layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{r:?}");
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let config_digest = common::sha256(&config);
    let config_size = config.len();
    let r = c
        .post(format!(
            "{base}/v2/{repo}/blobs/uploads/?digest={config_digest}"
        ))
        .body(config)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{r:?}");
    let size = mib * CHUNK as u64;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
    });
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{r:?}");
    size + config_size as u64
}

/// Pulls `repo:1` from `base` as a client does; returns the bytes read.
async fn pull(c: &reqwest::Client, base: &str, repo: &str) -> u64 {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    let manifest: Value = r.json().await.unwrap();
    let mut read = 0;
    for blob in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap()) {
        let digest = blob["digest"].as_str().unwrap();
        let r = c
            .get(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{r:?}");
        let mut stream = r.bytes_stream();
        while let Some(part) = stream.next().await {
            read += part.unwrap().len() as u64;
        }
    }
    read
}

/// A berth mirroring `upstream` as `docker.io`, open to loopback clients.
fn mirror_of(upstream: &Berth) -> Berth {
    Berth::start_with_config(&format!(
        "[[mirrors]]\nnamespace = \"docker.io\"\nupstream = \"{}\"\n",
        upstream.url("")
    ))
}

/// A sample of `/metrics` of `b`.
async fn metric(c: &reqwest::Client, b: &Berth, series: &str) -> f64 {
    let text = c
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

async fn timed<F: std::future::Future<Output = u64>>(f: F) -> (f64, u64) {
    let started = Instant::now();
    let bytes = f.await;
    (started.elapsed().as_secs_f64(), bytes)
}

#[tokio::main]
async fn main() {
    let mib = env("MIRROR_BENCH_MIB", 512);
    let clients = env("MIRROR_BENCH_CLIENTS", 20) as usize;
    let big_mib = env("MIRROR_BENCH_BIG_MIB", 2048);
    let reps = env("MIRROR_BENCH_REPS", 3).max(1);
    let c = reqwest::Client::new();
    let upstream = Berth::start();
    let up = upstream.url("");

    // 1 and 2: one image, pulled each way `reps` times.
    let image = push_image(&c, &up, "library/app", 1, mib).await;
    let (mut direct, mut cold, mut warm, mut plain) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let (secs, read) = timed(pull(&c, &up, "library/app")).await;
        assert_eq!(read, image);
        direct.push(secs);
        let mirror = mirror_of(&upstream);
        let base = mirror.url("");
        let (secs, read) = timed(pull(&c, &base, "docker.io/library/app")).await;
        assert_eq!(read, image);
        cold.push(secs);
        let (secs, _) = timed(pull(&c, &base, "docker.io/library/app")).await;
        warm.push(secs);
        push_image(&c, &base, "team/app", 1, mib).await;
        let (secs, _) = timed(pull(&c, &base, "team/app")).await;
        plain.push(secs);
    }
    let mb = image as f64 / 1e6;
    let (direct, cold, warm, plain) = (median(direct), median(cold), median(warm), median(plain));
    println!("image: {mib} MiB layer + config, {reps} runs each, medians");
    println!(
        "pull straight from the upstream:   {:6.0} MB/s",
        mb / direct
    );
    println!(
        "cold pull through the mirror:      {:6.0} MB/s  ({:.2}x the direct pull's time)",
        mb / cold,
        cold / direct
    );
    println!(
        "warm pull through the mirror:      {:6.0} MB/s  ({:.2}x a plain pull's time)",
        mb / warm,
        warm / plain
    );
    println!("plain pull of berth's own copy:    {:6.0} MB/s", mb / plain);

    // 3: N concurrent cold pulls of one image.
    let small_mib = (mib / 4).max(16);
    let image = push_image(&c, &up, "library/shared", 2, small_mib).await;
    let mirror = mirror_of(&upstream);
    let base = mirror.url("");
    let started = Instant::now();
    let pulls: Vec<_> = (0..clients)
        .map(|_| {
            let (c, base) = (c.clone(), base.clone());
            tokio::spawn(async move { pull(&c, &base, "docker.io/library/shared").await })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap(), image);
    }
    let secs = started.elapsed().as_secs_f64();
    let fetched = metric(
        &c,
        &mirror,
        "berth_mirror_upstream_bytes_total{mirror=\"docker.io\"}",
    )
    .await;
    println!(
        "{clients} concurrent cold pulls of a {small_mib} MiB image: the upstream sent {:.3}x the image ({:.0} MB/s served in all)",
        fetched / image as f64,
        clients as f64 * image as f64 / 1e6 / secs
    );

    // 4: memory during a cold pull of a large layer.
    let image = push_image(&c, &up, "library/big", 3, big_mib).await;
    let mirror = mirror_of(&upstream);
    c.get(mirror.url("/v2/")).send().await.unwrap();
    let idle = peak_rss_kib(mirror.pid());
    let (secs, read) = timed(pull(&c, &mirror.url(""), "docker.io/library/big")).await;
    assert_eq!(read, image);
    let after = peak_rss_kib(mirror.pid());
    println!(
        "cold pull of a {big_mib} MiB layer: {:.0} MB/s; berth's peak RSS {} MiB idle, rose {} MiB",
        image as f64 / 1e6 / secs,
        idle / 1024,
        after.saturating_sub(idle) / 1024
    );
}
