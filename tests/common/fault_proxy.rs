//! A fault-injecting TCP proxy on loopback, between berth and a server
//! (the S3 server in the S3 fault tests). Changing its mode resets every
//! connection open through it (so a client's pooled connections meet the
//! new mode too); the mode applies to each connection made after:
//!
//! - `Pass`: bytes both ways, untouched;
//! - `Latency(d)`: each chunk, either way, is held for `d`;
//! - `Reset`: each connection is reset (RST) as soon as it is accepted;
//! - `SlowDown`: each request is answered `503 SlowDown`, as S3 answers
//!   when throttling, and the connection closed;
//! - `CutAfter(n)`: the first `n` bytes from the client pass, then the
//!   connection is reset (a part upload cut mid-body).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    Pass,
    Latency(Duration),
    Reset,
    SlowDown,
    CutAfter(usize),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`), passing everything.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Fault::Pass);
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut changes = watching.clone();
                let fault = *changes.borrow_and_update();
                tokio::spawn(serve(client, upstream.clone(), fault, changes));
            }
        });
        FaultProxy { addr, mode, task }
    }

    /// `http://` and the proxy's address.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resets a connection: closes it with SO_LINGER 0, so the peer gets RST.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn serve(
    mut client: TcpStream,
    upstream: String,
    fault: Fault,
    mut changes: watch::Receiver<Fault>,
) {
    match fault {
        Fault::Reset => reset(client),
        Fault::SlowDown => {
            // Read the request's head (and whatever of its body came), then
            // answer as throttled S3 does.
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                        <Message>Please reduce your request rate.</Message></Error>";
            let answer = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
        }
        Fault::Pass | Fault::Latency(_) | Fault::CutAfter(_) => {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                reset(client);
                return;
            };
            let delay = match fault {
                Fault::Latency(d) => d,
                _ => Duration::ZERO,
            };
            let cut = match fault {
                Fault::CutAfter(n) => Some(n),
                _ => None,
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let cut_off = {
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut passed = 0usize;
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = match cut {
                            Some(limit) if passed + n >= limit => {
                                let _ = sw.write_all(&buf[..limit - passed]).await;
                                return true;
                            }
                            _ => n,
                        };
                        passed += n;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                    false
                };
                let down = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::pin!(up, down);
                tokio::select! {
                    c = &mut up => { if !c { (&mut down).await; } c }
                    _ = &mut down => false,
                    _ = changes.changed() => true,
                }
            };
            if cut_off {
                // Both ways reset, mid-request.
                if let (Ok(client), Ok(server)) = (cr.reunite(cw), sr.reunite(sw)) {
                    reset(client);
                    reset(server);
                }
            }
        }
    }
}
