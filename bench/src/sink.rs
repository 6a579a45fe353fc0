//! berth-sink: the least a registry can do with a push, and nothing more.
//!
//! It answers the distribution API's push requests (`POST` an upload,
//! `PATCH` chunks, `PUT ?digest=`, `PUT` a manifest) by receiving the bytes
//! and hashing them with SHA-256 on a second thread, as a verifying
//! registry must, and then drops them: no storage, no metadata, no
//! durability. Pushing to it with `berth-bench` or `skopeo` measures what
//! the machine allows for receiving and hashing alone, with the client on
//! the same cores, the ceiling that a real registry's push is held against
//! in `benches/compare.sh`. Pulls find nothing (every GET or HEAD of a blob
//! or manifest is 404).
//!
//! `berth-sink [ADDR]` (default `127.0.0.1:0`) prints
//! `listening on http://ADDR` and serves until killed. One thread per
//! connection, HTTP/1.1 with keep-alive, bodies with `Content-Length` or
//! chunked transfer encoding.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

/// Bytes handed to the hashing thread at a time.
const BATCH: usize = 1 << 20;

/// Upload sessions: the running hash and length of each.
type Sessions = Arc<Mutex<HashMap<u64, (Sha256, u64)>>>;

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on http://{}", listener.local_addr()?);
    let sessions = Sessions::default();
    let next = Arc::new(AtomicU64::new(1));
    for stream in listener.incoming() {
        let (stream, sessions, next) = (stream?, sessions.clone(), next.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &sessions, &next) {
                // A client that probes for TLS first (skopeo, podman) sends
                // a handshake that is not HTTP; it then comes back in plain
                // HTTP on another connection.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
                ) {
                    eprintln!("connection: {e}");
                }
            }
        });
    }
    Ok(())
}

struct Request {
    method: String,
    path: String,
    query: String,
    /// Content-Length; 0 when absent.
    length: u64,
    chunked: bool,
}

/// Reads one request head; `None` when the client closed the connection.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        length: 0,
        chunked: false,
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(Some(req));
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            req.length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            req.chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
}

fn serve(stream: TcpStream, sessions: &Sessions, next: &AtomicU64) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    // Batches go back and forth between this thread and the hasher, so
    // they are allocated once per connection.
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        free_tx
            .send(Vec::with_capacity(BATCH))
            .expect("room for three");
    }
    while let Some(req) = read_head(&mut r)? {
        let upload = req
            .path
            .rsplit_once("/blobs/uploads/")
            .and_then(|(_, id)| id.parse::<u64>().ok());
        let response = match (req.method.as_str(), upload) {
            ("GET", _) if req.path == "/v2/" || req.path == "/v2" => ok("200 OK", ""),
            ("POST", _) if req.path.ends_with("/blobs/uploads/") => {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let (hash, len) = receive(&mut r, &req, Sha256::new(), &free_tx, &free_rx)?;
                let location = format!("{}{id}", req.path);
                match digest_param(&req.query) {
                    // A monolithic POST ?digest= finishes at once.
                    Some(want) => finish(id, hash, len, &want, &req.path),
                    None => {
                        sessions.lock().unwrap().insert(id, (hash, len));
                        accepted(&location, len)
                    }
                }
            }
            ("PATCH" | "PUT", Some(id)) => {
                let Some((hash, len)) = sessions.lock().unwrap().remove(&id) else {
                    drain(&mut r, &req, &free_tx, &free_rx)?;
                    let unknown = error("404 Not Found", "BLOB_UPLOAD_UNKNOWN");
                    out.write_all(unknown.as_bytes())?;
                    continue;
                };
                let (hash, more) = receive(&mut r, &req, hash, &free_tx, &free_rx)?;
                let len = len + more;
                match (req.method.as_str(), digest_param(&req.query)) {
                    ("PUT", Some(want)) => finish(id, hash, len, &want, &req.path),
                    ("PUT", None) => error("400 Bad Request", "DIGEST_INVALID"),
                    _ => {
                        sessions.lock().unwrap().insert(id, (hash, len));
                        accepted(&req.path, len)
                    }
                }
            }
            ("PUT", _) if req.path.contains("/manifests/") => {
                let (hash, _) = receive(&mut r, &req, Sha256::new(), &free_tx, &free_rx)?;
                let digest = format!("sha256:{}", hex::encode(hash.finalize()));
                let location = format!("{}{digest}", req.path.rsplit_once('/').unwrap().0);
                created(&location, &digest)
            }
            // A HEAD answer has no body: the next answer follows at once.
            ("HEAD", _) => ok("404 Not Found", ""),
            _ => {
                drain(&mut r, &req, &free_tx, &free_rx)?;
                error("404 Not Found", "NAME_UNKNOWN")
            }
        };
        out.write_all(response.as_bytes())?;
    }
    Ok(())
}

fn digest_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("digest="))
        .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
}

/// The answer to the request that ends upload `id` (no longer among the
/// sessions): 201 if its bytes hash to `want`.
fn finish(id: u64, hash: Sha256, len: u64, want: &str, path: &str) -> String {
    let got = format!("sha256:{}", hex::encode(hash.finalize()));
    if got != want {
        eprintln!("upload {id}: {len} bytes hash to {got}, not {want}");
        return error("400 Bad Request", "DIGEST_INVALID");
    }
    let repo = path.rsplit_once("/blobs/uploads/").map_or(path, |(r, _)| r);
    created(&format!("{repo}/blobs/{got}"), &got)
}

fn ok(status: &str, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n")
}

