//! berth-bench: a load generator for any OCI distribution registry.
//!
//! `berth-bench --url http://127.0.0.1:5000 [flags] <workload> [flags]`;
//! `--help` lists the workloads. Each run sets up what it needs (untimed),
//! measures one phase and prints throughput, latency percentiles and
//! errors, as text or as one JSON line (`--json`).

mod blob;
mod client;
mod procmon;
mod stats;
mod workloads;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::client::Registry;
use crate::stats::Limit;
use crate::workloads::{Ctx, Measured};

#[derive(Parser)]
#[command(
    name = "berth-bench",
    version,
    about = "Load generator for OCI distribution registries"
)]
struct Cli {
    /// Registry base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8888")]
    url: String,
    /// User for HTTP basic auth, sent on every request.
    #[arg(long, global = true)]
    user: Option<String>,
    /// Password for HTTP basic auth.
    #[arg(long, global = true, requires = "user")]
    password: Option<String>,
    /// Operations in flight at once [default: 1; 8 for populate and small-images].
    #[arg(short = 'c', long, global = true)]
    concurrency: Option<usize>,
    /// Stop after this many operations [default depends on the workload].
    #[arg(short = 'n', long, global = true)]
    requests: Option<u64>,
    /// Stop starting operations after this many seconds [default: 10; 600 for populate and small-images].
    #[arg(short = 'd', long, global = true)]
    duration: Option<f64>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Server process to watch: its CPU seconds and peak RSS over the measured phase.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Client worker threads.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Seed of pushed content [default: fresh each run, so nothing deduplicates].
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Repository namespace for everything the run creates.
    #[arg(long, global = true, default_value = "bench")]
    prefix: String,
    /// Free text copied into the output (e.g. which registry).
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Push fresh blobs: POST then PUT ?digest= with the body, or with
    /// --chunked POST, PATCH chunks, PUT.
    Push {
        #[arg(long, default_value = "10MiB", value_parser = parse_size)]
        size: u64,
        #[arg(long)]
        chunked: bool,
        #[arg(long, default_value = "8MiB", value_parser = parse_size)]
        chunk_size: u64,
    },
    /// GET blobs pushed in setup (read from the page cache).
    Pull {
        #[arg(long, default_value = "10MiB", value_parser = parse_size)]
        size: u64,
        /// Distinct blobs to rotate over [default: min(concurrency, 4)].
        #[arg(long)]
        blobs: Option<usize>,
    },
    /// GET /v2/, the version check every client starts with.
    Root,
    /// GET a manifest by tag (setup pushes a small image).
    ManifestGet,
    /// HEAD a blob (setup pushes a small image).
    HeadBlob,
    /// Create REPOS repositories of TAGS tags and one of BIG_TAGS tags
    /// (measures the manifest PUTs); run before tags-list, tags-big, catalog.
    Populate {
        #[arg(long, default_value_t = 1000)]
        repos: u64,
        #[arg(long, default_value_t = 10)]
        tags: u64,
        #[arg(long, default_value_t = 10_000)]
        big_tags: u64,
    },
    /// tags/list?n=100 of the populated repositories in turn, following Link.
    TagsList {
        #[arg(long, default_value_t = 1000)]
        repos: u64,
    },
    /// Every page of tags/list?n=100 of the big repository; an op is a whole listing.
    TagsBig,
    /// Every page of _catalog?n=100; an op is a whole listing.
    Catalog,
    /// PUSH_PERCENT% pushes of fresh blobs, the rest pulls, of the given sizes.
    Mixed {
        #[arg(long, value_delimiter = ',', default_value = "1MiB,10MiB,100MiB", value_parser = parse_size)]
        sizes: Vec<u64>,
        #[arg(long, default_value_t = 25)]
        push_percent: u64,
    },
    /// Push IMAGES small images (config, 1-2 layers of 16-512 KiB, manifest),
    /// each to its own repository.
    SmallImages {
        #[arg(long, default_value_t = 50)]
        images: u64,
    },
}

/// "123", "4KiB", "10MiB", "1GiB", "2MB".
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("bad size unit in {s:?}")),
    };
    Ok(n * mult)
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

impl Workload {
    fn name(&self) -> String {
        match self {
            Workload::Push { size, chunked, .. } => format!(
                "push-{}{}",
                if *chunked { "chunked-" } else { "" },
                human_size(*size)
            ),
            Workload::Pull { size, .. } => format!("pull-{}", human_size(*size)),
            Workload::Root => "root".into(),
            Workload::ManifestGet => "manifest-get".into(),
            Workload::HeadBlob => "head-blob".into(),
            Workload::Populate { .. } => "populate".into(),
            Workload::TagsList { .. } => "tags-list".into(),
            Workload::TagsBig => "tags-big".into(),
            Workload::Catalog => "catalog".into(),
            Workload::Mixed { .. } => "mixed".into(),
            Workload::SmallImages { .. } => "small-images".into(),
        }
    }

    fn default_concurrency(&self) -> usize {
        match self {
            Workload::Populate { .. } | Workload::SmallImages { .. } => 8,
            _ => 1,
        }
    }

    fn default_duration(&self) -> f64 {
        match self {
            Workload::Populate { .. } | Workload::SmallImages { .. } => 600.0,
            _ => 10.0,
        }
    }

