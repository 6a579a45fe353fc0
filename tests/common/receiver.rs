//! A webhook receiver for tests: an HTTP server on loopback that records
//! what berth posts to `/hook`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Answer 500 to this many requests first.
    fail_first: Mutex<usize>,
}

/// An HTTP server on loopback that records what berth posts.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap(), fail_first).await
    }

    pub async fn start_on(addr: SocketAddr, fail_first: usize) -> Receiver {
        let state = Arc::new(ReceiverState::default());
        *state.fail_first.lock().unwrap() = fail_first;
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (successful or not).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, not {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Receiver {
    /// The JSON bodies received so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.received()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    /// The action of every event received so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .flat_map(|body| body["events"].as_array().cloned().unwrap_or_default())
            .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until `n` events with `action` arrived.
    pub async fn wait_for_action(&self, action: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.actions().iter().filter(|a| *a == action).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {n} {action} events; got {:?}",
                self.actions()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the `n`th request (counting from 1) and returns its body.
    pub async fn nth_body(&self, n: usize) -> Value {
        let got = self.wait_for(n).await;
        serde_json::from_slice(&got[n - 1].body).unwrap_or(Value::Null)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state.got.lock().unwrap().push(Received { headers, body });
    let mut fail = state.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}
