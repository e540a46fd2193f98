use super::*;
use proptest::prelude::*;

fn arb_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..64))
}

type ArbRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn arb_record() -> impl Strategy<Value = ArbRecord> {
    (
        -1_000_000i64..4_000_000_000_000i64,
        arb_bytes(),
        arb_bytes(),
        prop::collection::vec(("[a-z]{0,8}", arb_bytes()), 0..4),
    )
}

proptest! {
    #[test]
    fn varlong_round_trips(v in any::<i64>()) {
        let mut buf = BytesMut::new();
        put_varlong(&mut buf, v);
        prop_assert_eq!(buf.len(), varlong_len(v));
        let mut r = Reader { buf: &buf, pos: 0 };
        prop_assert_eq!(r.varlong().unwrap(), v);
        prop_assert_eq!(r.pos, buf.len());
    }

    #[test]
    fn batch_round_trips(
        recs in prop::collection::vec(arb_record(), 1..40),
        zstd in any::<bool>(),
        base in 0i64..1_000_000_000_000,
        pid in -1i64..10,
    ) {
        let mut b = BatchBuilder::new(if zstd { Compression::Zstd } else { Compression::None })
            .producer(ProducerInfo { producer_id: pid, producer_epoch: 3, base_sequence: 7 }, pid == 5);
        for (ts, k, v, hs) in &recs {
            let hs: Vec<Header> = hs.iter().map(|(k, v)| Header { key: k.clone(), value: v.clone().map(Bytes::from) }).collect();
            b.push(*ts, k.as_deref(), v.as_deref(), &hs);
        }
        let batch = b.build().unwrap().with_assigned(base, 9);
        let reparsed = RecordBatch::parse(batch.as_bytes().clone()).unwrap();
        let h = reparsed.header();
        prop_assert_eq!(h.base_offset, base);
        prop_assert_eq!(h.partition_leader_epoch, 9);
        prop_assert_eq!(h.record_count as usize, recs.len());
        prop_assert_eq!(h.last_offset(), base + recs.len() as i64 - 1);
        prop_assert_eq!(h.max_timestamp, recs.iter().map(|r| r.0).max().unwrap());
        prop_assert_eq!(h.producer.producer_id, pid);
        prop_assert_eq!(h.is_transactional(), pid == 5);
        let out = reparsed.records().unwrap();
        for (i, (rec, (ts, k, v, hs))) in out.iter().zip(&recs).enumerate() {
            prop_assert_eq!(rec.offset, base + i as i64);
            prop_assert_eq!(rec.timestamp, *ts);
            prop_assert_eq!(rec.key.as_deref(), k.as_deref());
            prop_assert_eq!(rec.value.as_deref(), v.as_deref());
            prop_assert_eq!(rec.headers.len(), hs.len());
            for (h, (hk, hv)) in rec.headers.iter().zip(hs) {
                prop_assert_eq!(&h.key, hk);
                prop_assert_eq!(h.value.as_deref(), hv.as_deref());
            }
        }
    }

    #[test]
    fn any_single_bit_flip_after_the_crc_is_detected(flip in 21usize..200, bit in 0u8..8) {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..5 {
            b.push(1000 + i, Some(b"key"), Some(&[i as u8; 30]), &[]);
        }
        let bytes = b.build().unwrap().into_bytes();
        let flip = flip % bytes.len();
        prop_assume!(flip >= CRC_START);
        let mut m = BytesMut::from(bytes);
        m[flip] ^= 1 << bit;
        prop_assert!(RecordBatch::parse(m.freeze()).is_err());
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(b) = RecordBatch::parse(Bytes::from(data)) {
            let _ = b.records();
        }
    }
}

#[test]
fn rejects_wrong_magic_and_empty() {
    assert!(BatchBuilder::new(Compression::None).build().is_err());
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1, None, Some(b"v"), &[]);
    let mut m = BytesMut::from(b.build().unwrap().into_bytes());
    m[16] = 1;
    let err = RecordBatch::parse(m.freeze()).unwrap_err().to_string();
    assert!(err.contains("magic"), "{err}");
}

