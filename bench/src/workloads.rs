//! The workloads: each sets up what it needs, then measures one phase.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::blob::{Blob, Content, digest_of, splitmix};
use crate::client::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Registry};
use crate::procmon::{ProcMon, Usage};
use crate::stats::{Limit, Outcome, RunStats, drive};

/// Pulled blobs and the small image are made from this fixed seed, so a
/// repeated run finds them in place and skips its setup.
const STABLE_SEED: u64 = 0x0b3e_57ab_1e5e_ed00;

pub struct Ctx {
    pub reg: Registry,
    pub concurrency: usize,
    pub limit: Limit,
    /// Fresh per run (unless --seed): what pushes send.
    pub content: Content,
    pub prefix: String,
    pub pid: Option<u32>,
    pub threads: usize,
}

/// One measured phase and what describes it.
pub struct Measured {
    pub params: Value,
    pub stats: RunStats,
    pub usage: Option<Usage>,
}

impl Ctx {
    /// Runs `op` under the limits while watching the server process.
    async fn measure<F, Fut>(
        &self,
        concurrency: usize,
        limit: Limit,
        op: F,
    ) -> anyhow::Result<(RunStats, Option<Usage>)>
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<Outcome>> + Send + 'static,
    {
        let mon = self.pid.map(ProcMon::start).transpose()?;
        let stats = drive(concurrency, limit, op).await;
        Ok((stats, mon.map(ProcMon::finish)))
    }

    /// Digests of many blobs, hashed on all threads before measuring.
    fn prehash(&self, blobs: &[Blob]) -> Vec<String> {
        let mut out = vec![String::new(); blobs.len()];
        let per = blobs.len().div_ceil(self.threads.max(1)).max(1);
        std::thread::scope(|s| {
            for (bs, os) in blobs.chunks(per).zip(out.chunks_mut(per)) {
                s.spawn(move || {
                    for (b, o) in bs.iter().zip(os.iter_mut()) {
                        *o = b.digest();
                    }
                });
            }
        });
        out
    }

    fn run_id(&self) -> String {
        format!("{:08x}", self.content.seed() as u32)
    }
}

/// Pushes `blob` unless the repository already has it. Returns its digest.
async fn ensure_blob(reg: &Registry, repo: &str, blob: &Blob) -> anyhow::Result<String> {
    let digest = blob.digest();
    if !reg.blob_exists(repo, &digest).await? {
        reg.push_monolithic(repo, blob, &digest).await?;
    }
    Ok(digest)
}

pub async fn push(ctx: &Ctx, size: u64, chunked: bool, chunk: u64) -> anyhow::Result<Measured> {
    let repo = format!("{}/push-{}", ctx.prefix, ctx.run_id());
    let blobs: Vec<Blob> = (0..ctx.limit.ops)
        .map(|i| ctx.content.blob(i, size))
        .collect();
    let digests = ctx.prehash(&blobs);
    let items: Arc<Vec<(Blob, String)>> = Arc::new(blobs.into_iter().zip(digests).collect());
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |i| {
            let (reg, repo, items) = (reg.clone(), repo.clone(), items.clone());
            async move {
                let (blob, digest) = &items[i as usize];
                let requests = if chunked {
                    reg.push_chunked(&repo, blob, digest, chunk).await?
                } else {
                    reg.push_monolithic(&repo, blob, digest).await?
                };
                Ok(Outcome {
                    bytes: blob.size,
                    requests,
                    units: 0,
                })
            }
        })
        .await?;
    Ok(Measured {
        params: json!({"size": size, "chunked": chunked, "chunk_size": chunked.then_some(chunk)}),
        stats,
        usage,
    })
}

pub async fn pull(ctx: &Ctx, size: u64, blobs: Option<usize>) -> anyhow::Result<Measured> {
    let repo = format!("{}/pull", ctx.prefix);
    let stable = Content::new(STABLE_SEED);
    let k = blobs.unwrap_or(ctx.concurrency.min(4)).max(1) as u64;
    let mut digests = Vec::new();
    for id in 0..k {
        digests.push(ensure_blob(&ctx.reg, &repo, &stable.blob(id, size)).await?);
    }
    // One untimed GET, so every run measures a blob in the page cache.
    for d in &digests {
        ctx.reg.get_blob(&repo, d).await?;
    }
    let digests = Arc::new(digests);
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |i| {
            let (reg, repo, digests) = (reg.clone(), repo.clone(), digests.clone());
            async move {
                let n = reg.get_blob(&repo, &digests[(i % k) as usize]).await?;
                anyhow::ensure!(n == size, "GET blob: {n} bytes, expected {size}");
                Ok(Outcome {
                    bytes: n,
                    requests: 1,
                    units: 0,
                })
            }
        })
        .await?;
    Ok(Measured {
        params: json!({"size": size, "blobs": k}),
        stats,
        usage,
    })
}

