//! `berth admin ...`: the admin API from a terminal. Each command is one
//! request to a running berth; the answer is printed as a table for people
//! or, with `--json`, as the API's JSON for scripts.
//!
//! Where to connect, first found wins: flags, then `BERTH_URL`,
//! `BERTH_USER`, `BERTH_PASSWORD`, then the file `$BERTH_ADMIN_CONFIG` or
//! `~/.config/berth/admin.toml` (`url`, `user`, `password`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::table::{self, Output};

#[derive(Args)]
pub struct AdminArgs {
    /// berth's URL, e.g. http://registry.example.com:8888.
    #[arg(long, env = "BERTH_URL")]
    url: Option<String>,
    /// An admin account.
    #[arg(long, env = "BERTH_USER")]
    user: Option<String>,
    /// Its password. Generated ones may start with `-`.
    #[arg(
        long,
        env = "BERTH_PASSWORD",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    password: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Repositories: list, show, delete, settings, retention.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Tags of a repository.
    #[command(subcommand)]
    Tag(TagCommand),
    /// Manifests of a repository.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Users and robot accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// What accounts (or `anonymous`) may do on namespaces.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Webhooks.
    #[command(subcommand)]
    Webhook(SinkCommand),
    /// Deploy rules.
    #[command(subcommand)]
    Rule(SinkCommand),
    /// The event delivery log, newest first.
    Deliveries {
        #[arg(long)]
        sink: Option<String>,
        /// pending, delivered or gave_up.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue an event's delivery to a sink again.
    Redeliver { event_seq: i64, sink: String },
    /// What each push rolled out where, newest first.
    Deploys {
        #[arg(long)]
        rule: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Garbage collection: start a run, or see the last report.
    #[command(subcommand)]
    Gc(GcCommand),
    /// Pull-through mirrors, and what each has cached.
    #[command(subcommand)]
    Mirror(super::mirrors::MirrorCommand),
    /// cosign signatures: trusted keys, pull policies, what is signed.
    #[command(subcommand)]
    Signature(super::signatures::SignatureCommand),
    /// Who pushed, deleted or changed what, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum GcCommand {
    /// Start a run and wait for its report.
    Run {
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Whether a run is in progress, and the last report.
    Status,
}

#[derive(Subcommand)]
enum RepoCommand {
    List {
        /// Only names containing this.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Names after this one (the previous page's last).
        #[arg(long)]
        after: Option<String>,
    },
    Show {
        name: String,
    },
    /// Delete a repository with all its tags and manifests.
    Delete {
        name: String,
    },
    /// Show a repository's settings, or change those given.
    Settings {
        name: String,
        #[arg(long)]
        immutable_tags: Option<bool>,
        #[arg(long)]
        public_read: Option<bool>,
        /// Retention: keep the newest N matching tags.
        #[arg(long)]
        keep_last: Option<u32>,
        /// Retention: keep matching tags pushed within D days.
        #[arg(long)]
        keep_days: Option<u32>,
        /// Retention: the tags the policy applies to (a glob).
        #[arg(long)]
        tag_pattern: Option<String>,
        /// Remove the retention policy.
        #[arg(long, conflicts_with_all = ["keep_last", "keep_days", "tag_pattern"])]
        no_retention: bool,
    },
    /// Apply the retention policy now (or see what it would delete).
    Retention {
        name: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum TagCommand {
    List { repository: String },
    Delete { repository: String, tag: String },
}

#[derive(Subcommand)]
enum ManifestCommand {
    List {
        repository: String,
    },
    /// Delete a manifest and every tag on it.
    Delete {
        repository: String,
        digest: String,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    List,
    Show {
        name: String,
    },
    /// Create a user (password generated unless --password-stdin) or, with
    /// --robot, a robot; the secret is printed once.
    Add {
        name: String,
        #[arg(long)]
        robot: bool,
        #[arg(long, conflicts_with = "robot")]
        password_stdin: bool,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// A new secret (generated unless --password-stdin), printed once.
    Rotate {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum GrantCommand {
    List {
        subject: String,
    },
    /// Let SUBJECT do ACTIONS (pull,push,delete,admin or *) on NAMESPACE.
    Set {
        subject: String,
        namespace: String,
        actions: String,
    },
    Revoke {
        subject: String,
        namespace: String,
    },
}

#[derive(Subcommand)]
enum SinkCommand {
    List,
    Show {
        name: String,
    },
    /// Create from a file with the fields of its config section (TOML or
    /// JSON).
    Add {
        file: PathBuf,
    },
    /// Replace with the fields in a file (the name must stay).
    Set {
        name: String,
        file: PathBuf,
    },
    Delete {
        name: String,
    },
    /// A webhook gets a ping; a rule reports what it would patch.
    Test {
        name: String,
    },
}

/// Connection settings from the optional file.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

fn client_file() -> anyhow::Result<ClientFile> {
    let path = match std::env::var_os("BERTH_ADMIN_CONFIG") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".config/berth/admin.toml"),
            None => return Ok(ClientFile::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A query string of the pairs that have a value.
fn query(pairs: &[(&str, Option<&String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    query.finish()
}

/// Percent-encodes one path segment (repository names contain `/`).
pub(super) fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Client {
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/admin/v1{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    Some(format!(
                        "{} ({})",
                        v["message"].as_str()?,
                        v["code"].as_str()?
                    ))
                })
                .unwrap_or(text);
            bail!("{status}: {message}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn read_secret_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A webhook or rule spec from a TOML or JSON file.
pub(super) fn spec_file(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return Ok(v);
    }
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(serde_json::to_value(v)?)
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let file = client_file()?;
    let client = Client {
        http: reqwest::Client::new(),
        base: args
            .url
            .or(file.url)
            .context("no URL: give --url, set BERTH_URL, or write ~/.config/berth/admin.toml")?
            .trim_end_matches('/')
            .to_owned(),
        user: args.user.or(file.user).unwrap_or_else(|| "admin".into()),
        password: args.password.or(file.password).context(
            "no password: give --password, set BERTH_PASSWORD, or write ~/.config/berth/admin.toml",
        )?,
    };
    let out = Output { json: args.json };
    match args.command {
        AdminCommand::Repo(c) => match c {
            RepoCommand::List {
                filter,
                limit,
                after,
            } => {
                let limit = limit.to_string();
                let query = query(&[
                    ("limit", Some(&limit)),
                    ("q", filter.as_ref()),
                    ("after", after.as_ref()),
                ]);
                let page = client.get(&format!("/repositories?{query}")).await?;
                out.table(
                    &page,
                    &page["repositories"],
                    &[
                        ("NAME", "name"),
                        ("TAGS", "tag_count"),
                        ("SIZE", "total_size"),
                        ("UNIQUE", "unique_size"),
                        ("LAST PUSH", "last_push"),
                        ("LAST PULL", "last_pull"),
                    ],
                );
                if !out.json
                    && let Some(next) = page["next"].as_str()
                {
                    println!("(more: --after {next})");
                }
            }
            RepoCommand::Show { name } => {
                out.object(&client.get(&format!("/repositories/{}", seg(&name))).await?)
            }
            RepoCommand::Delete { name } => {
                client
                    .call(
                        Method::DELETE,
                        &format!("/repositories/{}", seg(&name)),
                        None,
                    )
                    .await?;
                out.done(&format!("deleted {name}"));
            }
            RepoCommand::Settings {
                name,
                immutable_tags,
                public_read,
                keep_last,
                keep_days,
                tag_pattern,
                no_retention,
            } => {
                let path = format!("/repositories/{}/settings", seg(&name));
                let mut settings = client.get(&path).await?;
                let retention_given =
                    keep_last.is_some() || keep_days.is_some() || tag_pattern.is_some();
                let changing = immutable_tags.is_some()
                    || public_read.is_some()
                    || retention_given
                    || no_retention;
                if changing {
                    if let Some(v) = immutable_tags {
                        settings["immutable_tags"] = json!(v);
                    }
                    if let Some(v) = public_read {
                        settings["public_read"] = json!(v);
                    }
                    if no_retention {
                        settings["retention"] = Value::Null;
                    } else if retention_given {
                        let mut policy = serde_json::Map::new();
                        if let Some(n) = keep_last {
                            policy.insert("keep_last".into(), json!(n));
                        }
                        if let Some(d) = keep_days {
                            policy.insert("keep_days".into(), json!(d));
                        }
                        if let Some(p) = tag_pattern {
                            policy.insert("tag_pattern".into(), json!(p));
                        }
                        settings["retention"] = Value::Object(policy);
                    }
                    settings = client.call(Method::PUT, &path, Some(settings)).await?;
                }
                out.object(&settings);
            }
            RepoCommand::Retention { name, dry_run } => {
                let run = client
                    .call(
                        Method::POST,
                        &format!("/repositories/{}/retention?dry_run={dry_run}", seg(&name)),
                        None,
                    )
                    .await?;
                if out.json {
                    out.object(&run);
                } else {
                    let verb = if dry_run { "would delete" } else { "deleted" };
                    let tags: Vec<&str> = run["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!("{verb} {} tag(s): {}", tags.len(), tags.join(" "));
                }
            }
        },
        AdminCommand::Tag(c) => match c {
            TagCommand::List { repository } => {
                let tags = client
                    .get(&format!("/repositories/{}/tags", seg(&repository)))
                    .await?;
                out.table(
                    &tags,
                    &tags,
                    &[
                        ("TAG", "name"),
                        ("DIGEST", "digest"),
                        ("SIZE", "image_size"),
                        ("PLATFORMS", "platforms"),
                        ("PUSHED", "pushed_at"),
                    ],
                );
            }
            TagCommand::Delete { repository, tag } => {
                client
                    .call(
                        Method::DELETE,
                        &format!("/repositories/{}/tags/{}", seg(&repository), seg(&tag)),
                        None,
                    )
                    .await?;
                out.done(&format!("deleted {repository}:{tag}"));
            }
        },
        AdminCommand::Manifest(c) => match c {
            ManifestCommand::List { repository } => {
                let manifests = client
                    .get(&format!("/repositories/{}/manifests", seg(&repository)))
                    .await?;
                out.table(
                    &manifests,
                    &manifests,
                    &[
                        ("DIGEST", "digest"),
                        ("TYPE", "media_type"),
                        ("SIZE", "image_size"),
                        ("PLATFORMS", "platforms"),
                        ("TAGS", "tags"),
                        ("PUSHED", "pushed_at"),
                    ],
                );
            }
            ManifestCommand::Delete { repository, digest } => {
                client
                    .call(
                        Method::DELETE,
                        &format!(
                            "/repositories/{}/manifests/{}",
                            seg(&repository),
                            seg(&digest)
                        ),
                        None,
                    )
                    .await?;
                out.done(&format!("deleted {repository}@{digest}"));
            }
        },
        AdminCommand::Account(c) => match c {
            AccountCommand::List => {
                let accounts = client.get("/accounts").await?;
                out.table(
                    &accounts,
                    &accounts,
                    &[("NAME", "name"), ("KIND", "kind"), ("DISABLED", "disabled")],
                );
            }
            AccountCommand::Show { name } => {
                out.object(&client.get(&format!("/accounts/{}", seg(&name))).await?)
            }
            AccountCommand::Add {
                name,
                robot,
                password_stdin,
            } => {
                let password = if password_stdin {
                    Some(read_secret_line()?)
                } else {
                    None
                };
                let kind = if robot { "robot" } else { "user" };
                let created = client
                    .call(
                        Method::POST,
                        "/accounts",
                        Some(json!({ "name": name, "kind": kind, "password": password })),
                    )
                    .await?;
                out.secret(&created, password_stdin);
            }
            AccountCommand::Disable { name } => set_disabled(&client, &out, &name, true).await?,
            AccountCommand::Enable { name } => set_disabled(&client, &out, &name, false).await?,
            AccountCommand::Rotate {
                name,
                password_stdin,
            } => {
                let password = if password_stdin {
                    Some(read_secret_line()?)
                } else {
                    None
                };
                let rotated = client
                    .call(
                        Method::POST,
                        &format!("/accounts/{}/secret", seg(&name)),
                        Some(json!({ "password": password })),
                    )
                    .await?;
                out.secret(&rotated, password_stdin);
            }
            AccountCommand::Delete { name } => {
                client
                    .call(Method::DELETE, &format!("/accounts/{}", seg(&name)), None)
                    .await?;
                out.done(&format!("deleted {name}"));
            }
        },
        AdminCommand::Grant(c) => match c {
            GrantCommand::List { subject } => {
                let grants = client
                    .get(&format!("/accounts/{}/grants", seg(&subject)))
                    .await?;
                out.table(
                    &grants,
                    &grants,
                    &[("NAMESPACE", "namespace"), ("ACTIONS", "actions")],
                );
            }
            GrantCommand::Set {
                subject,
                namespace,
                actions,
            } => {
                let actions: Vec<&str> = actions.split(',').map(str::trim).collect();
                let grant = client
                    .call(
                        Method::PUT,
                        &format!("/accounts/{}/grants/{}", seg(&subject), seg(&namespace)),
                        Some(json!({ "actions": actions })),
                    )
                    .await?;
                out.object(&grant);
            }
            GrantCommand::Revoke { subject, namespace } => {
                client
                    .call(
                        Method::DELETE,
                        &format!("/accounts/{}/grants/{}", seg(&subject), seg(&namespace)),
                        None,
                    )
                    .await?;
                out.done(&format!("revoked {subject} on {namespace}"));
            }
        },
        AdminCommand::Webhook(c) => sink_command(&client, &out, "/webhooks", c).await?,
        AdminCommand::Rule(c) => sink_command(&client, &out, "/deploy-rules", c).await?,
        AdminCommand::Deliveries { sink, state, limit } => {
            let limit = limit.to_string();
            let query = query(&[
                ("limit", Some(&limit)),
                ("sink", sink.as_ref()),
                ("state", state.as_ref()),
            ]);
            let rows = client.get(&format!("/deliveries?{query}")).await?;
            out.table(&rows, &rows, table::DELIVERIES);
        }
        AdminCommand::Redeliver { event_seq, sink } => {
            client
                .call(
                    Method::POST,
                    &format!("/deliveries/{event_seq}/{}/redeliver", seg(&sink)),
                    None,
                )
                .await?;
            out.done(&format!("queued event {event_seq} to {sink} again"));
        }
        AdminCommand::Deploys { rule, limit } => {
            let limit = limit.to_string();
            let query = query(&[("limit", Some(&limit)), ("rule", rule.as_ref())]);
            let rows = client.get(&format!("/deploys?{query}")).await?;
            out.table(&rows, &rows, table::DEPLOYS);
        }
        AdminCommand::Mirror(c) => super::mirrors::run(&client, &out, c).await?,
        AdminCommand::Signature(c) => super::signatures::run(&client, &out, c).await?,
        AdminCommand::Gc(GcCommand::Status) => out.object(&client.get("/gc").await?),
        AdminCommand::Gc(GcCommand::Run { dry_run }) => {
            let before = client.get("/gc").await?;
            client
                .call(Method::POST, &format!("/gc?dry_run={dry_run}"), None)
                .await?;
            // The run is in the background: wait for a new report.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let status = client.get("/gc").await?;
                if status["running"] == json!(false) && status["last"] != before["last"] {
                    out.object(&status["last"]);
                    break;
                }
            }
        }
        AdminCommand::Audit { limit } => {
            let rows = client.get(&format!("/audit?limit={limit}")).await?;
            out.table(
                &rows,
                &rows,
                &[
                    ("AT", "at"),
                    ("ACTOR", "actor"),
                    ("ADDRESS", "address"),
                    ("ACTION", "action"),
                    ("TARGET", "target"),
                    ("DETAIL", "detail"),
                ],
            );
        }
    }
    Ok(())
}

async fn set_disabled(
    client: &Client,
    out: &Output,
    name: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let account = client
        .call(
            reqwest::Method::PATCH,
            &format!("/accounts/{}", seg(name)),
            Some(json!({ "disabled": disabled })),
        )
        .await?;
    out.object(&account);
    Ok(())
}

async fn sink_command(
    client: &Client,
    out: &Output,
    base: &str,
    command: SinkCommand,
) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        SinkCommand::List => {
            let rows = client.get(base).await?;
            out.table(
                &rows,
                &rows,
                &[
                    ("NAME", "name"),
                    ("FROM CONFIG", "from_config"),
                    ("UPDATED", "updated_at"),
                ],
            );
        }
        SinkCommand::Show { name } => {
            out.object(&client.get(&format!("{base}/{}", seg(&name))).await?)
        }
        SinkCommand::Add { file } => {
            let created = client
                .call(Method::POST, base, Some(spec_file(&file)?))
                .await?;
            out.object(&created);
        }
        SinkCommand::Set { name, file } => {
            let changed = client
                .call(
                    Method::PUT,
                    &format!("{base}/{}", seg(&name)),
                    Some(spec_file(&file)?),
                )
                .await?;
            out.object(&changed);
        }
        SinkCommand::Delete { name } => {
            client
                .call(Method::DELETE, &format!("{base}/{}", seg(&name)), None)
                .await?;
            out.done(&format!("deleted {name}"));
        }
        SinkCommand::Test { name } => {
            let result = client
                .call(Method::POST, &format!("{base}/{}/test", seg(&name)), None)
                .await?;
            if out.json {
                out.object(&result);
            } else {
                let ok = result["ok"].as_bool().unwrap_or(false);
                println!(
                    "{}: {}",
                    if ok { "ok" } else { "FAILED" },
                    result["detail"].as_str().unwrap_or("")
                );
            }
            if !result["ok"].as_bool().unwrap_or(false) {
                bail!("the test of {name} failed");
            }
        }
    }
    Ok(())
}