/// Pins the wire format: a known batch must encode to exactly these bytes.
#[test]
fn golden_encoding() {
    let mut b = BatchBuilder::new(Compression::None).producer(
        ProducerInfo {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 0,
        },
        false,
    );
    b.push(
        1_700_000_000_000,
        Some(b"k"),
        Some(b"v"),
        &[Header {
            key: "h".into(),
            value: None,
        }],
    );
    let batch = b.build().unwrap().with_assigned(42, 3);
    let hex: String = batch
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Checked field by field against the v2 layout, and decoded by kafka-python in CI.
    assert_eq!(
        hex,
        "000000000000002a0000003d0000000302f0748c0800000000000000000\
         18bcfe568000000018bcfe56800000000000000000700010000000000000001\
         16000000026b027602026801"
    );
}

#[test]
fn validate_rejects_records_that_disagree_with_the_header() {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(100, None, Some(b"a"), &[]);
    b.push(200, None, Some(b"b"), &[]);
    let good = b.build().unwrap();
    good.validate().unwrap();
    // Rewrite the header's max timestamp and fix up the Kafka CRC: structurally valid, but lying.
    let mut m = BytesMut::from(good.into_bytes());
    m[35..43].copy_from_slice(&150i64.to_be_bytes());
    let crc = crc32c::crc32c(&m[CRC_START..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
    let lying = RecordBatch::parse(m.freeze()).unwrap();
    let err = lying.validate().unwrap_err().to_string();
    assert!(err.contains("max timestamp"), "{err}");
}

/// Rewrites a built batch's header fields at `at` with `bytes` and fixes the CRC, as a client
/// that means harm would: the batch passes every check that the CRC covers.
fn forged(batch: &RecordBatch, patches: &[(usize, &[u8])]) -> Bytes {
    let mut b = BytesMut::from(&batch.as_bytes()[..]);
    for (at, bytes) in patches {
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Regression: an 80-byte batch with a valid CRC whose header claims 2^31-1 records made the
/// decoder reserve room for all of them and abort the process. Now a header claiming more than
/// [`MAX_BATCH_RECORDS`] is refused as it is parsed, and a count within it is checked against
/// what the body can hold before it sizes anything, with or without compression.
#[test]
fn a_record_count_the_body_cannot_hold_is_refused_before_any_allocation() {
    for codec in [Compression::None, Compression::Zstd] {
        let mut b = BatchBuilder::new(codec);
        b.push(0, None, Some(b"v"), &[]);
        let batch = b.build().unwrap();
        let claim = |count: i32| {
            forged(
                &batch,
                &[
                    (23, &(count - 1).to_be_bytes()[..]),
                    (57, &count.to_be_bytes()[..]),
                ],
            )
        };
        let bytes = claim(i32::MAX);
        assert!(bytes.len() < 100, "a small request: {} bytes", bytes.len());
        let e = RecordBatch::parse(bytes).unwrap_err();
        assert!(e.to_string().contains("claims 2147483647"), "{e}");
        let parsed =
            RecordBatch::parse(claim(MAX_BATCH_RECORDS)).expect("header and CRC are valid");
        for e in [
            parsed.validate().unwrap_err(),
            parsed.records().unwrap_err(),
        ] {
            assert!(e.to_string().contains("claims 262144 records"), "{e}");
        }
    }
}

/// Deltas that overflow the base offset or timestamp are refused, not wrapped (or a panic).
#[test]
fn deltas_that_overflow_are_refused() {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(i64::MAX - 1, None, Some(b"v"), &[]);
    b.push(i64::MAX, None, Some(b"v"), &[]);
    let batch = b.build().unwrap();
    // Base timestamp i64::MAX - 1 is fine; make the base so large that +1 overflows.
    let bytes = forged(&batch, &[(27, &i64::MAX.to_be_bytes()[..])]);
    let e = RecordBatch::parse(bytes).unwrap().records().unwrap_err();
    assert!(
        e.to_string().contains("overflows the base timestamp"),
        "{e}"
    );
    let e = batch
        .clone()
        .with_assigned(i64::MAX, 0)
        .records()
        .unwrap_err();
    assert!(e.to_string().contains("overflows the base offset"), "{e}");
}

/// A small compressed body that expands past its ratio is refused; one within it decodes.
#[test]
fn a_body_that_expands_past_its_ratio_is_refused() {
    assert_eq!(decompressed_limit(10), EXPANSION_FLOOR);
    assert_eq!(decompressed_limit(1 << 20), MAX_DECOMPRESSED);
    assert_eq!(decompressed_limit(100_000), 100_000 * MAX_EXPANSION);
    // 16 MiB of zeros in one record compress to a few KiB: far over 256 times.
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.push(0, None, Some(&vec![0u8; 16 << 20]), &[]);
    let batch = b.build().unwrap();
    assert!(batch.len() < 16 << 10, "{}", batch.len());
    let e = batch.records().unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    // Within the floor: fine.
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.push(0, None, Some(&vec![0u8; 4 << 20]), &[]);
    assert_eq!(b.build().unwrap().records().unwrap().len(), 1);
}

/// Records read back become batches with their own offsets; a gap is skipped inside a batch
/// (its offset deltas jump, as a compacted log's batches do), and such a batch is refused as a
/// producer's.
#[test]
fn batches_of_keeps_offsets_timestamps_and_gaps() {
    let rec = |offset: i64, ts: i64| Record {
        offset,
        timestamp: ts,
        key: Some(Bytes::from(format!("k{offset}"))),
        value: (offset % 3 != 0).then(|| Bytes::from(format!("v{offset}"))),
        headers: vec![Header {
            key: "h".into(),
            value: Some(Bytes::from_static(b"x")),
        }],
    };
    let records: Vec<Record> = [(10, 5), (11, 3), (12, 9), (20, 1), (21, 2)]
        .into_iter()
        .map(|(o, t)| rec(o, 1_700_000_000_000 + t))
        .collect();
    let batches = batches_of(&records, 7).unwrap();
    assert_eq!(batches.len(), 1);
    let h = batches[0].header();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (10, 7));
    assert_eq!(
        (h.record_count, h.last_offset_delta, h.last_offset()),
        (5, 11, 21)
    );
    let sent = batches[0].as_bytes().clone();
    assert!(
        RecordBatch::parse(sent.clone()).is_err(),
        "not a producer's batch"
    );
    assert_eq!(RecordBatch::parse_sparse(sent).unwrap(), batches[0]);
    let back: Vec<Record> = batches
        .iter()
        .flat_map(|b| {
            b.validate().unwrap();
            b.records().unwrap()
        })
        .collect();
    assert_eq!(back, records);
    assert!(batches_of(&[], 0).unwrap().is_empty());
}

/// Every codec Kafka producers use round-trips, and each decoder stops at the body's
/// expansion limit instead of inflating a bomb.
#[test]
fn every_codec_round_trips_and_bombs_are_refused() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut b = BatchBuilder::new(codec);
        for i in 0..100i64 {
            let v = format!("value-{i}-{}", "y".repeat(i as usize));
            b.push(1_700_000_000_000 + i, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        let batch = b.build().unwrap();
        assert_eq!(batch.header().compression().unwrap(), codec);
        batch.validate().unwrap();
        let records = batch.records().unwrap();
        assert_eq!(records.len(), 100, "{codec:?}");
        assert_eq!(records[7].value.as_deref(), Some(&b"value-7-yyyyyyy"[..]));

        // One record of 100 MiB of zeros: every codec squeezes it far below the limit.
        if codec == Compression::None {
            continue;
        }
        let mut bomb = BatchBuilder::new(codec);
        bomb.push(1, None, Some(&vec![0u8; 100 << 20]), &[]);
        let err = bomb.build().unwrap().records().unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{codec:?}: {err}");
    }
}

/// Java clients frame snappy blocks (xerial); librdkafka sends raw snappy. Both decode.
#[test]
fn xerial_framed_snappy_decodes() {
    let raw = b"hello kafka, hello kafka, hello kafka".repeat(10);
    let block = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let mut framed = XERIAL_MAGIC.to_vec();
    framed.extend_from_slice(&1u32.to_be_bytes());
    framed.extend_from_slice(&1u32.to_be_bytes());
    for _ in 0..2 {
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
    }
    let out = snappy_decompress(&framed).unwrap();
    assert_eq!(out, [raw.clone(), raw].concat());
    framed.truncate(framed.len() - 3);
    assert!(snappy_decompress(&framed).is_err());
}
