use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use berth::App;
use berth::auth::manage::AccountAdmin;
use berth::config::Config;
use berth::meta::MetaStore;

mod cli;

use cli::accounts::{RobotCommand, UserCommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("BERTH_GIT_REVISION"), ")"),
    about = "A self-hosted OCI container registry"
)]
struct Cli {
    #[command(flatten)]
    place: Place,
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration and the data are; every command takes these.
#[derive(Args)]
struct Place {
    /// Config file [default: ./config.toml if present].
    #[arg(long, env = "BERTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Directory for blobs and metadata.
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Metadata database, `postgres://...` [default: SQLite in the data dir].
    #[arg(long, env = "BERTH_DATABASE_URL", global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8888.
        #[arg(long, env = "BERTH_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Manage users (people, with passwords).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage robot accounts (CI, kubelet pull secrets), with generated secrets.
    #[command(subcommand)]
    Robot(RobotCommand),
    /// Let an account (or `anonymous`) do ACTIONS on a NAMESPACE.
    Grant {
        /// Account name, or `anonymous` for callers without credentials.
        subject: String,
        /// A repository name prefix such as `team` (covers `team/...`), or `*` for all.
        namespace: String,
        /// Comma-separated: pull, push, delete, admin, or `*` for all.
        actions: String,
    },
    /// Take back what an account may do on a namespace.
    Revoke { subject: String, namespace: String },
    /// List an account's grants.
    Grants { subject: String },
    /// What each push rolled out where, newest first.
    Deploys {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Put a deploy rule's workloads back on the image they ran before
    /// berth's last rollout, or on a given digest.
    Rollback {
        /// The deploy rule's name.
        rule: String,
        /// A digest of the rule's repository to roll onto instead.
        #[arg(long, value_name = "DIGEST")]
        to: Option<String>,
    },
    /// The event delivery log (webhooks and deploy rules), newest first.
    Deliveries {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Collect garbage now: untagged unreferenced manifests, unreferenced
    /// blobs, abandoned uploads. Safe while berth serves.
    Gc {
        /// Only report what would be deleted and the bytes freed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Manage a running berth through its admin API (repositories,
    /// accounts, webhooks, deploy rules, audit log).
    Admin(cli::admin::AdminArgs),
    /// Exit 0 if the berth serving here answers /healthz with 200; for
    /// container health checks in images that have no curl.
    Healthcheck {
        /// The URL to ask [default: /healthz on the configured address,
        /// over loopback when it listens on every address].
        #[arg(long)]
        url: Option<String>,
        /// The address `berth serve` listens on, if not the configured one.
        #[arg(long, env = "BERTH_LISTEN")]
        listen: Option<SocketAddr>,
    },
}

fn main() -> std::process::ExitCode {
    // glibc gives every thread that allocates an arena of its own; with
    // tokio's worker and blocking threads that multiplies peak memory for
    // no speed gained. Two arenas must be set before any thread starts.
    // SAFETY: mallopt only changes allocator settings; no thread exists yet.
    // Large blocks (Argon2's 19 MiB per password check) are mapped for
    // themselves and unmapped when freed: glibc would otherwise raise its
    // threshold after the first and keep such blocks in the heap for good.
    // A free heap top above 2 MiB goes back to the system.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
    }
    run_as_batch();
    berth::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(main_async())
}

/// Marks this thread, and so every thread it starts, as throughput work
/// (SCHED_BATCH): a thread woken by a request then waits for the running
/// task's turn to end instead of cutting it short. With clients of lower
/// priority on the same cores (a niced load generator, a build), each
/// small request otherwise cost two thread switches (the server woken
/// ahead of the client, then the client again), a third of its CPU; a
/// batch thread finds several requests waiting when it runs.
/// An idle core still runs a woken thread at once; behind a busy task, a
/// request may wait for that task's turn to end (a scheduler slice, a
/// few milliseconds).
fn run_as_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes the calling thread's policy with a valid parameter;
    // lowering to SCHED_BATCH needs no privilege.
    // Refused (by a seccomp profile, say), berth serves as it would have:
    // nothing to report.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

async fn main_async() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The causes, not a backtrace: these reach people at a terminal.
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A client of a running berth: it needs no config or data here.
    if let Command::Admin(args) = cli.command {
        return cli::admin::run(args).await;
    }
    let mut config = match &cli.place.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load("config.toml".as_ref(), false)?,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "berth=info".into());
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        use tracing_subscriber::field::MakeExt;
        tracing_subscriber::fmt()
            // Plain `name=value` fields: every request's span has its fields
            // formatted when it opens, whether or not anything is logged in
            // it, and the default's styled names cost more than the request.
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                    if field.name() == "message" {
                        write!(w, "{value:?}")
                    } else {
                        write!(w, "{field}={value:?}")
                    }
                })
                .delimited(" "),
            )
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour codes only for people at a terminal, not in a log file.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    if let Some(dir) = cli.place.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = cli.place.database_url {
        config.database.url = url;
    }
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            serve(config).await
        }
        Command::Healthcheck { url, listen } => healthcheck(&config, url, listen).await,
        command => manage(&config, command).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Bound first: a taken port is the commonest first-start failure, and
    // says so before anything is created.
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
        anyhow::anyhow!(
            "listening on {}: {e}; choose another address with --listen or BERTH_LISTEN \
             (e.g. --listen 0.0.0.0:5000) or `listen` in the config file",
            config.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = App::build(&config).await?;
    app.start_workers(&config, &addr.to_string()).await?;
    if let Some(metrics_addr) = config.metrics.listen_addr()? {
        let listener = tokio::net::TcpListener::bind(metrics_addr).await?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let router = berth::api::metrics::listener_router(app.registry.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let scheme = if config.tls.enabled() {
        "https"
    } else {
        "http"
    };
    // Tests and scripts read this line to learn the port.
    println!(
        "berth listening on {scheme}://{addr} (data in {})",
        config.data_dir.display()
    );
    std::io::stdout().flush()?;
    if let Some(password) = &app.initial_admin_password {
        eprintln!("{}", first_start_notice(&config, addr, password));
    }
    let tls = if config.tls.enabled() {
        let tls =
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&config.tls.cert, &config.tls.key)
                .await
                .map_err(|e| anyhow::anyhow!("loading tls.cert and tls.key: {e}"))?;
        tokio::spawn(reload_certificate(tls.clone(), config.tls.clone()));
        Some(tls)
    } else {
        None
    };
    berth::server::serve(listener, app.router, &config.server, tls, shutdown_signal()).await?;
    Ok(())
}

/// What the first start prints: the admin password, and a login command
/// that works as printed. docker treats only loopback as an insecure
/// (plain HTTP) registry, so a wildcard listener is named by loopback here.
fn first_start_notice(config: &Config, addr: SocketAddr, password: &str) -> String {
    let file = config.data_dir.join("initial-admin-password");
    let local = loopback_for(addr);
    let elsewhere = if config.tls.enabled() {
        format!(
            "From other machines, log in to this host's name (as its certificate names it), port {}.",
            addr.port()
        )
    } else {
        format!(
            "From other machines, use this host's name, port {}: berth serves plain HTTP,\n\
             so docker there needs it under \"insecure-registries\" in /etc/docker/daemon.json\n\
             (or give berth a certificate: [tls] in config.toml).",
            addr.port()
        )
    };
    format!(
        "\n*************************************************************\n\
         berth created the account \"admin\" with the password\n\n    {password}\n\n\
         It is also in {}.\n\
         Log in here with:\n\n    docker login -u admin --password-stdin {local} < {}\n\n\
         {elsewhere}\n\
         *************************************************************\n",
        file.display(),
        file.display(),
    )
}

/// `addr`, with a wildcard IP replaced by loopback: an address to connect to.
fn loopback_for(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Watches the certificate and key files and loads them again when either
/// changes, so a renewed certificate needs no restart.
async fn reload_certificate(
    tls: axum_server::tls_rustls::RustlsConfig,
    files: berth::config::TlsConfig,
) {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stamps = |f: &berth::config::TlsConfig| -> (Option<SystemTime>, Option<SystemTime>) {
        (stamp(&f.cert), stamp(&f.key))
    };
    let mut seen = stamps(&files);
    let mut tick = tokio::time::interval(Duration::from_secs(files.reload_interval_seconds.max(1)));
    loop {
        tick.tick().await;
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        match tls.reload_from_pem_file(&files.cert, &files.key).await {
            Ok(()) => {
                tracing::info!("loaded the renewed TLS certificate");
                seen = now;
            }
            // Perhaps half-written: keep serving the old one and try again.
            Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// The commands that work on the metadata store directly, so they run
/// before the first start and while berth serves.
async fn manage(config: &Config, command: Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let meta = MetaStore::open(&config.database.location(&config.data_dir)).await?;
    let accounts = AccountAdmin::new(meta.clone());
    match command {
        Command::Serve { .. } | Command::Admin(_) | Command::Healthcheck { .. } => {
            unreachable!("handled by run")
        }
        Command::User(command) => cli::accounts::user(&accounts, command).await,
        Command::Robot(command) => cli::accounts::robot(&accounts, command).await,
        Command::Grant {
            subject,
            namespace,
            actions,
        } => cli::accounts::grant(&accounts, &subject, &namespace, &actions).await,
        Command::Revoke { subject, namespace } => {
            cli::accounts::revoke(&accounts, &subject, &namespace).await
        }
        Command::Grants { subject } => cli::accounts::grants(&accounts, &subject).await,
        Command::Deploys { limit, json } => cli::deploys::deploys(&meta, limit, json).await,
        Command::Deliveries { limit } => cli::deploys::deliveries(&meta, limit).await,
        Command::Rollback { rule, to } => {
            cli::deploys::rollback(config, &meta, &rule, to.as_deref()).await
        }
        Command::Gc { dry_run, json } => cli::gc::run(config, &meta, dry_run, json).await,
    }
}

async fn healthcheck(
    config: &Config,
    url: Option<String>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(|| {
        let addr = loopback_for(listen.unwrap_or(config.listen));
        let scheme = if config.tls.enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}/healthz")
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        // The certificate names the registry's public host, not the
        // loopback address this asks; whether berth answers is the question.
        .danger_accept_invalid_certs(true)
        .build()?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::OK,
        "GET {url}: {}",
        response.status()
    );
    println!("{url}: {}", response.status());
    Ok(())
}
