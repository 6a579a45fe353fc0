//! `berth admin signature ...`: trusted keys, pull policies, and which
//! manifests of a repository are signed, through the admin API.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::admin::{Client, seg};
use super::table::Output;

#[derive(Subcommand)]
pub enum SignatureCommand {
    /// The trusted public keys.
    Keys,
    /// Trust a PEM public key (ECDSA P-256 as cosign makes, RSA, Ed25519).
    AddKey {
        name: String,
        /// The PEM file, e.g. cosign.pub.
        public_key_file: PathBuf,
    },
    /// Trust a key no longer: its signatures stop counting at once.
    RemoveKey { name: String },
    /// Namespaces whose pulls need a valid signature.
    Policies,
    /// Each image manifest of a repository: signed or not, by which key.
    Status { repository: String },
}

pub(super) async fn run(
    client: &Client,
    out: &Output,
    command: SignatureCommand,
) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        SignatureCommand::Keys => {
            let rows = client.get("/signatures/keys").await?;
            out.table(
                &rows,
                &rows,
                &[
                    ("NAME", "name"),
                    ("ALGORITHM", "algorithm"),
                    ("FINGERPRINT", "fingerprint"),
                    ("FROM CONFIG", "from_config"),
                    ("ADDED", "added_at"),
                ],
            );
        }
        SignatureCommand::AddKey {
            name,
            public_key_file,
        } => {
            let pem = std::fs::read_to_string(&public_key_file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", public_key_file.display()))?;
            let body = json!({ "name": name, "public_key": pem });
            let created = client
                .call(Method::POST, "/signatures/keys", Some(body))
                .await?;
            out.object(&created);
        }
        SignatureCommand::RemoveKey { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/signatures/keys/{}", seg(&name)),
                    None,
                )
                .await?;
            out.done(&format!("key {name} is trusted no longer"));
        }
        SignatureCommand::Policies => {
            let rows = client.get("/signatures/policies").await?;
            out.table(
                &rows,
                &rows,
                &[("NAMESPACE", "namespace"), ("KEYS", "keys")],
            );
        }
        SignatureCommand::Status { repository } => {
            let rows = client
                .get(&format!("/repositories/{}/signatures", seg(&repository)))
                .await?;
            out.table(
                &rows,
                &rows,
                &[
                    ("DIGEST", "digest"),
                    ("TAGS", "tags"),
                    ("SIGNED", "signed"),
                    ("KEY", "key"),
                    ("REASON", "reason"),
                ],
            );
        }
    }
    Ok(())
}