/// An image made of a config, small layers and an OCI manifest.
struct Image {
    config: Bytes,
    layers: Vec<Bytes>,
    manifest: Bytes,
}

fn image(content: &Content, id: u64, layer_sizes: &[u64]) -> Image {
    let layers: Vec<Bytes> = layer_sizes
        .iter()
        .enumerate()
        .map(|(k, &size)| content.blob((1 << 40) + id * 8 + k as u64, size).to_bytes())
        .collect();
    let layer_digests: Vec<String> = layers.iter().map(|l| digest_of(l)).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"bench.seed": format!("{:x}", content.seed()), "bench.id": id.to_string()}},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    });
    let config = Bytes::from(serde_json::to_vec(&config).expect("json"));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(&config), "size": config.len()},
        "layers": layers.iter().zip(&layer_digests).map(|(l, d)| {
            json!({"mediaType": OCI_LAYER, "digest": d, "size": l.len()})
        }).collect::<Vec<_>>(),
    });
    Image {
        config,
        layers,
        manifest: Bytes::from(serde_json::to_vec(&manifest).expect("json")),
    }
}

/// Pushes the small stable image as `repo:latest`; returns its layer digest.
async fn small_image(reg: &Registry, repo: &str) -> anyhow::Result<String> {
    let img = image(&Content::new(STABLE_SEED), 0, &[4096]);
    for b in std::iter::once(&img.config).chain(&img.layers) {
        if !reg.blob_exists(repo, &digest_of(b)).await? {
            reg.push_bytes(repo, b.clone()).await?;
        }
    }
    reg.put_manifest(repo, "latest", img.manifest).await?;
    Ok(digest_of(&img.layers[0]))
}

pub async fn root(ctx: &Ctx) -> anyhow::Result<Measured> {
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |_| {
            let reg = reg.clone();
            async move {
                reg.ping().await?;
                Ok(Outcome::requests(1))
            }
        })
        .await?;
    Ok(Measured {
        params: json!({}),
        stats,
        usage,
    })
}

pub async fn manifest_get(ctx: &Ctx) -> anyhow::Result<Measured> {
    let repo = format!("{}/image", ctx.prefix);
    small_image(&ctx.reg, &repo).await?;
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |_| {
            let (reg, repo) = (reg.clone(), repo.clone());
            async move {
                reg.get_manifest(&repo, "latest").await?;
                Ok(Outcome::requests(1))
            }
        })
        .await?;
    Ok(Measured {
        params: json!({}),
        stats,
        usage,
    })
}

pub async fn head_blob(ctx: &Ctx) -> anyhow::Result<Measured> {
    let repo = format!("{}/image", ctx.prefix);
    let digest = small_image(&ctx.reg, &repo).await?;
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |_| {
            let (reg, repo, digest) = (reg.clone(), repo.clone(), digest.clone());
            async move {
                reg.head_blob(&repo, &digest).await?;
                Ok(Outcome::requests(1))
            }
        })
        .await?;
    Ok(Measured {
        params: json!({}),
        stats,
        usage,
    })
}

fn lists_repo(prefix: &str, r: u64) -> String {
    format!("{prefix}/lists/r{r:04}")
}

fn big_repo(prefix: &str) -> String {
    format!("{prefix}/lists/big")
}