    fn default_ops(&self) -> u64 {
        match self {
            // Pushes are pre-hashed: plan about 2 GiB of them.
            Workload::Push { size, .. } => ((2u64 << 30) / size.max(&1)).clamp(2, 20_000),
            Workload::Mixed { .. } => 200,
            _ => 10_000_000,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let w = &cli.workload;
    let seed = cli.seed.unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ ((std::process::id() as u64) << 40)
    });
    let reg = Registry::new(&cli.url, cli.user.as_deref(), cli.password.as_deref())?;
    reg.ping().await?;
    let ctx = Ctx {
        reg,
        concurrency: cli.concurrency.unwrap_or(w.default_concurrency()).max(1),
        limit: Limit {
            ops: cli.requests.unwrap_or(w.default_ops()).max(1),
            duration: Duration::from_secs_f64(cli.duration.unwrap_or(w.default_duration())),
        },
        content: blob::Content::new(seed),
        prefix: cli.prefix.clone(),
        pid: cli.pid,
        threads: cli.threads,
    };
    let m: Measured = match w {
        Workload::Push {
            size,
            chunked,
            chunk_size,
        } => workloads::push(&ctx, *size, *chunked, (*chunk_size).max(1)).await?,
        Workload::Pull { size, blobs } => workloads::pull(&ctx, *size, *blobs).await?,
        Workload::Root => workloads::root(&ctx).await?,
        Workload::ManifestGet => workloads::manifest_get(&ctx).await?,
        Workload::HeadBlob => workloads::head_blob(&ctx).await?,
        Workload::Populate {
            repos,
            tags,
            big_tags,
        } => {
            let secs = ctx.limit.duration.as_secs().max(1);
            workloads::populate(&ctx, *repos, *tags, *big_tags, secs).await?
        }
        Workload::TagsList { repos } => workloads::tags_list(&ctx, *repos).await?,
        Workload::TagsBig => workloads::tags_big(&ctx).await?,
        Workload::Catalog => workloads::catalog(&ctx).await?,
        Workload::Mixed {
            sizes,
            push_percent,
        } => workloads::mixed(&ctx, sizes, *push_percent).await?,
        Workload::SmallImages { images } => workloads::small_images(&ctx, *images).await?,
    };
    report(&cli, &ctx, seed, &m);
    Ok(())
}

fn report(cli: &Cli, ctx: &Ctx, seed: u64, m: &Measured) {
    let s = &m.stats;
    let secs = s.secs();
    let out = json!({
        "workload": cli.workload.name(),
        "label": cli.label,
        "url": cli.url,
        "concurrency": ctx.concurrency,
        "params": m.params,
        "seed": seed,
        "ops": s.ops,
        "errors": s.errors,
        "requests": s.requests,
        "bytes": s.bytes,
        "units": s.units,
        "secs": secs,
        "ops_per_s": s.ops as f64 / secs,
        "req_per_s": s.requests as f64 / secs,
        "mb_per_s": s.bytes as f64 / 1e6 / secs,
        "units_per_s": s.units as f64 / secs,
        "p50_ms": s.percentile_ms(50.0),
        "p99_ms": s.percentile_ms(99.0),
        "max_ms": s.percentile_ms(100.0),
        "server_cpu_s": m.usage.map(|u| u.cpu_s),
        "server_peak_rss_kib": m.usage.map(|u| u.peak_rss_kib),
        "client_cpu_s": s.client_cpu_s,
        "first_errors": s.first_errors,
    });
    if cli.json {
        println!("{out}");
        return;
    }
    println!(
        "{} c={} {} against {}",
        cli.workload.name(),
        ctx.concurrency,
        m.params,
        cli.url
    );
    println!(
        "  {} ops ({} HTTP requests) in {:.2} s, {} errors",
        s.ops, s.requests, secs, s.errors
    );
    print!(
        "  {:.1} ops/s, {:.1} req/s",
        s.ops as f64 / secs,
        s.requests as f64 / secs
    );
    if s.bytes > 0 {
        print!(", {:.1} MB/s", s.bytes as f64 / 1e6 / secs);
    }
    if s.units > 0 {
        print!(", {:.1} units/s", s.units as f64 / secs);
    }
    println!();
    println!(
        "  latency per op: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.percentile_ms(50.0),
        s.percentile_ms(99.0),
        s.percentile_ms(100.0)
    );
    if let Some(u) = m.usage {
        println!(
            "  server: {:.2} s CPU, peak RSS {:.1} MiB",
            u.cpu_s,
            u.peak_rss_kib as f64 / 1024.0
        );
    }
    println!("  load generator: {:.2} s CPU", s.client_cpu_s);
    for e in &s.first_errors {
        println!("  error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1XB").is_err());
        assert_eq!(human_size(1 << 30), "1GiB");
        assert_eq!(human_size(100 << 20), "100MiB");
    }

    #[test]
    fn cli_parses() {
        Cli::command().debug_assert();
        let c = Cli::parse_from([
            "berth-bench",
            "push",
            "--size",
            "1GiB",
            "--chunked",
            "-c",
            "2",
            "--json",
        ]);
        assert_eq!(c.concurrency, Some(2));
        assert_eq!(c.workload.name(), "push-chunked-1GiB");
    }
}
