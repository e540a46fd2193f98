//! The Kafka listener of a real node, driven by Kafka clients nobody here wrote: librdkafka
//! 2.16 through confluent-kafka (Python) and Debian's kcat (librdkafka 2.0.2), and raw frames
//! that a client must not be able to crash the node with.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Node, cli};

/// Runs a client script (`command`) in `mode` against `bootstrap`, with `state`, and fails with
/// its output unless it printed the line `ok`.
pub(super) fn run_client(
    mut command: Command,
    mode: &str,
    bootstrap: &str,
    state: &Path,
    ok: &str,
) {
    let out = command
        .args([mode, bootstrap])
        .arg(state)
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l.trim() == ok),
        "{command:?} {mode} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs tests/python/kafka_clients.py in `mode` against `bootstrap`.
fn clients(python: &str, mode: &str, bootstrap: &str, state: &Path) {
    let mut c = Command::new(python);
    c.arg(tierlog_tests::tests_dir().join("python/kafka_clients.py"));
    run_client(c, mode, bootstrap, state, "kafka clients ok");
}

/// Runs `client` in mode `first` on a fresh node, stops it, deletes its hot tier and restarts
/// it, then runs `client` in mode `second` (with the same state file): what the second run
/// reads of the first's records comes from the cold tier only.
pub(super) fn across_a_cold_restart(first: &str, second: &str, client: impl Fn(&str, &str, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let node = Node::start(dir.path(), &[]);
    client(first, &node.kafka, &state);
    node.stop();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let node = Node::start(dir.path(), &[]);
    client(second, &node.kafka, &state);
    node.stop();
}

/// librdkafka creates a topic (retention.ms=-1: forever), produces with every codec at
/// acks=all with idempotence, reads everything back from offset 0, commits and reads commits;
/// an oversized record, an unknown topic, an existing topic and an unknown setting get Kafka's
/// errors. After a restart without the hot tier, the same records come back from the cold
/// tier, identical, seek by time works, ListOffsets MAX_TIMESTAMP finds each partition's
/// newest-stamped record (cold, then with hot records stamped earlier), and new records
/// continue the offsets.
#[test]
fn kafka_clients_produce_consume_commit_and_replay_from_the_cold_tier() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    across_a_cold_restart("write", "replay", |m, b, s| clients(&python, m, b, s));
}

/// KIP-320 leader epochs: records carry the epoch of the leader that appended them, also when
/// read back from the cold tier after a restart (a new epoch) without the hot tier, and
/// OffsetForLeaderEpoch says where each epoch ends, refuses a stale current epoch and leaves
/// a future one undefined.
#[test]
fn kafka_leader_epochs_survive_a_restart_and_the_cold_tier() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    across_a_cold_restart("epochs-first", "epochs-second", |m, b, s| {
        clients(&python, m, b, s)
    });
}

/// DeleteRecords (librdkafka's admin client) moves partitions' log starts, to an offset
/// inside a committed segment and to the high watermark; never back, never past the end.
/// Every reader starts there: Kafka consumers and ListOffsets, tierlog's SQL, and DuckDB
/// reading the bucket through the manifest alone.
#[test]
fn kafka_delete_records_moves_the_log_start_for_every_reader() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let node = Node::start(dir.path(), &[]);
    clients(&python, "delete-records", &node.kafka, &state);
    let query = r#"SELECT "partition", COUNT(*), MIN("offset"), MAX("offset") FROM delrec GROUP BY "partition" ORDER BY "partition""#;
    let (ok, out, err) = cli(&node.addr, &["sql", query, "--format", "csv"], None);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(rows[1..], ["0,63,37,99", "2,100,0,99"], "{out}");
    // DuckDB over the bucket, with the manifest's log start and no tierlog code.
    let topics = dir.path().join("objects");
    let topic_dir = find_dir(&topics, "delrec.").expect("the topic's directory in the bucket");
    let duck = r#"SELECT partition, COUNT(*), MIN("offset"), MAX("offset") FROM events GROUP BY partition ORDER BY partition"#;
    let theirs = tierlog_tests::duckdb_sql(
        &python,
        &topic_dir,
        &[duck],
        &dir.path().join("queries.json"),
    );
    assert_eq!(
        theirs["results"][0],
        serde_json::json!([[0, 63, 37, 99], [2, 100, 0, 99]]),
        "{theirs}"
    );
    node.stop();
}

