//! CPU time and peak RSS of the server process over the measured phase.
//!
//! Peak RSS: the kernel's high-water mark (VmHWM) is reset at the start by
//! writing 5 to /proc/PID/clear_refs (needs the same user or root); VmRSS
//! is also sampled every 20 ms, so the figure holds even where the reset is
//! refused. CPU: utime + stime of all the process's threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

pub struct ProcMon {
    pid: u32,
    cpu_start: f64,
    hwm_reset: bool,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<u64>,
}

#[derive(Clone, Copy)]
pub struct Usage {
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

/// utime + stime in seconds from the text of /proc/PID/stat.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl ProcMon {
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        let cpu_start = cpu_seconds(pid)
            .ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/stat: is --pid right?"))?;
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(status_kib(pid, "VmRSS:").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            max.max(status_kib(pid, "VmRSS:").unwrap_or(0))
        });
        Ok(ProcMon {
            pid,
            cpu_start,
            hwm_reset,
            stop,
            sampler,
        })
    }

    pub fn finish(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.sampler.join().unwrap_or(0);
        let cpu = cpu_seconds(self.pid).unwrap_or(self.cpu_start) - self.cpu_start;
        let hwm = if self.hwm_reset {
            status_kib(self.pid, "VmHWM:").unwrap_or(0)
        } else {
            0
        };
        Usage {
            cpu_s: cpu,
            peak_rss_kib: sampled.max(hwm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields() {
        let stat = "1234 (odd (name) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
