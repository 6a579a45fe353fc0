use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use berth::App;
use berth::auth::manage::AccountAdmin;
use berth::config::Config;
use berth::meta::MetaStore;

mod admin_cli;

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
    Admin(admin_cli::AdminArgs),
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

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. Without --password-stdin a password is generated and printed.
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Let the user do everything, everywhere.
        #[arg(long)]
        admin: bool,
    },
    /// Set a user's password (generated and printed without --password-stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and their grants.
    Del { name: String },
    /// List accounts.
    List,
    /// Import the bcrypt entries of an htpasswd file (as registry:2 uses).
    ImportHtpasswd { file: PathBuf },
}

#[derive(Subcommand)]
enum RobotCommand {
    /// Add a robot account and print its secret (shown only this once).
    Add {
        name: String,
        /// Also print a kubernetes.io/dockerconfigjson secret for this
        /// registry host (e.g. registry.example.com:8888).
        #[arg(long, value_name = "HOST")]
        pull_secret: Option<String>,
    },
    /// Replace a robot's secret and print the new one.
    Rotate { name: String },
    /// Delete a robot account and its grants.
    Del { name: String },
}

fn main() -> std::process::ExitCode {
    // glibc gives every thread that allocates an arena of its own; with
    // tokio's worker and blocking threads that multiplies peak memory for
    // no speed gained. Two arenas must be set before any thread starts.
    // SAFETY: mallopt only changes allocator settings; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Two TLS backends are linked in (ring, and aws-lc through the S3
    // client), so rustls cannot pick one by itself: every TLS client and
    // server (Kubernetes, webhooks, S3, the listener) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        return admin_cli::run(args).await;
    }
    let mut config = match &cli.place.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load("config.toml".as_ref(), false)?,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "berth=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
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
    let app = App::build(&config).await?;
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
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
        eprintln!(
            "\n*************************************************************\n\
             berth created the account \"admin\" with the password\n\n    {password}\n\n\
             It is also in {}.\n\
             Log in with: docker login -u admin {addr}\n\
             *************************************************************\n",
            config.data_dir.join("initial-admin-password").display()
        );
    }
    let service = app
        .router
        .into_make_service_with_connect_info::<SocketAddr>();
    if !config.tls.enabled() {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        return Ok(());
    }
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&config.tls.cert, &config.tls.key)
            .await
            .map_err(|e| anyhow::anyhow!("loading tls.cert and tls.key: {e}"))?;
    tokio::spawn(reload_certificate(tls.clone(), config.tls.clone()));
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    axum_server::from_tcp_rustls(listener, tls)?
        .handle(handle)
        .serve(service)
        .await?;
    Ok(())
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

