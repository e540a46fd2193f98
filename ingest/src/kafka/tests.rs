//! Kafka front end unit tests.

use super::SUPPORTED;

/// Every version advertised is one the codec can decode and encode: advertising more would
/// close the connection of a client that picks it.
#[test]
fn advertised_versions_are_within_the_codecs() {
    for &(key, lo, hi) in SUPPORTED {
        let codec = key.valid_versions();
        assert!(
            lo <= hi && codec.min <= lo && hi <= codec.max,
            "{key:?} advertised {lo}-{hi}, the codec handles {}-{}",
            codec.min,
            codec.max
        );
    }
}
