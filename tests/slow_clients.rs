//! Slow and hostile clients, over raw TCP: headers trickled a byte at a
//! time, thousands of idle connections, a body that stops, a client that
//! stops reading a blob, more connections than the cap. Each is cut off
//! by its timeout (two seconds here, `[server]` in the config), other
//! clients are served meanwhile, and berth's memory and open files come
//! back to where they were.

mod common;

use std::time::{Duration, Instant};

use common::Berth;
use common::push::{push_blob, random_bytes};
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = "[server]\nheader_read_timeout_seconds = 2\nbody_read_timeout_seconds = 2\n\
                      write_timeout_seconds = 2\n";

/// Longer than any timeout here by far: a connection still open after it
/// was never going to be closed.
const PATIENCE: Duration = Duration::from_secs(30);

fn open_files(b: &Berth) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
        .unwrap()
        .count()
}

fn resident_bytes(b: &Berth) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Waits until `f` holds, checking every 100 ms for up to PATIENCE.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the server closes the connection; what came.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    got
}

/// A push and a pull by a well-behaved client.
async fn served(b: &Berth) {
    let c = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let bytes = random_bytes(100_000);
    let digest = push_blob(&c, b, "slow/ok", &bytes).await;
    let r = c
        .get(b.url(&format!("/v2/slow/ok/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), bytes);
}

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off() {
    let b = Berth::start_with_config(CONFIG);
    let mut s = TcpStream::connect(&b.host).await.unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut closed = false;
    // A header line that never ends, one byte every 200 ms.
    while start.elapsed() < PATIENCE {
        if s.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("an answer to headers that never ended"),
            Err(_) => {}
        }
        // Others are served meanwhile.
        if start.elapsed() < Duration::from_millis(300) {
            served(&b).await;
        }
    }
    assert!(
        closed,
        "the trickling connection was still open after {PATIENCE:?}"
    );
}

#[tokio::test]
async fn thousands_of_idle_connections_neither_block_others_nor_stay() {
    let b = Berth::start_with_config(CONFIG);
    let before = open_files(&b);
    let mut idle = Vec::new();
    for i in 0..2000 {
        let mut s = TcpStream::connect(&b.host).await.unwrap();
        // Half send nothing, half the start of a request.
        if i % 2 == 1 {
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHo").await.unwrap();
        }
        idle.push(s);
    }
    served(&b).await;
    let peak = open_files(&b);
    // All closed by the server, none answered.
    for s in &mut idle {
        assert_eq!(
            read_to_close(s).await,
            b"",
            "no answer to an idle connection"
        );
    }
    eventually("berth's open files back to where they were", || {
        open_files(&b) <= before + 8
    })
    .await;
    println!(
        "open files: {before} before, {peak} with 2000 idle connections, {} after",
        open_files(&b)
    );
    served(&b).await;
}

#[tokio::test]
async fn a_body_that_stops_is_cut_off_and_leaves_nothing() {
    let b = Berth::start_with_config(CONFIG);
    let digest = common::sha256(b"never sent");
    let mut s = TcpStream::connect(&b.host).await.unwrap();
    let head = format!(
        "POST /v2/slow/body/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 10485760\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&random_bytes(1 << 20)).await.unwrap();
    // ... and nothing more.
    let answer = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a stalled body is refused: {answer}"
    );
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    assert!(answer.contains("body_read_timeout_seconds"), "{answer}");
    eventually("no upload left", || {
        std::fs::read_dir(b.data_dir().join("uploads"))
            .unwrap()
            .count()
            == 0
    })
    .await;
    served(&b).await;
}

#[tokio::test]
async fn clients_that_stop_reading_a_blob_hold_neither_memory_nor_files() {
    let b = Berth::start_with_config(CONFIG);
    let c = Client::new();
    let blob = random_bytes(32 << 20);
    let digest = push_blob(&c, &b, "slow/read", &blob).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (files, memory) = (open_files(&b), resident_bytes(&b));
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&b.host).await.unwrap();
        let get = format!("GET /v2/slow/read/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(get.as_bytes()).await.unwrap();
        let mut start = vec![0u8; 64 * 1024];
        s.read_exact(&mut start).await.unwrap();
        assert!(start.starts_with(b"HTTP/1.1 200"));
        readers.push(s);
    }
    // 50 clients reading nothing of 32 MiB each, for longer than the
    // write timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = resident_bytes(&b).saturating_sub(memory);
    served(&b).await;
    // Each is disconnected: what it reads stops short of the blob.
    for s in &mut readers {
        let rest = read_to_close(s).await;
        assert!(
            rest.len() + 64 * 1024 < blob.len(),
            "a client that stopped reading was cut off"
        );
    }
    eventually("berth's open files back to where they were", || {
        open_files(&b) <= files + 8
    })
    .await;
    println!(
        "memory held by 50 stalled readers of a 32 MiB blob: {} KiB",
        held / 1024
    );
    assert!(
        held < 64 << 20,
        "stalled readers pinned {} MiB of memory",
        held >> 20
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_as_they_arrive() {
    let b = Berth::start_with_config(&format!("{CONFIG}max_connections = 20\n"));
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&b.host).await.unwrap());
    }
    // Give berth time to accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = TcpStream::connect(&b.host).await.unwrap();
    let _ = over
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(
        read_to_close(&mut over).await,
        b"",
        "a connection over the cap is closed unanswered"
    );
    // Once the idle ones time out, there is room again.
    for s in &mut held {
        read_to_close(s).await;
    }
    served(&b).await;
}
