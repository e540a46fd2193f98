//! The key layout (see the crate docs) and name validation.
//!
//! Topic and counter names are restricted to `[A-Za-z0-9._-]`, so they never contain `/` and
//! can be embedded in keys as they are. Group ids are arbitrary strings, so `%` and `/` in them
//! are percent-encoded: one group's keys never fall under another group's prefix.

use crate::error::{Error, Result};

/// Longest topic or counter name (Kafka's limit).
const MAX_NAME_LEN: usize = 249;

/// Checks a topic name: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    validate_name("topic", name)
}

pub(super) fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{kind} name must be 1..={MAX_NAME_LEN} characters, got {}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(format!("{kind} name cannot be {name:?}")));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(format!(
            "{kind} name {name:?} contains {bad:?}; allowed are [A-Za-z0-9._-]"
        )));
    }
    Ok(())
}

/// Longest group id (bytes).
pub const MAX_GROUP_ID_LEN: usize = 255;

/// Checks a group id: 1..=255 bytes, no control characters.
pub fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() {
        return Err(Error::invalid("group id must not be empty"));
    }
    if group.len() > MAX_GROUP_ID_LEN {
        return Err(Error::invalid(format!(
            "group id must be at most {MAX_GROUP_ID_LEN} bytes, got {}",
            group.len()
        )));
    }
    if group.chars().any(char::is_control) {
        return Err(Error::invalid(
            "group id must not contain control characters",
        ));
    }
    Ok(())
}

/// What a key under `partitions/` names.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PartitionKey {
    Epoch,
    Leader,
    /// A node that cannot open the partition now (`partitions/<topic>/<p>/unable/<node>`).
    Unable(u64),
}

#[derive(Debug)]
pub(super) struct Keys {
    root: String,
}

impl Keys {
    pub fn new(root: String) -> Self {
        Keys { root }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn topics(&self) -> String {
        format!("{}topics/", self.root)
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.root)
    }

    pub fn counter(&self, name: &str) -> String {
        format!("{}ids/{name}", self.root)
    }

    pub fn partitions(&self) -> String {
        format!("{}partitions/", self.root)
    }

    pub fn topic_partitions(&self, topic: &str) -> String {
        format!("{}partitions/{topic}/", self.root)
    }

    pub fn epoch(&self, topic: &str, partition: u32) -> String {
        format!("{}partitions/{topic}/{partition}/epoch", self.root)
    }

    pub fn leader(&self, topic: &str, partition: u32) -> String {
        format!("{}partitions/{topic}/{partition}/leader", self.root)
    }

    pub fn unable(&self, topic: &str, partition: u32, node: u64) -> String {
        format!("{}partitions/{topic}/{partition}/unable/{node}", self.root)
    }

    /// Splits `partitions/<topic>/<p>/{epoch,leader,unable/<node>}`; `None` for other keys.
    pub fn parse_partition_key(&self, key: &[u8]) -> Option<(String, u32, PartitionKey)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.root)?
            .strip_prefix("partitions/")?;
        let mut parts = rest.split('/');
        let (topic, partition, kind) = (parts.next()?, parts.next()?, parts.next()?);
        let kind = match (kind, parts.next()) {
            ("epoch", None) => PartitionKey::Epoch,
            ("leader", None) => PartitionKey::Leader,
            ("unable", Some(node)) => PartitionKey::Unable(node.parse().ok()?),
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some((topic.to_owned(), partition.parse().ok()?, kind))
    }

    pub fn cluster_id(&self) -> String {
        format!("{}cluster/id", self.root)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    pub fn node(&self, id: u64) -> String {
        format!("{}nodes/{id}", self.root)
    }

    pub fn groups(&self) -> String {
        format!("{}groups/", self.root)
    }

    pub fn group(&self, group: &str) -> String {
        format!("{}groups/{}/", self.root, encode_group(group))
    }

    pub fn group_state(&self, group: &str) -> String {
        format!("{}state", self.group(group))
    }

    pub fn coordinator(&self, group: &str) -> String {
        format!("{}coordinators/{}", self.root, encode_group(group))
    }

    pub fn group_offsets(&self, group: &str) -> String {
        format!("{}offsets/", self.group(group))
    }

    pub fn group_topic_offsets(&self, group: &str, topic: &str) -> String {
        format!("{}offsets/{topic}/", self.group(group))
    }

    pub fn offset(&self, group: &str, topic: &str, partition: u32) -> String {
        format!("{}offsets/{topic}/{partition}", self.group(group))
    }

    /// The group a key under `groups/` belongs to.
    pub fn parse_group(&self, key: &[u8]) -> Option<String> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.root)?
            .strip_prefix("groups/")?;
        decode_group(rest.split('/').next()?)
    }

    /// `(topic, partition)` of a key under `group_offsets(group)`.
    pub fn parse_offset(&self, group: &str, key: &[u8]) -> Option<(String, u32)> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(&self.group_offsets(group))?;
        let (topic, partition) = rest.split_once('/')?;
        Some((topic.to_owned(), partition.parse().ok()?))
    }
}

fn encode_group(group: &str) -> String {
    group.replace('%', "%25").replace('/', "%2F")
}

fn decode_group(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3)? {
            "%25" => out.push('%'),
            "%2F" => out.push('/'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v2", "A_b-C.9", &"x".repeat(249), "..."] {
            assert!(validate_topic_name(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    /// Pins the key layout: other tools and the etcd deployment depend on it.
    #[test]
    fn layout() {
        let keys = Keys::new("/tierlog/".into());
        assert_eq!(keys.topic("t"), "/tierlog/topics/t");
        assert_eq!(keys.counter("topic"), "/tierlog/ids/topic");
        assert_eq!(keys.epoch("t", 3), "/tierlog/partitions/t/3/epoch");
        assert_eq!(keys.leader("t", 3), "/tierlog/partitions/t/3/leader");
        assert_eq!(keys.unable("t", 3, 2), "/tierlog/partitions/t/3/unable/2");
        assert_eq!(keys.node(7), "/tierlog/nodes/7");
        assert_eq!(keys.offset("g", "t", 1), "/tierlog/groups/g/offsets/t/1");
        assert_eq!(keys.group("a/b%"), "/tierlog/groups/a%2Fb%25/");
    }

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("/r/".into());
        assert_eq!(
            keys.parse_partition_key(keys.leader("t.x", 12).as_bytes()),
            Some(("t.x".into(), 12, PartitionKey::Leader))
        );
        assert_eq!(
            keys.parse_partition_key(keys.unable("t", 2, 9).as_bytes()),
            Some(("t".into(), 2, PartitionKey::Unable(9)))
        );
        assert_eq!(
            keys.parse_partition_key(b"/r/partitions/t/1/leader/x"),
            None
        );
        assert_eq!(
            keys.parse_partition_key(b"/r/partitions/t/1/unable/x"),
            None
        );
        assert_eq!(keys.parse_partition_key(b"/r/partitions/t/1/other"), None);
        assert_eq!(keys.parse_partition_key(b"/r/partitions/t/x/epoch"), None);
        for group in ["g", "a/b", "50%", "%2F", "/"] {
            let key = keys.offset(group, "t", 4);
            assert_eq!(keys.parse_group(key.as_bytes()).as_deref(), Some(group));
            assert_eq!(
                keys.parse_offset(group, key.as_bytes()),
                Some(("t".into(), 4))
            );
        }
        assert_eq!(decode_group("bad%zz"), None);
    }
}
