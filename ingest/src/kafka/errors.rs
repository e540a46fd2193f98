//! The Kafka error codes an answer carries, for the node's metrics: Kafka answers a request
//! with one code per partition, group or resource it names (and some with one for the whole
//! request), so a request is counted once and each code in it once, as Kafka's own
//! `ErrorsPerSec` does.

use kafka_protocol::messages::*;

/// An answer's error codes, `NONE` (0) included; the caller keeps the others.
pub(crate) trait ErrorCodes {
    fn error_codes(&self, out: &mut Vec<i16>);
}

/// `impl ErrorCodes` from a list of paths to codes: `self.error_code`, or `for x in
/// self.list => x.error_code`, nested as deep as the answer is.
macro_rules! codes {
    ($t:ty => |$s:ident, $out:ident| $body:block) => {
        impl ErrorCodes for $t {
            fn error_codes(&self, $out: &mut Vec<i16>) {
                let $s = self;
                $body
            }
        }
    };
}

codes!(ApiVersionsResponse => |r, out| { out.push(r.error_code) });
codes!(MetadataResponse => |r, out| {
    out.push(r.error_code);
    for t in &r.topics {
        out.push(t.error_code);
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(ProduceResponse => |r, out| {
    for t in &r.responses {
        out.extend(t.partition_responses.iter().map(|p| p.error_code));
    }
});
codes!(FetchResponse => |r, out| {
    out.push(r.error_code);
    for t in &r.responses {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(ListOffsetsResponse => |r, out| {
    for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(DeleteRecordsResponse => |r, out| {
    for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(OffsetForLeaderEpochResponse => |r, out| {
    for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(OffsetCommitResponse => |r, out| {
    for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(OffsetFetchResponse => |r, out| {
    out.push(r.error_code);
    for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
    for g in &r.groups {
        out.push(g.error_code);
        for t in &g.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
});
codes!(FindCoordinatorResponse => |r, out| {
    out.push(r.error_code);
    out.extend(r.coordinators.iter().map(|c| c.error_code));
});
codes!(CreateTopicsResponse => |r, out| {
    out.extend(r.topics.iter().map(|t| t.error_code));
});
codes!(DeleteTopicsResponse => |r, out| {
    out.extend(r.responses.iter().map(|t| t.error_code));
});
codes!(InitProducerIdResponse => |r, out| { out.push(r.error_code) });
codes!(DescribeClusterResponse => |r, out| { out.push(r.error_code) });
codes!(ConsumerGroupHeartbeatResponse => |r, out| { out.push(r.error_code) });
codes!(JoinGroupResponse => |r, out| { out.push(r.error_code) });
codes!(SyncGroupResponse => |r, out| { out.push(r.error_code) });
codes!(HeartbeatResponse => |r, out| { out.push(r.error_code) });
codes!(LeaveGroupResponse => |r, out| {
    out.push(r.error_code);
    out.extend(r.members.iter().map(|m| m.error_code));
});
codes!(ListGroupsResponse => |r, out| { out.push(r.error_code) });
codes!(DescribeGroupsResponse => |r, out| {
    out.extend(r.groups.iter().map(|g| g.error_code));
});
codes!(DeleteGroupsResponse => |r, out| {
    out.extend(r.results.iter().map(|g| g.error_code));
});
codes!(OffsetDeleteResponse => |r, out| {
    out.push(r.error_code);
    for t in &r.topics {
        out.extend(t.partitions.iter().map(|p| p.error_code));
    }
});
codes!(ConsumerGroupDescribeResponse => |r, out| {
    out.extend(r.groups.iter().map(|g| g.error_code));
});
codes!(DescribeConfigsResponse => |r, out| {
    out.extend(r.results.iter().map(|x| x.error_code));
});
codes!(AlterConfigsResponse => |r, out| {
    out.extend(r.responses.iter().map(|x| x.error_code));
});
codes!(IncrementalAlterConfigsResponse => |r, out| {
    out.extend(r.responses.iter().map(|x| x.error_code));
});
codes!(CreatePartitionsResponse => |r, out| {
    out.extend(r.results.iter().map(|x| x.error_code));
});

/// Kafka's name of an error code (`NOT_LEADER_OR_FOLLOWER`), or the number when unknown.
pub(crate) fn name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(kafka_protocol::error::ResponseError::Unknown(c)) => c.to_string(),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kafkas() {
        assert_eq!(name(0), "NONE");
        assert_eq!(name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(name(30_000), "30000");
    }

    #[test]
    fn nested_codes_are_all_seen() {
        use kafka_protocol::messages::metadata_response::{
            MetadataResponsePartition, MetadataResponseTopic,
        };
        let r = MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default()
                .with_error_code(3)
                .with_partitions(vec![
                    MetadataResponsePartition::default().with_error_code(6),
                    MetadataResponsePartition::default(),
                ]),
        ]);
        let mut out = Vec::new();
        r.error_codes(&mut out);
        out.retain(|c| *c != 0);
        assert_eq!(out, vec![3, 6]);
    }
}