/// The first directory under `root` whose name starts with `prefix`.
fn find_dir(root: &Path, prefix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(root).ok()? {
        let path = entry.ok()?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name()?.to_string_lossy().to_string();
        if name.starts_with(prefix) {
            return Some(path);
        }
        if let Some(found) = find_dir(&path, prefix) {
            return Some(found);
        }
    }
    None
}

/// kcat, `apt-get install kcat`: the test command installs it.
pub(super) fn kcat() -> Option<String> {
    let found = Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    match found {
        true => Some("kcat".into()),
        false if std::env::var_os("CI").is_some() => {
            panic!("kcat is missing: the test command installs it (localstack/install.sh kcat)")
        }
        false => {
            eprintln!("skipping: kcat is not installed");
            None
        }
    }
}

/// Produces `lines` ("key:value" each) to `topic` with kcat and `args` (partition, codec,
/// headers, settings); fails unless kcat says every record was delivered.
pub(super) fn kcat_produce(kcat: &str, bootstrap: &str, topic: &str, args: &[&str], lines: &str) {
    let mut p = Command::new(kcat)
        .args(["-b", bootstrap, "-P", "-t", topic, "-K:"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(p.wait().unwrap().success(), "kcat produce {args:?} failed");
}

/// Reads `topic` with kcat up to its end, with `args` (format, partition, start): what kcat
/// printed.
pub(super) fn kcat_read(kcat: &str, bootstrap: &str, topic: &str, args: &[&str]) -> String {
    let out = Command::new(kcat)
        .args(["-b", bootstrap, "-C", "-t", topic, "-e", "-q"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kcat read {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's kcat (librdkafka 2.0.2, which mis-reads tagged fields in ApiVersions v3) lists
/// the cluster, produces gzip-compressed keyed records and consumes them back, then reads them
/// as a member of a classic group that commits and resumes; after a restart without the hot
/// tier it reads the same records from the cold tier and seeks there by time.
#[test]
fn kcat_on_an_old_librdkafka_lists_produces_and_consumes() {
    let Some(kcat) = kcat() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let (ok, _, err) = cli(
        &node.addr,
        &["topic", "create", "clicks", "--partitions", "2"],
        None,
    );
    assert!(ok, "{err}");
    let list = Command::new(&kcat)
        .args(["-b", &node.kafka, "-L", "-t", "clicks"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && text.contains("topic \"clicks\" with 2 partitions"),
        "{text}{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let input: String = (0..500)
        .map(|i| format!("user-{}:click-{i}\n", i % 7))
        .collect();
    kcat_produce(
        &kcat,
        &node.kafka,
        "clicks",
        &["-z", "gzip", "-X", "acks=all"],
        &input,
    );
    let text = kcat_read(&kcat, &node.kafka, "clicks", &["-f", "%p %o %k:%s\n"]);
    let mut got: Vec<(u32, i64, String)> = text
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            let p = f.next().unwrap().parse().unwrap();
            let o = f.next().unwrap().parse().unwrap();
            (p, o, f.next().unwrap().to_string())
        })
        .collect();
    assert_eq!(got.len(), 500, "{text}");
    got.sort();
    for p in 0..2 {
        let mine: Vec<_> = got.iter().filter(|r| r.0 == p).collect();
        let offsets: Vec<i64> = mine.iter().map(|r| r.1).collect();
        assert_eq!(offsets, (0..mine.len() as i64).collect::<Vec<_>>(), "dense");
        // Within a partition, records keep the order they were produced in.
        let order: Vec<usize> = mine
            .iter()
            .map(|r| r.2.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "order kept: {order:?}"
        );
        // Same key, same partition.
        for r in &mine {
            let key = r.2.split(':').next().unwrap();
            assert!(
                got.iter()
                    .all(|o| !o.2.starts_with(&format!("{key}:")) || o.0 == p)
            );
        }
    }
    // A balanced consumer (the classic group protocol, as librdkafka 2.0.2 speaks it) reads
    // everything and commits on exit; the group's next member starts after it.
    let group = |what: &str| {
        let out = Command::new(&kcat)
            .args([
                "-b",
                &node.kafka,
                "-G",
                "kcat-readers",
                "clicks",
                "-e",
                "-q",
            ])
            .args(["-X", "auto.offset.reset=earliest", "-f", "%p %o\n"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(group("first member"), 500);
    // The group's commits, as tierlog's own CLI shows them: both partitions at their end.
    let (ok, out, err) = cli(
        &node.addr,
        &["groups", "describe", "kcat-readers", "--json"],
        None,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lags: Vec<i64> = v["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lag"].as_i64().unwrap())
        .collect();
    assert_eq!(lags, vec![0, 0], "{out}");
    let more: String = (500..510).map(|i| format!("user-1:click-{i}\n")).collect();
    kcat_produce(&kcat, &node.kafka, "clicks", &[], &more);
    assert_eq!(
        group("the next member"),
        10,
        "it resumes where the first committed"
    );
    // After a restart without the hot tier, kcat reads the same records from the cold tier,
    // and seeks by time there.
    node.stop();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let node = Node::start(dir.path(), &[]);
    let read = |args: &[&str]| kcat_read(&kcat, &node.kafka, "clicks", args);
    let text = read(&["-f", "%p %o %T %k:%s\n"]);
    let mut cold: Vec<(u32, i64, i64, String)> = text
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let p = f.next().unwrap().parse().unwrap();
            let o = f.next().unwrap().parse().unwrap();
            let ts = f.next().unwrap().parse().unwrap();
            (p, o, ts, f.next().unwrap().to_string())
        })
        .collect();
    cold.sort();
    assert_eq!(cold.len(), 510, "{text}");
    let first: Vec<_> = cold
        .iter()
        .filter(|r| r.3.rsplit('-').next().unwrap().parse::<usize>().unwrap() < 500)
        .map(|r| (r.0, r.1, r.3.clone()))
        .collect();
    assert!(first == got, "the cold tier holds what was consumed hot");
    let p0: Vec<_> = cold.iter().filter(|r| r.0 == 0).collect();
    let pick = p0[p0.len() / 2];
    let want = p0.iter().find(|r| r.2 >= pick.2).unwrap().1;
    let from = read(&["-p", "0", "-o", &format!("s@{}", pick.2), "-f", "%o\n"]);
    assert_eq!(
        from.lines().next().and_then(|l| l.parse::<i64>().ok()),
        Some(want),
        "seek to {} ms",
        pick.2
    );
    node.stop();
}

/// A kcat balanced consumer (`-G`, the classic group protocol) printing "partition offset
/// value" lines into `seen` under its name.
struct KcatMember {
    child: std::process::Child,
    reader: std::thread::JoinHandle<()>,
}

impl KcatMember {
    fn start(
        kcat: &str,
        bootstrap: &str,
        name: &str,
        seen: &std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    ) -> KcatMember {
        use std::io::BufRead;
        let mut child = Command::new(kcat)
            .args([
                "-b",
                bootstrap,
                "-G",
                "kcat-three",
                "kcat-group",
                "-q",
                "-u",
            ])
            .args(["-X", "auto.offset.reset=earliest", "-f", "%p %o %s\n"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (seen, name) = (seen.clone(), name.to_string());
        let reader = std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                seen.lock().unwrap().push((name.clone(), line));
            }
        });
        KcatMember { child, reader }
    }

    /// SIGTERM: kcat closes its consumer (a final commit, LeaveGroup) and exits.
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        assert!(self.child.wait().unwrap().success(), "kcat member exit");
        self.reader.join().unwrap();
    }
}

/// kcat produces with every codec (none, gzip, snappy, lz4, zstd), keyed, with headers, from
/// an idempotent acks=all producer, and reads every record back with its key and headers.
/// Then three kcat members of one classic group share a topic of six partitions: one leaves
/// (SIGTERM: it commits and leaves) and another joins while records keep coming; every record
/// is read once by the group, and each member reads some.
#[test]
fn kcat_produces_every_codec_and_shares_a_group_of_three() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let Some(kcat) = kcat() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = super::groups::node(dir.path());
    for (topic, n) in [("kcat-codecs", "2"), ("kcat-group", "6")] {
        let (ok, _, err) = cli(
            &node.addr,
            &["topic", "create", topic, "--partitions", n],
            None,
        );
        assert!(ok, "{err}");
    }
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for (n, codec) in codecs.iter().enumerate() {
        let lines: String = (n * 100..n * 100 + 100)
            .map(|i| format!("user-{}:{codec}-{i}\n", i % 7))
            .collect();
        let header = format!("codec={codec}");
        kcat_produce(
            &kcat,
            &node.kafka,
            "kcat-codecs",
            &[
                "-z", codec, "-H", &header, "-H", "app=kcat", "-X", "acks=all",
            ],
            &lines,
        );
    }
    let text = kcat_read(&kcat, &node.kafka, "kcat-codecs", &["-f", "%k|%h|%s\n"]);
    let mut got: Vec<String> = text.lines().map(str::to_string).collect();
    got.sort();
    let mut want: Vec<String> = codecs
        .iter()
        .enumerate()
        .flat_map(|(n, codec)| {
            (n * 100..n * 100 + 100)
                .map(move |i| format!("user-{}|codec={codec},app=kcat|{codec}-{i}", i % 7))
        })
        .collect();
    want.sort();
    assert_eq!(
        got, want,
        "every record with its key and headers, whatever its codec"
    );

    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let read = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} read",
                seen.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let stable = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ok, out, err) = cli(
                &node.addr,
                &["groups", "describe", "kcat-three", "--json"],
                None,
            );
            // Unknown until the first member's join is stored.
            assert!(ok || err.contains("unknown group"), "{err}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if v["state"] == "Stable" && v["members"].as_array().map(Vec::len) == Some(3) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never stable with 3 members: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let batch = |from: usize| -> String {
        (from..from + 300)
            .map(|i| format!("k{}:{i}\n", i % 30))
            .collect()
    };
    let mut members: Vec<KcatMember> = ["a", "b", "c"]
        .iter()
        .map(|n| KcatMember::start(&kcat, &node.kafka, n, &seen))
        .collect();
    stable("three members");
    kcat_produce(
        &kcat,
        &node.kafka,
        "kcat-group",
        &["-X", "enable.idempotence=true"],
        &batch(0),
    );
    read(300, "three members");
    members.remove(0).stop();
    members.push(KcatMember::start(&kcat, &node.kafka, "d", &seen));
    stable("after one left and one joined");
    kcat_produce(
        &kcat,
        &node.kafka,
        "kcat-group",
        &["-X", "enable.idempotence=true"],
        &batch(300),
    );
    read(600, "after the hand-over");
    for m in members {
        m.stop();
    }
    let seen = seen.lock().unwrap().clone();
    let mut values: Vec<usize> = seen
        .iter()
        .map(|(_, l)| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (0..600).collect::<Vec<_>>(),
        "every record read once"
    );
    for name in ["a", "b", "c", "d"] {
        assert!(
            seen.iter().any(|(n, _)| n == name),
            "member {name} read nothing"
        );
    }
    node.stop();
}

/// Sends one frame and reads one answer (`None`: the node closed the connection).
fn exchange(addr: &str, frame: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(frame).unwrap();
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// A request frame: size, api key, version, correlation id, client id, then `body`.
fn frame(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&7i32.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    f.extend_from_slice(body);
    let mut out = (f.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

/// Frames a client could send to take a node down get a clear answer or a closed connection,
/// and the node serves on: a size of 2 GiB, an unknown API, a version not served, and a
/// Metadata request of a few bytes whose topic array claims 2^31 - 1 entries (which the
/// Kafka codec, unpatched, would allocate hundreds of GiB for and abort on).
#[test]
fn malformed_kafka_frames_close_the_connection_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let k = node.kafka.clone();
    assert_eq!(
        exchange(&k, &0x7fff_fff0u32.to_be_bytes()),
        None,
        "huge size"
    );
    assert_eq!(exchange(&k, &frame(999, 0, &[])), None, "unknown API key");
    assert_eq!(exchange(&k, &frame(3, 99, &[])), None, "Metadata v99");
    // Metadata v4: topics array of i32::MAX entries, then nothing.
    let mut bomb = i32::MAX.to_be_bytes().to_vec();
    bomb.push(1);
    assert_eq!(exchange(&k, &frame(3, 4, &bomb)), None, "array bomb");
    // Flexible Fetch v12 with a compact topics array claiming 2^32 - 2 entries.
    let mut fetch = Vec::new();
    fetch.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    fetch.extend_from_slice(&500i32.to_be_bytes()); // max wait
    fetch.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    fetch.push(0); // isolation level
    fetch.extend_from_slice(&0i32.to_be_bytes()); // session id
    fetch.extend_from_slice(&(-1i32).to_be_bytes()); // session epoch
    fetch.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // topics: varint u32::MAX
    let mut flexible = frame(1, 12, &[]);
    flexible.push(0); // request header v2: no tagged fields
    flexible.extend_from_slice(&fetch);
    let len = (flexible.len() - 4) as u32;
    flexible[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(exchange(&k, &flexible), None, "compact array bomb");
    // ApiVersions of a version not served: UNSUPPORTED_VERSION (35) and the versions served.
    let answer = exchange(&k, &frame(18, 99, &[])).expect("ApiVersions answers any version");
    assert_eq!(&answer[..4], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(&answer[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    // Still serving, on both listeners.
    let answer = exchange(&k, &frame(18, 0, &[])).expect("ApiVersions v0");
    assert_eq!(&answer[4..6], &0i16.to_be_bytes());
    let (ok, _, err) = cli(&node.addr, &["topic", "list"], None);
    assert!(ok, "{err}");
    node.stop();
}

/// Three librdkafka consumers with `group.protocol=consumer` (KIP-848) share a topic through
/// the core's coordinator (its state in etcd when the suite has one): a split of the
/// partitions, every record read once with each member committing what it was handed; one
/// leaves and another joins, the three split the partitions again, nothing is read twice, and
/// the group's commits are the partitions' ends.
#[test]
fn kafka_consumers_share_a_topic_with_the_new_group_protocol() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = super::groups::node(dir.path());
    clients(&python, "groups", &node.kafka, Path::new("-"));
    node.stop();
}

/// Three librdkafka consumers with the classic protocol (JoinGroup/SyncGroup, the client's
/// leader computing the assignment) share a topic through the same coordinator, with the eager
/// range assignor and with cooperative-sticky: a split, every record read once, one member
/// leaving and another joining. Admin clients list and describe the group with each member's assignment, cannot
/// delete it while it has members, and list, alter and delete its offsets once it is empty.
#[test]
fn kafka_consumers_share_a_topic_with_the_classic_group_protocol() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = super::groups::node(dir.path());
    clients(&python, "classic", &node.kafka, Path::new("-"));
    node.stop();
}

/// Kafka admin clients describe and change a topic's settings (both alter APIs, validate
/// nothing but what tierlog acts on), and the topic's own record limit applies to producers at
/// once; partitions are added, led, produced to and read, never removed. A transactional
/// producer is refused at once with a fatal error that says transactions are not supported.
#[test]
fn kafka_admin_clients_describe_and_change_topic_settings_and_add_partitions() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    clients(&python, "configs", &node.kafka, Path::new("-"));
    node.stop();
}
