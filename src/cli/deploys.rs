//! `berth deploys|deliveries|rollback`: what pushes rolled out, where
//! events went, and putting a rule's workloads back. `deploys` and
//! `deliveries` read the metadata store here, so they work when berth is
//! down; `berth admin deploys|deliveries` ask a running berth, from
//! anywhere, and print the same table.

use std::sync::Arc;

use berth::api::admin::{DeliveryInfo, DeployInfo};
use berth::config::{Config, DeployRuleConfig};
use berth::meta::MetaStore;

use super::table::{self, Output};

pub async fn deploys(meta: &MetaStore, limit: u32, json: bool) -> anyhow::Result<()> {
    let rows: Vec<DeployInfo> = meta
        .deploys(limit, None)
        .await?
        .into_iter()
        .map(DeployInfo::from)
        .collect();
    let rows = serde_json::to_value(rows)?;
    if json {
        // One object per line, for tools that read logs.
        for row in rows.as_array().into_iter().flatten() {
            println!("{row}");
        }
        return Ok(());
    }
    Output { json }.table(&rows, &rows, table::DEPLOYS);
    Ok(())
}

pub async fn deliveries(meta: &MetaStore, limit: u32) -> anyhow::Result<()> {
    let rows: Vec<DeliveryInfo> = meta
        .deliveries(limit, None, None)
        .await?
        .into_iter()
        .map(DeliveryInfo::from)
        .collect();
    let rows = serde_json::to_value(rows)?;
    Output { json: false }.table(&rows, &rows, table::DELIVERIES);
    Ok(())
}

pub async fn rollback(
    config: &Config,
    meta: &MetaStore,
    rule: &str,
    to: Option<&str>,
) -> anyhow::Result<()> {
    // Rules made through the admin API are stored, not in the file.
    let stored: Vec<DeployRuleConfig> = meta
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
    if let Some(digest) = to {
        digest
            .parse::<berth::core::names::Digest>()
            .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    }
    let cluster = Arc::new(berth::deploy::Cluster::connect(&config.deploy.kubeconfig).await?);
    let sink = berth::deploy::RuleSink::new(
        berth::deploy::rule::DeployRule::from_config(rule_config)?,
        cluster,
        meta.clone(),
        &config.deploy.registry_host,
    );
    for line in sink.rollback(to).await.map_err(anyhow::Error::msg)? {
        println!("{line}");
    }
    Ok(())
}
