//! Durability for the embedded backend: a redb database with two tables.
//!
//! - `kv`: key bytes → record (see [`encode_record`]).
//! - `meta`: `"revision"` → the store revision after the last commit; `"format"` → [`FORMAT`].
//!
//! Every [`Store::persist`] is one redb write transaction committed with
//! [`Durability::Immediate`], so a plan is on disk before the state that exposes it is updated.
//!
//! Record layout (all integers little-endian), pinned by a golden test:
//!
//! ```text
//! [0]      record format, 1
//! [1..5]   crc32c of (key ++ bytes[5..])
//! [5..13]  create_revision  i64
//! [13..21] mod_revision     i64
//! [21..29] version          i64
//! [29..37] lease id         i64, 0 = none
//! [37..]   value
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use redb::{Database, DatabaseError, Durability, ReadableTable, TableDefinition};

use super::state::{Change, Plan};
use crate::error::{Error, Result};
use crate::kv::{KeyValue, LeaseId};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const FORMAT_KEY: &str = "format";
/// Version of the table layout; bump on incompatible changes.
const FORMAT: i64 = 1;
const RECORD_FORMAT: u8 = 1;
const HEADER: usize = 37;

/// The database file inside the store's directory.
pub(super) const FILE_NAME: &str = "meta.redb";

/// What a store held when opened.
pub(super) struct Loaded {
    pub revision: i64,
    pub kvs: BTreeMap<Vec<u8>, KeyValue>,
}

pub(super) struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and loads everything in it.
    pub fn open(dir: &Path) -> Result<(Store, Loaded)> {
        std::fs::create_dir_all(dir).map_err(Error::storage)?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder().create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => Error::invalid(format!(
                "metadata store {} is already open (another process or handle uses it)",
                path.display()
            )),
            other => Error::storage(other),
        })?;
        let mut store = Store { db, path };
        store.init_tables()?;
        let loaded = store.load()?;
        Ok((store, loaded))
    }

    fn init_tables(&mut self) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(Error::storage)?;
        tx.set_durability(Durability::Immediate);
        {
            tx.open_table(KV).map_err(Error::storage)?;
            let mut meta = tx.open_table(META).map_err(Error::storage)?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(Error::storage)?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert(FORMAT_KEY, FORMAT).map_err(Error::storage)?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(Error::corrupt(
                        format!("{}", self.path.display()),
                        format!("unsupported store format {other} (this build reads {FORMAT})"),
                    ));
                }
            }
        }
        tx.commit().map_err(Error::storage)
    }

    fn load(&self) -> Result<Loaded> {
        let tx = self.db.begin_read().map_err(Error::storage)?;
        let meta = tx.open_table(META).map_err(Error::storage)?;
        let revision = meta
            .get(REVISION)
            .map_err(Error::storage)?
            .map_or(1, |v| v.value());
        let table = tx.open_table(KV).map_err(Error::storage)?;
        let mut kvs = BTreeMap::new();
        for entry in table.iter().map_err(Error::storage)? {
            let (key, value) = entry.map_err(Error::storage)?;
            let kv = decode_record(key.value(), value.value()).map_err(|e| {
                Error::corrupt(
                    format!("record for key {:?}", String::from_utf8_lossy(key.value())),
                    e,
                )
            })?;
            if kv.mod_revision > revision {
                return Err(Error::corrupt(
                    format!("record for key {:?}", String::from_utf8_lossy(&kv.key)),
                    format!(
                        "mod_revision {} is newer than the store revision {revision}",
                        kv.mod_revision
                    ),
                ));
            }
            kvs.insert(kv.key.clone(), kv);
        }
        Ok(Loaded { revision, kvs })
    }

    /// Writes `plan` in one immediately-durable transaction.
    pub fn persist(&mut self, plan: &Plan) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(Error::storage)?;
        tx.set_durability(Durability::Immediate);
        {
            let mut table = tx.open_table(KV).map_err(Error::storage)?;
            for change in &plan.changes {
                match change {
                    Change::Put(kv) => {
                        table
                            .insert(kv.key.as_slice(), encode_record(kv).as_slice())
                            .map_err(Error::storage)?;
                    }
                    Change::Delete { key, .. } => {
                        table.remove(key.as_slice()).map_err(Error::storage)?;
                    }
                }
            }
            let mut meta = tx.open_table(META).map_err(Error::storage)?;
            meta.insert(REVISION, plan.revision)
                .map_err(Error::storage)?;
        }
        tx.commit().map_err(Error::storage)
    }
}

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record is {0} bytes, shorter than its {HEADER}-byte header")]
    TooShort(usize),
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

pub(super) fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + kv.value.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.map_or(0, |l| l.0).to_le_bytes());
    out.extend_from_slice(&kv.value);
    let crc = checksum(&kv.key, &out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(super) fn decode_record(key: &[u8], bytes: &[u8]) -> Result<KeyValue, RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::TooShort(bytes.len()));
    }
    if bytes[0] != RECORD_FORMAT {
        return Err(RecordError::UnknownFormat(bytes[0]));
    }
    let stored = u32::from_le_bytes(bytes[1..5].try_into().expect("4-byte slice"));
    let computed = checksum(key, &bytes[5..]);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let int = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"));
    let lease = int(29);
    Ok(KeyValue {
        key: key.to_vec(),
        value: Bytes::copy_from_slice(&bytes[HEADER..]),
        create_revision: int(5),
        mod_revision: int(13),
        version: int(21),
        lease: (lease != 0).then_some(LeaseId(lease)),
    })
}

fn checksum(key: &[u8], rest: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), rest)
}

/// Test-only access to the raw tables, to simulate corruption.
#[cfg(test)]
pub(super) fn overwrite_raw(dir: &Path, key: &[u8], raw: &[u8]) -> Result<()> {
    let db = Database::create(dir.join(FILE_NAME)).map_err(Error::storage)?;
    let tx = db.begin_write().map_err(Error::storage)?;
    tx.open_table(KV)
        .map_err(Error::storage)?
        .insert(key, raw)
        .map_err(Error::storage)?;
    tx.commit().map_err(Error::storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyValue {
        KeyValue {
            key: b"/tierlog/topics/a".to_vec(),
            value: Bytes::from_static(b"{}"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: Some(LeaseId(7)),
        }
    }

    /// Pins the on-disk record format: changing it must be a deliberate decision.
    #[test]
    fn record_format_golden() {
        let encoded = encode_record(&sample());
        let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01aa429928\
             0200000000000000\
             0300000000000000\
             0200000000000000\
             0700000000000000\
             7b7d"
        );
        assert_eq!(
            decode_record(&sample().key, &encoded).expect("decode"),
            sample()
        );
    }

    #[test]
    fn decode_rejects_damage() {
        let kv = sample();
        let mut encoded = encode_record(&kv);
        assert!(matches!(
            decode_record(&kv.key, &encoded[..10]),
            Err(RecordError::TooShort(10))
        ));
        // The checksum covers the key: a record under another key is detected.
        assert!(matches!(
            decode_record(b"other", &encoded),
            Err(RecordError::Checksum { .. })
        ));
        let last = encoded.len() - 1;
        encoded[last] ^= 1;
        assert!(matches!(
            decode_record(&kv.key, &encoded),
            Err(RecordError::Checksum { .. })
        ));
        encoded[0] = 9;
        assert!(matches!(
            decode_record(&kv.key, &encoded),
            Err(RecordError::UnknownFormat(9))
        ));
    }
}
