//! Running a workload: workers, limits, latencies and what is reported.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one operation did, when it succeeded.
#[derive(Default, Clone, Copy)]
pub struct Outcome {
    /// Payload bytes moved (blob bytes sent or received).
    pub bytes: u64,
    /// HTTP requests the operation made.
    pub requests: u64,
    /// Workload-specific count: manifest PUTs, tags or repositories listed.
    pub units: u64,
}

impl Outcome {
    pub fn requests(requests: u64) -> Self {
        Outcome {
            requests,
            ..Default::default()
        }
    }
}

/// Stop after `ops` operations or once `duration` has passed, whichever
/// comes first. Operations already running when time is up finish; at
/// least one operation always runs.
#[derive(Clone, Copy)]
pub struct Limit {
    pub ops: u64,
    pub duration: Duration,
}

#[derive(Default)]
pub struct RunStats {
    pub ops: u64,
    pub errors: u64,
    pub requests: u64,
    pub bytes: u64,
    pub units: u64,
    pub elapsed: Duration,
    /// CPU seconds this process (the load generator) spent meanwhile.
    pub client_cpu_s: f64,
    /// Latency of each successful operation, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    pub first_errors: Vec<String>,
}

impl RunStats {
    pub fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p) as f64 / 1000.0
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `op(index)` from `concurrency` workers until `limit` is reached.
pub async fn drive<F, Fut>(concurrency: usize, limit: Limit, op: F) -> RunStats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Outcome>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let cpu_start = crate::procmon::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let op = op.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut s = RunStats::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit.ops || (i > 0 && start.elapsed() >= limit.duration) {
                    break;
                }
                let t0 = Instant::now();
                match op(i).await {
                    Ok(o) => {
                        s.latencies_us.push(t0.elapsed().as_micros() as u64);
                        s.ops += 1;
                        s.bytes += o.bytes;
                        s.requests += o.requests;
                        s.units += o.units;
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.requests += 1;
                        if s.first_errors.len() < 3 {
                            s.first_errors.push(format!("{e:#}"));
                        }
                    }
                }
            }
            s
        }));
    }
    let mut total = RunStats::default();
    for w in workers {
        let s = w.await.expect("worker panicked");
        total.ops += s.ops;
        total.errors += s.errors;
        total.requests += s.requests;
        total.bytes += s.bytes;
        total.units += s.units;
        total.latencies_us.extend(s.latencies_us);
        for e in s.first_errors {
            if total.first_errors.len() < 3 {
                total.first_errors.push(e);
            }
        }
    }
    total.elapsed = start.elapsed();
    total.client_cpu_s =
        crate::procmon::cpu_seconds(std::process::id()).unwrap_or(cpu_start) - cpu_start;
    total.latencies_us.sort_unstable();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        let v = [10, 20, 30];
        assert_eq!(percentile(&v, 50.0), 20);
        assert_eq!(percentile(&v, 99.0), 30);
    }

    #[tokio::test]
    async fn drive_stops_at_the_op_limit_and_counts_errors() {
        let limit = Limit {
            ops: 10,
            duration: Duration::from_secs(3600),
        };
        let s = drive(3, limit, |i| async move {
            if i % 5 == 0 {
                anyhow::bail!("op {i} failed")
            }
            Ok(Outcome {
                bytes: 2,
                requests: 1,
                units: 0,
            })
        })
        .await;
        assert_eq!(s.ops, 8);
        assert_eq!(s.errors, 2);
        assert_eq!(s.bytes, 16);
        assert_eq!(s.latencies_us.len(), 8);
    }
}
