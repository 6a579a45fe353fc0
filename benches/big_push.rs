//! Pushes one large blob (2 GiB by default; `BIG_PUSH_MIB` to change) to a
//! release berth as a streamed PATCH, pulls it back, and reports throughput
//! and how much the push and the pull raised berth's peak RSS (VmHWM).
//! Streaming means that rise stays flat whatever the blob size.
//!
//! Run: `cargo bench --bench big_push`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use futures_util::StreamExt;
use sha2::Digest as _;

const CHUNK: usize = 1 << 20;

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The n-th MiB of the test blob: distinct bytes per MiB, generated fast.
fn chunk(n: u64) -> bytes::Bytes {
    let mut block = vec![0u8; CHUNK];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in block.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    block.into()
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("BIG_PUSH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let size = mib * CHUNK as u64;
    let b = common::Berth::start();
    let c = reqwest::Client::new();
    // Warm up, so the baseline includes the runtime's own buffers.
    c.get(b.url("/v2/")).send().await.unwrap();
    let idle = peak_rss_kib(b.pid());

    let mut hasher = sha2::Sha256::new();
    for n in 0..mib {
        hasher.update(chunk(n));
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));

    let r = c
        .post(b.url("/v2/bench/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let started = Instant::now();
    let body = futures_util::stream::iter(0..mib).map(|n| Ok::<_, std::io::Error>(chunk(n)));
    let r = c
        .patch(b.url(&location))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .put(b.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{r:?}");
    let push_secs = started.elapsed().as_secs_f64();
    let after_push = peak_rss_kib(b.pid());

    let started = Instant::now();
    let mut pulled = 0u64;
    let mut stream = c
        .get(b.url(&format!("/v2/bench/big/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    while let Some(part) = stream.next().await {
        pulled += part.unwrap().len() as u64;
    }
    assert_eq!(pulled, size);
    let pull_secs = started.elapsed().as_secs_f64();
    let after_pull = peak_rss_kib(b.pid());

    let mb = size as f64 / 1e6;
    println!("blob: {mib} MiB");
    println!(
        "push (streamed PATCH + PUT, synced): {:.0} MB/s",
        mb / push_secs
    );
    println!("pull (GET): {:.0} MB/s", mb / pull_secs);
    println!("berth peak RSS idle: {} MiB", idle / 1024);
    println!(
        "peak RSS rise during push: {} MiB",
        (after_push - idle) / 1024
    );
    println!(
        "peak RSS rise during pull: {} MiB",
        (after_pull.saturating_sub(after_push)) / 1024
    );
}
