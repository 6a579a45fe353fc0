//! A real S3-compatible server on loopback for tests: moto's server
//! (PyPI `moto[server]`), installed by `scripts/install-test-deps.sh` into
//! `/var/tmp/berth-moto`, or found on PATH.
//!
//! ```ignore
//! let moto = MotoServer::start();
//! let bucket = moto.bucket().await;
//! let berth = Berth::start_with_config(&bucket.config(""));
//! ```
//!
//! Each `bucket()` is a fresh, empty bucket, so several berths (replicas
//! sharing one bucket, or unrelated tests) can use one server.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;

/// The smallest part the server takes (other than the last), lowered from
/// S3's 5 MiB so tests drive uploads of many parts with small blobs.
pub const MIN_PART_SIZE: u64 = 1024;

pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// One bucket on a [`MotoServer`].
pub struct S3Bucket {
    pub endpoint: String,
    pub name: String,
}

fn moto_server_binary() -> PathBuf {
    let venv = PathBuf::from("/var/tmp/berth-moto/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!("moto_server not found: run scripts/install-test-deps.sh (it installs moto[server])")
    })
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> MotoServer {
        let binary = moto_server_binary();
        for _ in 0..3 {
            let port = super::free_port();
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("S3_UPLOAD_PART_MIN_SIZE", MIN_PART_SIZE.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto_server");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port to someone else: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return MotoServer {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start");
    }

    /// Creates a fresh, empty bucket.
    pub async fn bucket(&self) -> S3Bucket {
        let name = format!("berth-{}", uuid_like());
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("create bucket");
        assert!(r.status().is_success(), "creating bucket {name}: {r:?}");
        S3Bucket {
            endpoint: self.endpoint.clone(),
            name,
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A name unique enough for buckets, without a RNG crate.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{:?}{}{}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    super::sha256(seed.as_bytes())[7..27].to_owned()
}

impl S3Bucket {
    /// berth's `[storage]` config for this bucket; `extra` is more lines of
    /// `[storage.s3]` (e.g. `part_size = 2048`).
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"{}\"\nbucket = \"{}\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\n\
             min_part_size = {MIN_PART_SIZE}\n{extra}\n",
            self.endpoint, self.name
        )
    }

    /// A client of this bucket, to look at what berth stored.
    pub fn store(&self) -> AmazonS3 {
        // Its TLS takes the process's crypto provider, as berth's does.
        berth::install_crypto_provider();
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.name)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("S3 client")
    }

    /// The object at `key`, if there is one.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.store().get(&Path::from(key)).await {
            Ok(got) => Some(got.bytes().await.expect("object bytes").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading {key}: {e}"),
        }
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store()
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list objects");
        keys.sort();
        keys
    }

    /// The key of a blob (`sha256:<hex>`) under `prefix` (`""` or `a/`).
    pub fn blob_key(prefix: &str, digest: &str) -> String {
        let (algorithm, hex) = digest.split_once(':').expect("a digest");
        format!("{prefix}blobs/{algorithm}/{}/{hex}", &hex[..2])
    }
}
