//! The Kafka listener driven by two more clients nobody here wrote, neither built on
//! librdkafka: kafka-python 2.2.15 (pure Python; snappy, lz4 and zstd through python-snappy,
//! lz4 and zstandard) and kafkajs 2.2.4 (pure JavaScript; snappy, lz4 and zstd through
//! kafkajs-snappy, kafkajs-lz4 and @mongodb-js/zstd). Each runs the same scenarios: topic
//! administration, produce and consume with every codec, a replay from the cold tier only,
//! seek by time, a consumer group of three, and a transactional producer that is refused.
//! The scripts are tests/python/kafka_python_client.py and tests/kafkajs/client.js;
//! docs/kafka.md's client matrix says what each client is tested for.

use std::path::Path;
use std::process::Command;

use super::Node;
use super::kafka::{across_a_cold_restart, run_client};

/// What a script prints last when every check held.
const OK: &str = "kafka matrix ok";

/// tests/python/kafka_python_client.py (kafka-python) in `mode`.
pub(super) fn kafka_python(python: &str, mode: &str, bootstrap: &str, state: &Path) {
    let mut c = Command::new(python);
    c.arg(tierlog_tests::tests_dir().join("python/kafka_python_client.py"));
    run_client(c, mode, bootstrap, state, OK);
}

/// tests/kafkajs/client.js (kafkajs, from the directory the test command installed it in) in
/// `mode`.
pub(super) fn kafkajs(modules: &str, mode: &str, bootstrap: &str, state: &Path) {
    let mut c = Command::new("node");
    c.arg(tierlog_tests::tests_dir().join("kafkajs/client.js"))
        .env("NODE_PATH", Path::new(modules).join("node_modules"));
    run_client(c, mode, bootstrap, state, OK);
}

/// One `mode` of `client` against a fresh node (on etcd for groups, as the other group tests).
fn on_a_node(mode: &str, groups: bool, client: impl Fn(&str, &str, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let node = if groups {
        super::groups::node(dir.path())
    } else {
        Node::start(dir.path(), &[])
    };
    client(mode, &node.kafka, Path::new("-"));
    node.stop();
}

/// kafka-python's admin client creates a topic with settings (retention.ms=-1,
/// cleanup.policy, max.message.bytes), describes them, alters them (AlterConfigs: the client
/// has no IncrementalAlterConfigs) and sees the change, is refused an unknown setting, a bad
/// value, an existing name and fewer partitions with Kafka's codes, adds partitions and sees the
/// count in metadata, produces to and reads a new partition, deletes the topic and sees it gone.
#[test]
fn kafka_python_administers_topics_settings_and_partitions() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    on_a_node("admin", false, |m, b, s| kafka_python(&python, m, b, s));
}

/// kafka-python's consumers read through incremental fetch sessions (KIP-227): a full fetch
/// opens a session, later fetches name only what changed, and what they read is checked record
/// by record (the `write` scenario: every codec, three partitions, offsets by time). The
/// node's metrics show full and incremental session fetches, and none refused for a wrong
/// epoch or an unknown session. Then kafka-python's FetchRequest v7 classes, sent by hand,
/// check what each kind of session fetch answers.
#[test]
fn kafka_python_reads_through_incremental_fetch_sessions() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    kafka_python(
        &python,
        "write",
        &node.kafka,
        &dir.path().join("state.json"),
    );
    let (status, text) = super::metrics::get(&node.http, "/metrics");
    assert_eq!(status, 200);
    let fetches = |session: &str| -> f64 {
        let line = format!("tierlog_kafka_fetches_total{{session=\"{session}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0.0, |n| n.trim().parse().unwrap())
    };
    assert!(
        fetches("full") >= 1.0 && fetches("incremental") >= 1.0,
        "full {}, incremental {}",
        fetches("full"),
        fetches("incremental")
    );
    assert_eq!(fetches("refused"), 0.0, "no fetch refused");
    // The protocol itself, with kafka-python's request classes: what an incremental fetch
    // answers, forgetting, refusals, and epoch 0 with an id.
    kafka_python(&python, "sessions", &node.kafka, Path::new("-"));
    node.stop();
}