fn accepted(location: &str, len: u64) -> String {
    let range = format!("0-{}", len.saturating_sub(1));
    ok(
        "202 Accepted",
        &format!("Location: {location}\r\nRange: {range}\r\n"),
    )
}

fn created(location: &str, digest: &str) -> String {
    ok(
        "201 Created",
        &format!("Location: {location}\r\nDocker-Content-Digest: {digest}\r\n"),
    )
}

fn error(status: &str, code: &str) -> String {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"berth-sink"}}]}}"#);
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads a request's body into `hash` on a hashing thread, batch by
/// batch; returns the hash and the body's length.
fn receive(
    r: &mut impl BufRead,
    req: &Request,
    mut hash: Sha256,
    free_tx: &SyncSender<Vec<u8>>,
    free_rx: &Receiver<Vec<u8>>,
) -> io::Result<(Sha256, u64)> {
    if !req.chunked && req.length == 0 {
        return Ok((hash, 0));
    }
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(1);
    let give_back = free_tx.clone();
    let hasher = std::thread::spawn(move || {
        for batch in full_rx {
            hash.update(&batch);
            let _ = give_back.send(batch);
        }
        hash
    });
    let mut body = Body::of(r, req);
    let mut total = 0;
    let result = loop {
        let mut batch = free_rx.recv().expect("the hasher gives batches back");
        match fill(&mut body, &mut batch) {
            Ok(0) => {
                let _ = free_tx.send(batch);
                break Ok(());
            }
            Ok(n) => total += n as u64,
            Err(e) => break Err(e),
        }
        full_tx.send(batch).expect("the hasher runs until the end");
    };
    drop(full_tx);
    let hash = hasher.join().expect("hashing does not panic");
    result.map(|()| (hash, total))
}

/// Reads and drops a request's body.
fn drain(
    r: &mut impl BufRead,
    req: &Request,
    free_tx: &SyncSender<Vec<u8>>,
    free_rx: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    receive(r, req, Sha256::new(), free_tx, free_rx).map(drop)
}

/// Fills `batch` with up to [`BATCH`] bytes of the body; how many.
fn fill(body: &mut impl Read, batch: &mut Vec<u8>) -> io::Result<usize> {
    batch.resize(BATCH, 0);
    let mut got = 0;
    while got < BATCH {
        match body.read(&mut batch[got..])? {
            0 => break,
            n => got += n,
        }
    }
    batch.truncate(got);
    Ok(got)
}

/// A request's body: `Content-Length` bytes, or chunked transfer
/// encoding (`<hex size>\r\n<bytes>\r\n` ... `0\r\n\r\n`) decoded.
enum Body<'a, R> {
    Sized(io::Take<&'a mut R>),
    Chunked { r: &'a mut R, left: u64, done: bool },
}

impl<'a, R: BufRead> Body<'a, R> {
    fn of(r: &'a mut R, req: &Request) -> Body<'a, R> {
        if req.chunked {
            Body::Chunked {
                r,
                left: 0,
                done: false,
            }
        } else {
            Body::Sized(r.take(req.length))
        }
    }
}

impl<R: BufRead> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (r, left, done) = match self {
            Body::Sized(body) => return body.read(buf),
            Body::Chunked { r, left, done } => (r, left, done),
        };
        if *done {
            return Ok(0);
        }
        if *left == 0 {
            let line = read_line(r)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            *left = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if *left == 0 {
                // Trailers, if any, end with an empty line.
                while !read_line(r)?.is_empty() {}
                *done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(*left as usize);
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        *left -= n as u64;
        if *left == 0 {
            // The CRLF that ends each chunk.
            read_line(r)?;
        }
        Ok(n)
    }
}

/// One line, without its line end.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(body: &[u8], head: &str) -> (String, u64, Vec<u8>) {
        let stream = format!("{head}\r\n").into_bytes();
        let mut input = io::Cursor::new([stream, body.to_vec()].concat());
        let req = read_head(&mut input).unwrap().unwrap();
        let (free_tx, free_rx) = sync_channel(3);
        for _ in 0..3 {
            free_tx.send(Vec::new()).unwrap();
        }
        let (hash, len) = receive(&mut input, &req, Sha256::new(), &free_tx, &free_rx).unwrap();
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).unwrap();
        (hex::encode(hash.finalize()), len, rest)
    }

    #[test]
    fn bodies_are_hashed_whole_and_the_next_request_is_left_in_place() {
        let data: Vec<u8> = (0..3 * BATCH + 17).map(|i| (i * 7 % 251) as u8).collect();
        let want = hex::encode(Sha256::digest(&data));

        let head = format!("PUT /x HTTP/1.1\r\nContent-Length: {}\r\n", data.len());
        let sized = [data.clone(), b"GET /v2/".to_vec()].concat();
        assert_eq!(
            hashes(&sized, &head),
            (want.clone(), data.len() as u64, b"GET /v2/".to_vec())
        );

        // Chunks of odd sizes that do not line up with the batches.
        let mut chunked = Vec::new();
        for piece in data.chunks(BATCH / 3 + 5) {
            chunked.extend(format!("{:x};ext=1\r\n", piece.len()).bytes());
            chunked.extend(piece);
            chunked.extend(b"\r\n");
        }
        chunked.extend(b"0\r\nX-Trailer: 1\r\n\r\nGET /v2/");
        let head = "PATCH /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n";
        assert_eq!(
            hashes(&chunked, head),
            (want, data.len() as u64, b"GET /v2/".to_vec())
        );
    }

    #[test]
    fn digests_in_queries_are_decoded() {
        assert_eq!(
            digest_param("a=1&digest=sha256%3Aabc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(digest_param("mount=x"), None);
    }
}