/// The account commands work on the metadata store directly, so they run
/// before the first start and while berth serves.
async fn manage(config: &Config, command: Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let meta = MetaStore::open(&config.database.location(&config.data_dir)).await?;
    let admin = AccountAdmin::new(meta.clone());
    match command {
        Command::Serve { .. } | Command::Admin(_) | Command::Healthcheck { .. } => {
            unreachable!("handled by run")
        }
        Command::User(UserCommand::Add {
            name,
            password_stdin,
            admin: is_admin,
        }) => {
            let given = password_stdin.then(read_password).transpose()?;
            let generated = given.is_none();
            let password = admin.add_user(&name, given, is_admin).await?;
            println!("added user {name}");
            if generated {
                println!("password: {password}");
            }
        }
        Command::User(UserCommand::Passwd {
            name,
            password_stdin,
        }) => {
            let given = password_stdin.then(read_password).transpose()?;
            let generated = given.is_none();
            let password = admin.set_secret(&name, given).await?;
            println!("changed the password of {name}");
            if generated {
                println!("password: {password}");
            }
        }
        Command::User(UserCommand::Del { name }) | Command::Robot(RobotCommand::Del { name }) => {
            admin.delete(&name).await?;
            println!("deleted {name}");
        }
        Command::User(UserCommand::List) => {
            for account in admin.list().await? {
                let state = if account.disabled { " (disabled)" } else { "" };
                println!("{}\t{}{state}", account.name, account.kind.as_str());
            }
        }
        Command::User(UserCommand::ImportHtpasswd { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let added = admin.import_htpasswd(&text).await?;
            println!("imported {} users: {}", added.len(), added.join(", "));
        }
        Command::Robot(RobotCommand::Add { name, pull_secret }) => {
            let secret = admin.add_robot(&name).await?;
            println!("added robot {name}");
            println!("secret: {secret}");
            if let Some(host) = pull_secret {
                println!("{}", docker_config_json(&host, &name, &secret));
            }
        }
        Command::Robot(RobotCommand::Rotate { name }) => {
            let secret = admin.set_secret(&name, None).await?;
            println!("secret: {secret}");
        }
        Command::Grant {
            subject,
            namespace,
            actions,
        } => {
            let grant = admin.grant(&subject, &namespace, &actions).await?;
            println!(
                "{subject} may {} on {}",
                grant.actions,
                namespace_label(grant.namespace.as_str())
            );
        }
        Command::Revoke { subject, namespace } => {
            admin.revoke(&subject, &namespace).await?;
            println!("revoked {subject}'s grant on {namespace}");
        }
        Command::Deploys { limit, json } => {
            let rows = meta.deploys(limit, None).await?;
            if json {
                for row in rows {
                    println!("{}", serde_json::to_string(&row)?);
                }
            } else {
                println!("ID\tWHEN\tRULE\tTARGET\tTAG\tSTATE\tIMAGE\tMESSAGE");
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}/{}/{}\t{}\t{}\t{}\t{}",
                        r.id,
                        when(r.started_at),
                        r.rule,
                        r.namespace,
                        r.kind,
                        r.name,
                        r.tag.as_deref().unwrap_or("-"),
                        r.state,
                        r.new_image,
                        r.message
                    );
                }
            }
        }
        Command::Gc { dry_run, json } => {
            let registry = berth::core::Registry::new(
                berth::storage::BlobStore::from_config(config)?,
                meta.clone(),
                berth::core::RegistryOptions {
                    max_manifest_bytes: config.limits.max_manifest_bytes,
                    delete_enabled: config.delete_enabled,
                    record_pulls: false,
                },
            );
            let report = registry.collect_garbage(config.gc.options(dry_run)).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!(
                    "{verb} {} manifests, {} of {} blobs, {} uploads and {} stray files: {} bytes",
                    report.manifests_deleted,
                    report.blobs_deleted,
                    report.blobs_examined,
                    report.uploads_purged,
                    report.orphan_files_deleted,
                    report.bytes_freed
                );
            }
        }
        Command::Rollback { rule, to } => {
            // Rules made through the admin API are stored, not in the file.
            let stored: Vec<berth::config::DeployRuleConfig> = meta
                .sink_rows()
                .await?
                .into_iter()
                .filter(|r| r.kind == "deploy_rule")
                .filter_map(|r| serde_json::from_str(&r.spec).ok())
                .collect();
            let rule_config = config
                .deploy
                .rules
                .iter()
                .chain(&stored)
                .find(|r| r.name == rule)
                .ok_or_else(|| anyhow::anyhow!("no deploy rule named {rule:?}"))?;
            if let Some(digest) = &to {
                digest
                    .parse::<berth::core::names::Digest>()
                    .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
            }
            let cluster = std::sync::Arc::new(
                berth::deploy::Cluster::connect(&config.deploy.kubeconfig).await?,
            );
            let sink = berth::deploy::RuleSink::new(
                berth::deploy::rule::DeployRule::from_config(rule_config)?,
                cluster,
                meta.clone(),
                &config.deploy.registry_host,
            );
            for line in sink
                .rollback(to.as_deref())
                .await
                .map_err(anyhow::Error::msg)?
            {
                println!("{line}");
            }
        }
        Command::Deliveries { limit } => {
            println!("EVENT\tSINK\tSTATE\tATTEMPTS\tUPDATED\tLAST ERROR");
            for d in meta.deliveries(limit, None, None).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    d.event_id,
                    d.sink,
                    d.state,
                    d.attempts,
                    when(d.updated_at),
                    d.last_error.as_deref().unwrap_or("-")
                );
            }
        }
        Command::Grants { subject } => {
            for grant in admin.grants(&subject).await? {
                println!(
                    "{}\t{}",
                    namespace_label(grant.namespace.as_str()),
                    grant.actions
                );
            }
        }
    }
    Ok(())
}

async fn healthcheck(
    config: &Config,
    url: Option<String>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(|| {
        let mut addr = listen.unwrap_or(config.listen);
        // A wildcard address is not one to connect to; loopback reaches it.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
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

/// Unix milliseconds as RFC 3339.
fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn namespace_label(namespace: &str) -> &str {
    if namespace.is_empty() { "*" } else { namespace }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The `.dockerconfigjson` of a kubernetes.io/dockerconfigjson Secret.
fn docker_config_json(host: &str, user: &str, secret: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    serde_json::json!({
        "auths": { host: { "username": user, "password": secret, "auth": auth } }
    })
    .to_string()
}
