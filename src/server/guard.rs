//! Each accepted connection: counted against `max_connections` (one over
//! the cap is closed at once), and its writes timed, so a client that
//! stops reading an answer is disconnected instead of holding a task, a
//! socket and an open blob for good.
//!
//! A connection berth closes is closed lingering, as web servers do: its
//! sending side first, then what the client still sends is read and
//! dropped for a few seconds before the socket goes. Closed at once with
//! request bytes unread (an upload refused before its body was read: a
//! full disk, a bad digest), the socket would answer the client's next
//! bytes with a reset, which can destroy the answer before the client
//! reads it; the client would see a broken pipe instead of the error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// The acceptor under TLS (or alone, for plain HTTP).
#[derive(Clone)]
pub struct Guard {
    permits: Arc<Semaphore>,
    write_timeout: Duration,
}

impl Guard {
    pub fn new(max_connections: usize, write_timeout: Duration) -> Guard {
        Guard {
            permits: Arc::new(Semaphore::new(max_connections)),
            write_timeout,
        }
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for Guard {
    type Stream = Guarded;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Guarded, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!("server.max_connections reached: closing a new connection");
            return std::future::ready(Err(io::Error::other("connection limit reached")));
        };
        let _ = stream.set_nodelay(true);
        std::future::ready(Ok((
            Guarded {
                inner: Some(stream),
                _permit: permit,
                write_timeout: self.write_timeout,
                stalled: None,
            },
            service,
        )))
    }
}

/// A connection holding its place under the cap until it closes.
pub struct Guarded {
    /// Taken only when dropped, to close lingering.
    inner: Option<TcpStream>,
    _permit: OwnedSemaphorePermit,
    write_timeout: Duration,
    /// Running while the socket takes no more bytes.
    stalled: Option<Pin<Box<Sleep>>>,
}

/// How long a closing connection's incoming bytes are read and dropped,
/// at most, and how long it may send nothing before it is closed for good.
const LINGER: Duration = Duration::from_secs(10);
const LINGER_IDLE: Duration = Duration::from_secs(2);

impl Guarded {
    fn stream(&mut self) -> &mut TcpStream {
        self.inner
            .as_mut()
            .expect("a connection in use has its stream")
    }
    /// After a write (or flush) that could not proceed: an error once the
    /// client has read nothing for the whole timeout.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} s (server.write_timeout_seconds)",
                    timeout.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        ready: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match ready {
            Poll::Pending => self.stall(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let ready = Pin::new(this.stream()).poll_write(cx, buf);
        this.progressed(ready, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let ready = Pin::new(this.stream()).poll_write_vectored(cx, bufs);
        this.progressed(ready, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let ready = Pin::new(this.stream()).poll_flush(cx);
        this.progressed(ready, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let (Some(stream), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(linger(stream));
    }
}

/// Sends FIN, then reads and drops what the client still sends until it
/// closes its side, goes quiet for LINGER_IDLE, or LINGER has passed.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = vec![0u8; 8 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(LINGER_IDLE, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