/// Creates `repos` repositories of `tags` tags and one of `big_tags` tags,
/// all pointing at one manifest whose config and layer are pushed once and
/// mounted everywhere else. Measures the manifest PUTs.
pub async fn populate(
    ctx: &Ctx,
    repos: u64,
    tags: u64,
    big_tags: u64,
    max_secs: u64,
) -> anyhow::Result<Measured> {
    let img = image(&Content::new(STABLE_SEED), 1, &[4096]);
    let blobs = Arc::new(vec![img.config.clone(), img.layers[0].clone()]);
    let src = lists_repo(&ctx.prefix, 0);
    for b in blobs.iter() {
        if !ctx.reg.blob_exists(&src, &digest_of(b)).await? {
            ctx.reg.push_bytes(&src, b.clone()).await?;
        }
    }
    let limit = |ops| Limit {
        ops,
        duration: Duration::from_secs(max_secs),
    };
    // Mount the two blobs into every other repository, the big one last.
    let (reg, prefix, from) = (ctx.reg.clone(), ctx.prefix.clone(), src.clone());
    let mounts = drive(ctx.concurrency, limit(repos), move |r| {
        let (reg, prefix, from, blobs) = (reg.clone(), prefix.clone(), from.clone(), blobs.clone());
        async move {
            let repo = if r == 0 {
                big_repo(&prefix)
            } else {
                lists_repo(&prefix, r)
            };
            let mut requests = 0;
            for b in blobs.iter() {
                requests += reg.mount_or_push(&repo, &from, &digest_of(b), b).await?;
            }
            Ok(Outcome::requests(requests))
        }
    })
    .await;
    anyhow::ensure!(
        mounts.errors == 0,
        "mounts failed: {}",
        mounts.first_errors.join("; ")
    );
    let (reg, prefix, manifest) = (ctx.reg.clone(), ctx.prefix.clone(), img.manifest);
    let small = repos * tags;
    let (stats, usage) = ctx
        .measure(ctx.concurrency, limit(small + big_tags), move |i| {
            let (reg, prefix, manifest) = (reg.clone(), prefix.clone(), manifest.clone());
            async move {
                let (repo, tag) = if i < small {
                    (lists_repo(&prefix, i / tags), format!("t{:02}", i % tags))
                } else {
                    (big_repo(&prefix), format!("t{:05}", i - small))
                };
                reg.put_manifest(&repo, &tag, manifest).await?;
                Ok(Outcome {
                    bytes: 0,
                    requests: 1,
                    units: 1,
                })
            }
        })
        .await?;
    Ok(Measured {
        params: json!({"repos": repos, "tags": tags, "big_tags": big_tags,
                       "mount_secs": mounts.secs(), "mount_requests": mounts.requests}),
        stats,
        usage,
    })
}

/// Lists every page of `path`; an op is one whole listing.
async fn walk_op(reg: Registry, path: String, max_pages: u64) -> anyhow::Result<Outcome> {
    let (pages, entries) = reg.walk(&path, max_pages).await?;
    anyhow::ensure!(entries > 0, "{path}: empty listing");
    Ok(Outcome {
        bytes: 0,
        requests: pages,
        units: entries,
    })
}

pub async fn tags_list(ctx: &Ctx, repos: u64) -> anyhow::Result<Measured> {
    let (reg, prefix) = (ctx.reg.clone(), ctx.prefix.clone());
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |i| {
            let path = format!(
                "/v2/{}/tags/list?n=100",
                lists_repo(&prefix, i % repos.max(1))
            );
            walk_op(reg.clone(), path, 1000)
        })
        .await?;
    Ok(Measured {
        params: json!({"repos": repos}),
        stats,
        usage,
    })
}

pub async fn tags_big(ctx: &Ctx) -> anyhow::Result<Measured> {
    let path = format!("/v2/{}/tags/list?n=100", big_repo(&ctx.prefix));
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |_| {
            walk_op(reg.clone(), path.clone(), 100_000)
        })
        .await?;
    Ok(Measured {
        params: json!({}),
        stats,
        usage,
    })
}

pub async fn catalog(ctx: &Ctx) -> anyhow::Result<Measured> {
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |_| {
            walk_op(reg.clone(), "/v2/_catalog?n=100".to_owned(), 100_000)
        })
        .await?;
    Ok(Measured {
        params: json!({}),
        stats,
        usage,
    })
}

