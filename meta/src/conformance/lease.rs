//! Leases: grant, keep-alive, revoke and expiry, and the keys they take with them.

use std::time::Duration;

use bytes::Bytes;

use super::{Backend, LONG_TTL, SuiteOptions, wait_until};
use crate::error::Error;
use crate::kv::LeaseId;

/// Revoking a lease deletes exactly its keys; the lease is gone afterwards.
pub async fn revoke_deletes_attached_keys(kv: Backend, _opts: SuiteOptions) {
    let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
    let ttl = kv.keep_alive(lease).await.expect("keep_alive");
    assert!(ttl > Duration::ZERO, "keep_alive reports the TTL");

    let v = || Bytes::from_static(b"v");
    kv.put(b"l/1", v(), Some(lease)).await.expect("put");
    kv.put(b"l/2", v(), Some(lease)).await.expect("put");
    kv.put(b"l/plain", v(), None).await.expect("put");
    // Re-putting without the lease detaches the key from it.
    kv.put(b"l/moved", v(), Some(lease)).await.expect("put");
    kv.put(b"l/moved", v(), None).await.expect("put");
    let got = kv.get(b"l/1").await.expect("get").expect("leased key");
    assert_eq!(got.lease, Some(lease));

    kv.revoke_lease(lease).await.expect("revoke");
    assert_eq!(kv.get(b"l/1").await.expect("get"), None);
    assert_eq!(kv.get(b"l/2").await.expect("get"), None);
    assert!(kv.get(b"l/plain").await.expect("get").is_some());
    assert!(kv.get(b"l/moved").await.expect("get").is_some());

    let res = kv.revoke_lease(lease).await;
    assert!(matches!(res, Err(Error::LeaseNotFound { .. })), "{res:?}");
    let res = kv.keep_alive(lease).await;
    assert!(matches!(res, Err(Error::LeaseNotFound { .. })), "{res:?}");
    let res = kv.put(b"l/3", v(), Some(lease)).await;
    assert!(matches!(res, Err(Error::LeaseNotFound { .. })), "{res:?}");
    let res = kv.put(b"l/3", v(), Some(LeaseId(0x5eed_0000_0001))).await;
    assert!(
        matches!(res, Err(Error::LeaseNotFound { .. })),
        "unknown lease: {res:?}"
    );
    assert_eq!(kv.get(b"l/3").await.expect("get"), None);
}

/// A lease that is not renewed expires, deleting its keys.
pub async fn expiry_deletes_attached_keys(kv: Backend, opts: SuiteOptions) {
    let lease = kv.grant_lease(opts.lease_ttl).await.expect("grant");
    let v = || Bytes::from_static(b"v");
    kv.put(b"exp/1", v(), Some(lease)).await.expect("put");
    kv.put(b"exp/2", v(), Some(lease)).await.expect("put");
    kv.put(b"exp/plain", v(), None).await.expect("put");
    wait_until(opts.wait_timeout, "leased keys to expire", || async {
        kv.range(b"exp/", None).await.expect("range").kvs.len() == 1
    })
    .await;
    assert!(kv.get(b"exp/plain").await.expect("get").is_some());
    let res = kv.keep_alive(lease).await;
    assert!(matches!(res, Err(Error::LeaseNotFound { .. })), "{res:?}");
    let res = kv.put(b"exp/3", v(), Some(lease)).await;
    assert!(matches!(res, Err(Error::LeaseNotFound { .. })), "{res:?}");
}

/// Renewing a lease more often than its TTL keeps its keys alive past the TTL.
pub async fn keep_alive_extends_lease(kv: Backend, opts: SuiteOptions) {
    let lease = kv.grant_lease(opts.lease_ttl).await.expect("grant");
    kv.put(b"ka/1", Bytes::from_static(b"v"), Some(lease))
        .await
        .expect("put");
    let until = tokio::time::Instant::now() + opts.lease_ttl * 2;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(opts.lease_ttl / 5).await;
        kv.keep_alive(lease).await.expect("lease is still alive");
    }
    assert!(
        kv.get(b"ka/1").await.expect("get").is_some(),
        "a renewed lease keeps its keys"
    );
    kv.revoke_lease(lease).await.expect("revoke");
}
