//! `tierlog groups ...` and `tierlog consume --group`: thin over the client's group calls.

use std::collections::BTreeMap;
use std::time::Duration;

use client::{Client, GroupConfig, GroupConsumer, OffsetReset, Rebalance};
use proto::v1 as pb;
use serde_json::json;

use crate::commands::{ConsumeArgs, explain, print_records};

/// Settings of a group member started by `consume --group`.
pub struct MemberArgs {
    pub assignor: Option<String>,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
}

fn list(tps: &[(String, u32)]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
            format!("{t}[{}]", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `consume TOPIC --group G`: joins the group and prints what it is given; commits what it
/// printed (every second, before giving a partition up, and when it stops), then leaves.
pub async fn consume_as_member(c: &Client, a: ConsumeArgs, m: MemberArgs) -> anyhow::Result<()> {
    let group = a.group.clone().expect("called with a group");
    let cfg = GroupConfig {
        group,
        topics: vec![a.topic.clone()],
        assignor: m.assignor,
        instance_id: m.instance_id,
        client_id: "tierlog-cli".into(),
        session_timeout: m.session_timeout,
        auto_commit: Some(Duration::from_secs(1)),
        offset_reset: if a.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..GroupConfig::default()
    };
    let mut consumer = GroupConsumer::join(c.clone(), cfg).await.map_err(explain)?;
    consumer.set_listener(|event| match event {
        Rebalance::Assigned(tps) => eprintln!("assigned: {}", list(tps)),
        Rebalance::Revoked(tps) => eprintln!("revoked: {}", list(tps)),
        Rebalance::Lost(tps) => eprintln!("lost: {}", list(tps)),
    });
    print_records(&mut consumer, &a).await?;
    consumer.close().await.map_err(explain)?;
    Ok(())
}

pub async fn list_groups(c: &Client, as_json: bool) -> anyhow::Result<()> {
    let groups = c.list_groups().await.map_err(explain)?;
    if as_json {
        let v: Vec<_> = groups
            .iter()
            .map(|g| json!({"group": g.group, "state": g.state, "members": g.members}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if groups.is_empty() {
        println!("no groups");
        return Ok(());
    }
    println!("{:<32} {:<10} {:>7}", "group", "state", "members");
    for g in groups {
        println!("{:<32} {:<10} {:>7}", g.group, g.state, g.members);
    }
    Ok(())
}

/// One partition's row of `groups describe`.
struct Row {
    topic: String,
    partition: u32,
    committed: Option<i64>,
    high: i64,
    lag: Option<i64>,
    lag_ms: Option<i64>,
    owner: String,
}

pub async fn describe_group(c: &Client, group: &str, as_json: bool) -> anyhow::Result<()> {
    let d = c.describe_group(group).await.map_err(explain)?;
    // The node computes each partition's lag (the figures /metrics exports).
    let rows: Vec<Row> = d
        .offsets
        .iter()
        .map(|o| Row {
            topic: o.topic.clone(),
            partition: o.partition,
            committed: o.committed,
            high: o.high_watermark,
            lag: o.lag,
            lag_ms: o.lag_ms,
            owner: o.member_id.clone(),
        })
        .collect();
    let lag = |r: &Row| r.lag;
    if as_json {
        let v = json!({
            "group": d.group,
            "state": d.state,
            "generation": d.generation,
            "assignor": d.assignor,
            "coordinator": d.coordinator,
            "members": d.members.iter().map(|m| json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "member_epoch": m.member_epoch,
                "assigned": m.owned.iter().flat_map(|t| t.partitions.iter().map(move |p| json!({"topic": t.topic, "partition": p}))).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "offsets": rows.iter().map(|r| json!({
                "topic": r.topic,
                "partition": r.partition,
                "committed": r.committed,
                "high_watermark": r.high,
                "lag": lag(r),
                "lag_seconds": r.lag_ms.map(|ms| ms as f64 / 1000.0),
                "member_id": r.owner,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "group {} ({}, generation {}, assignor {}, coordinator node {})",
        d.group,
        d.state,
        d.generation,
        if d.assignor.is_empty() {
            "-"
        } else {
            &d.assignor
        },
        d.coordinator
    );
    if !d.members.is_empty() {
        println!();
        println!(
            "{:<40} {:<16} {:<16} partitions",
            "member", "instance", "host"
        );
        for m in &d.members {
            let tps: Vec<(String, u32)> = m
                .owned
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
                .collect();
            println!(
                "{:<40} {:<16} {:<16} {}",
                m.member_id,
                if m.instance_id.is_empty() {
                    "-"
                } else {
                    &m.instance_id
                },
                m.host,
                list(&tps)
            );
        }
    }
    println!();
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>10} {:>10}  member",
        "topic", "partition", "committed", "high", "lag", "lag-time"
    );
    for r in &rows {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>10} {:>10}  {}",
            r.topic,
            r.partition,
            r.committed.map_or("-".into(), |o| o.to_string()),
            r.high,
            lag(r).map_or("-".into(), |l| l.to_string()),
            r.lag_ms
                .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            if r.owner.is_empty() { "-" } else { &r.owner }
        );
    }
    Ok(())
}

/// Where `groups reset-offsets` moves the offsets.
pub enum ResetArg {
    Earliest,
    Latest,
    Time(i64),
    Offset(i64),
    Shift(i64),
}

pub async fn reset_offsets(
    c: &Client,
    group: &str,
    topic: &str,
    partitions: Vec<u32>,
    to: ResetArg,
    execute: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    use pb::reset_offsets_request::To;
    let to = match to {
        ResetArg::Earliest => To::Position(pb::StartPosition::StartEarliest as i32),
        ResetArg::Latest => To::Position(pb::StartPosition::StartLatest as i32),
        ResetArg::Time(ms) => To::TimestampMs(ms),
        ResetArg::Offset(o) => To::Offset(o),
        ResetArg::Shift(n) => To::ShiftBy(n),
    };
    let plan = c
        .reset_offsets(pb::ResetOffsetsRequest {
            group: group.into(),
            topic: topic.into(),
            partitions,
            to: Some(to),
            dry_run: !execute,
        })
        .await
        .map_err(explain)?;
    if as_json {
        let v: Vec<_> = plan
            .iter()
            .map(|r| {
                json!({"topic": r.topic, "partition": r.partition,
                       "before": (r.before >= 0).then_some(r.before), "after": r.after})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"executed": execute, "offsets": v}))?
        );
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>12} {:>12}",
        "topic", "partition", "before", "after"
    );
    for r in &plan {
        println!(
            "{:<24} {:>9} {:>12} {:>12}",
            r.topic,
            r.partition,
            if r.before < 0 {
                "-".into()
            } else {
                r.before.to_string()
            },
            r.after
        );
    }
    if execute {
        println!("reset {} partitions of group {group}", plan.len());
    } else {
        println!("dry run: nothing changed; add --execute to apply");
    }
    Ok(())
}

pub async fn delete_group(c: &Client, group: &str) -> anyhow::Result<()> {
    c.delete_group(group).await.map_err(explain)?;
    println!("deleted group {group}");
    Ok(())
}