/// `push_percent`% pushes of fresh blobs, the rest pulls of blobs pushed
/// in setup; each op picks one of `sizes`.
pub async fn mixed(ctx: &Ctx, sizes: &[u64], push_percent: u64) -> anyhow::Result<Measured> {
    anyhow::ensure!(!sizes.is_empty(), "no sizes");
    let pull_repo = format!("{}/pull", ctx.prefix);
    let push_repo = format!("{}/mixed-{}", ctx.prefix, ctx.run_id());
    let stable = Content::new(STABLE_SEED);
    let mut pulls = Vec::new();
    for &size in sizes {
        let d = ensure_blob(&ctx.reg, &pull_repo, &stable.blob(0, size)).await?;
        ctx.reg.get_blob(&pull_repo, &d).await?;
        pulls.push((d, size));
    }
    // The plan: for each op, push or pull, and which size.
    let mut state = ctx.content.seed();
    let plan: Vec<(bool, usize)> = (0..ctx.limit.ops)
        .map(|_| {
            let r = splitmix(&mut state);
            (
                r % 100 < push_percent,
                ((r >> 32) % sizes.len() as u64) as usize,
            )
        })
        .collect();
    let push_blobs: Vec<Blob> = plan
        .iter()
        .enumerate()
        .filter(|(_, (push, _))| *push)
        .map(|(i, &(_, s))| ctx.content.blob(i as u64, sizes[s]))
        .collect();
    let push_digests = ctx.prehash(&push_blobs);
    let mut pushes = push_blobs.into_iter().zip(push_digests);
    let ops: Arc<Vec<Op>> = Arc::new(
        plan.iter()
            .map(|&(push, s)| {
                if push {
                    let (b, d) = pushes.next().expect("planned push");
                    Op::Push(b, d)
                } else {
                    Op::Pull(pulls[s].0.clone(), pulls[s].1)
                }
            })
            .collect(),
    );
    let reg = ctx.reg.clone();
    let (stats, usage) = ctx
        .measure(ctx.concurrency, ctx.limit, move |i| {
            let (reg, ops) = (reg.clone(), ops.clone());
            let (push_repo, pull_repo) = (push_repo.clone(), pull_repo.clone());
            async move {
                match &ops[i as usize] {
                    Op::Push(b, d) => {
                        let requests = reg.push_monolithic(&push_repo, b, d).await?;
                        Ok(Outcome {
                            bytes: b.size,
                            requests,
                            units: 1,
                        })
                    }
                    Op::Pull(d, size) => {
                        let n = reg.get_blob(&pull_repo, d).await?;
                        anyhow::ensure!(n == *size, "GET blob: {n} bytes, expected {size}");
                        Ok(Outcome {
                            bytes: n,
                            requests: 1,
                            units: 0,
                        })
                    }
                }
            }
        })
        .await?;
    Ok(Measured {
        params: json!({"sizes": sizes, "push_percent": push_percent}),
        stats,
        usage,
    })
}

enum Op {
    Push(Blob, String),
    Pull(String, u64),
}

/// `images` images, each a config, one or two small layers and a manifest
/// in its own repository, pushed the way a client does (HEAD each blob,
/// then POST + PUT, then the manifest).
pub async fn small_images(ctx: &Ctx, images: u64) -> anyhow::Result<Measured> {
    let base = format!("{}/small-{}", ctx.prefix, ctx.run_id());
    let content = ctx.content.clone();
    let reg = ctx.reg.clone();
    let limit = Limit {
        ops: images,
        duration: ctx.limit.duration,
    };
    let (stats, usage) = ctx
        .measure(ctx.concurrency, limit, move |i| {
            let (reg, content) = (reg.clone(), content.clone());
            let repo = format!("{base}/img{i:03}");
            async move {
                let mut state = content.seed() ^ i;
                let n = 1 + (splitmix(&mut state) % 2) as usize;
                let sizes: Vec<u64> = (0..n)
                    .map(|_| 16 * 1024 + splitmix(&mut state) % (496 * 1024))
                    .collect();
                let img = image(&content, i, &sizes);
                let mut requests = 1;
                let mut bytes = 0;
                for b in std::iter::once(&img.config).chain(&img.layers) {
                    requests += 1;
                    if !reg.blob_exists(&repo, &digest_of(b)).await? {
                        reg.push_bytes(&repo, b.clone()).await.context("blob")?;
                        requests += 2;
                        bytes += b.len() as u64;
                    }
                }
                reg.put_manifest(&repo, "v1", img.manifest).await?;
                Ok(Outcome {
                    bytes,
                    requests,
                    units: 1,
                })
            }
        })
        .await?;
    Ok(Measured {
        params: json!({"images": images}),
        stats,
        usage,
    })
}
