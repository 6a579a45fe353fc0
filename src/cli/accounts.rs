//! `berth user|robot|grant|revoke|grants`: accounts and what they may do,
//! changed in the metadata store directly.

use std::io::BufRead;
use std::path::PathBuf;

use clap::Subcommand;

use berth::auth::manage::AccountAdmin;

#[derive(Subcommand)]
pub enum UserCommand {
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
pub enum RobotCommand {
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

pub async fn user(admin: &AccountAdmin, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            admin: is_admin,
        } => {
            let given = password_stdin.then(read_password).transpose()?;
            let generated = given.is_none();
            let password = admin.add_user(&name, given, is_admin).await?;
            println!("added user {name}");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let given = password_stdin.then(read_password).transpose()?;
            let generated = given.is_none();
            let password = admin.set_secret(&name, given).await?;
            println!("changed the password of {name}");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Del { name } => delete(admin, &name).await?,
        UserCommand::List => {
            for account in admin.list().await? {
                let state = if account.disabled { " (disabled)" } else { "" };
                println!("{}\t{}{state}", account.name, account.kind.as_str());
            }
        }
        UserCommand::ImportHtpasswd { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let added = admin.import_htpasswd(&text).await?;
            let noun = if added.len() == 1 { "user" } else { "users" };
            match added.is_empty() {
                true => println!("imported no users"),
                false => println!("imported {} {noun}: {}", added.len(), added.join(", ")),
            }
        }
    }
    Ok(())
}

pub async fn robot(admin: &AccountAdmin, command: RobotCommand) -> anyhow::Result<()> {
    match command {
        RobotCommand::Add { name, pull_secret } => {
            let secret = admin.add_robot(&name).await?;
            println!("added robot {name}");
            println!("secret: {secret}");
            if let Some(host) = pull_secret {
                println!("{}", docker_config_json(&host, &name, &secret));
            }
        }
        RobotCommand::Rotate { name } => {
            let secret = admin.set_secret(&name, None).await?;
            println!("secret: {secret}");
        }
        RobotCommand::Del { name } => delete(admin, &name).await?,
    }
    Ok(())
}

async fn delete(admin: &AccountAdmin, name: &str) -> anyhow::Result<()> {
    admin.delete(name).await?;
    println!("deleted {name}");
    Ok(())
}

pub async fn grant(
    admin: &AccountAdmin,
    subject: &str,
    namespace: &str,
    actions: &str,
) -> anyhow::Result<()> {
    let grant = admin.grant(subject, namespace, actions).await?;
    println!(
        "{subject} may {} on {}",
        grant.actions,
        namespace_label(grant.namespace.as_str())
    );
    Ok(())
}

pub async fn revoke(admin: &AccountAdmin, subject: &str, namespace: &str) -> anyhow::Result<()> {
    admin.revoke(subject, namespace).await?;
    println!("revoked {subject}'s grant on {namespace}");
    Ok(())
}

pub async fn grants(admin: &AccountAdmin, subject: &str) -> anyhow::Result<()> {
    for grant in admin.grants(subject).await? {
        println!(
            "{}\t{}",
            namespace_label(grant.namespace.as_str()),
            grant.actions
        );
    }
    Ok(())
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