/// kafka-python produces with every codec it has (none, gzip, snappy, lz4, zstd), keyed, with
/// headers and timestamps, idempotent at acks=all, and reads every record back from offset 0
/// identical (partition, dense offsets, key, value, headers, timestamp); ListOffsets by
/// timestamp (`offsets_for_times`) finds the first record at or after a time. After a restart
/// without the hot tier the same records, and the same offsets for times, come back from the
/// cold tier; new records continue the offsets.
#[test]
fn kafka_python_produces_every_codec_and_replays_from_the_cold_tier() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    across_a_cold_restart("write", "replay", |m, b, s| kafka_python(&python, m, b, s));
}

/// Three kafka-python group members (classic protocol, the client's range assignor) share a
/// topic of six partitions: each partition owned by exactly one member, every record read
/// once, each member committing what it read. Then one member leaves and a new one joins:
/// after the rebalance the group reads the records produced since exactly once, resuming from
/// the commits, and the committed offsets are the partitions' ends. The admin client describes
/// the group as Stable with three members, and Empty once all have left.
#[test]
fn kafka_python_consumer_group_of_three_shares_and_hands_over() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    on_a_node("groups", true, |m, b, s| kafka_python(&python, m, b, s));
}

/// kafka-python's transactional producer (`transactional_id`, `init_transactions()`) stops at
/// once with TransactionalIdAuthorizationFailedError (the node's fatal answer), not a timeout
/// after retries; an idempotent producer on the same node works.
#[test]
fn kafka_python_transactional_producer_is_refused_without_retries() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    on_a_node("transactions", false, |m, b, s| {
        kafka_python(&python, m, b, s)
    });
}

/// kafkajs's admin client creates a topic with settings (retention.ms=-1, cleanup.policy,
/// max.message.bytes), describes them, alters them (AlterConfigs) and sees the change, is
/// refused an unknown setting, a bad value, an existing name and fewer partitions with Kafka's
/// codes, adds partitions and sees the count in metadata, produces to and reads a new
/// partition, deletes the topic and sees it gone.
#[test]
fn kafkajs_administers_topics_settings_and_partitions() {
    let Some(modules) = tierlog_tests::kafkajs() else {
        return;
    };
    on_a_node("admin", false, |m, b, s| kafkajs(&modules, m, b, s));
}

/// kafkajs produces with every codec (none, gzip, snappy, lz4, zstd), keyed, with headers and
/// timestamps, idempotent at acks=all, and reads every record back from offset 0 identical
/// (partition, dense offsets, key, value, headers, timestamp); ListOffsets by timestamp
/// (`admin.fetchTopicOffsetsByTimestamp`) finds the first record at or after a time. After a
/// restart without the hot tier the same records come back from the cold tier; new records
/// continue the offsets.
#[test]
fn kafkajs_produces_every_codec_and_replays_from_the_cold_tier() {
    let Some(modules) = tierlog_tests::kafkajs() else {
        return;
    };
    across_a_cold_restart("write", "replay", |m, b, s| kafkajs(&modules, m, b, s));
}

/// Three kafkajs group members (classic protocol, kafkajs's round-robin assignor) share a topic
/// of six partitions: each partition owned by exactly one member, every record read once,
/// each member committing what it read. Then one member leaves and a new one joins: after the
/// rebalance the group reads the records produced since exactly once, resuming from the
/// commits, and the committed offsets are the partitions' ends. The admin client describes the
/// group as Stable with three members, and Empty once all have left.
#[test]
fn kafkajs_consumer_group_of_three_shares_and_hands_over() {
    let Some(modules) = tierlog_tests::kafkajs() else {
        return;
    };
    on_a_node("groups", true, |m, b, s| kafkajs(&modules, m, b, s));
}

/// kafkajs's transactional producer (`transactionalId`, `connect()` then
/// `producer.transaction()`) fails after one FindCoordinator, not retried. kafkajs hides the
/// node's answer behind its own `KafkaJSGroupCoordinatorNotFound`, so the test also finds the
/// node's code in kafkajs's error log. An idempotent producer on the same node works.
#[test]
fn kafkajs_transactional_producer_is_refused_without_retries() {
    let Some(modules) = tierlog_tests::kafkajs() else {
        return;
    };
    on_a_node("transactions", false, |m, b, s| kafkajs(&modules, m, b, s));
}
