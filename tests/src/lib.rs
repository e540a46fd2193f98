//! Shared helpers of tierlog's integration tests: deterministic event data and environment
//! checks. The tests themselves live in `tests/tests/`.

pub mod fuzz;

use bytes::Bytes;
use tier::{BatchBuilder, Compression, Header, Record, RecordBatch};

/// First timestamp of generated data (2026-01-01T00:00:00Z).
pub const BASE_TS: i64 = 1_767_225_600_000;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

/// The `i`-th generated event of `partition`: a JSON-like value, a key (absent for every 17th),
/// headers on some, and timestamps that rise with jitter (not monotonic).
pub fn event(partition: u32, i: i64) -> Record {
    let h = mix(((partition as u64) << 40) ^ i as u64);
    let key = (i % 17 != 0).then(|| Bytes::from(format!("user-{}", h % 1000)));
    let kinds = ["click", "view", "purchase", "signup", "logout"];
    let value = format!(
        r#"{{"user":{{"id":"u{}","country":"{}"}},"event":"{}","seq":{},"amount":{}.{:02},"session":"{:016x}","page":"/products/{}"}}"#,
        h % 1000,
        ["de", "fr", "us", "jp", "br"][(h >> 8) as usize % 5],
        kinds[(h >> 16) as usize % 5],
        i,
        (h >> 20) % 500,
        (h >> 30) % 100,
        h,
        (h >> 40) % 5000,
    );
    let mut headers = Vec::new();
    if i % 5 == 0 {
        headers.push(Header {
            key: "trace".into(),
            value: Some(Bytes::from(format!("{:08x}", h >> 32))),
        });
    }
    if i % 7 == 0 {
        headers.push(Header {
            key: "empty".into(),
            value: None,
        });
        headers.push(Header {
            key: "trace".into(),
            value: Some(Bytes::new()),
        });
    }
    Record {
        offset: i,
        timestamp: BASE_TS + i * 3 + (h % 50) as i64,
        key,
        value: Some(Bytes::from(value)),
        headers,
    }
}

/// A batch of events `from..from+n` of `partition`.
pub fn events_batch(partition: u32, from: i64, n: i64, compression: Compression) -> RecordBatch {
    let mut b = BatchBuilder::new(compression);
    for i in from..from + n {
        let r = event(partition, i);
        b.push(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    b.build().expect("generated batch encodes")
}

/// The first offset in `0..n` whose generated timestamp is ≥ `ts`.
pub fn first_at_or_after(partition: u32, n: i64, ts: i64) -> Option<i64> {
    (0..n).find(|&i| event(partition, i).timestamp >= ts)
}

/// The Python interpreter with pyarrow, duckdb and kafka-python installed, from
/// `TIERLOG_PYTHON`. In CI (`CI` set) its absence fails the test; elsewhere the test is skipped
/// with a printed reason.
pub fn python() -> Option<String> {
    installed("TIERLOG_PYTHON")
}

/// The directory holding playwright-core (`node_modules/`) for the console's browser tests,
/// from `TIERLOG_BROWSER`; required in CI like [`python`].
pub fn browser() -> Option<String> {
    installed("TIERLOG_BROWSER")
}

/// The directory holding kafkajs and its codecs (`node_modules/`, pinned by
/// tests/kafkajs/package-lock.json), from `TIERLOG_KAFKAJS`; required in CI like [`python`].
pub fn kafkajs() -> Option<String> {
    installed("TIERLOG_KAFKAJS")
}

/// What the test command installed, named by `var`: required in CI (`CI` set), else the
/// test is skipped with a printed reason.
fn installed(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: the test command installs it (see README)")
        }
        _ => {
            eprintln!("skipping: {var} is not set (run the README test command)");
            None
        }
    }
}

/// The repository's `tests/` directory: the one the test runner names at run time (cargo and
/// nextest set `CARGO_MANIFEST_DIR`), so a build reused from another checkout still finds this
/// checkout's scripts; the compile-time path otherwise.
pub fn tests_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The S3-compatible server to test against (`TIERLOG_S3_ENDPOINT`, started by
/// `localstack/s3.sh`), as object_store options. Required in CI; skipped with a reason elsewhere.
/// Runs `queries` with DuckDB over a topic's directory of a bucket on disk
/// (tests/python/duckdb_sql.py: the manifest read with no tierlog code), the queries written
/// to `scratch`: its JSON answer (`files`, `results`).
pub fn duckdb_sql(
    python: &str,
    topic_dir: &std::path::Path,
    queries: &[&str],
    scratch: &std::path::Path,
) -> serde_json::Value {
    std::fs::write(
        scratch,
        serde_json::to_vec(queries).expect("queries as JSON"),
    )
    .expect("write the queries");
    let out = std::process::Command::new(python)
        .arg(tests_dir().join("python/duckdb_sql.py"))
        .arg(topic_dir)
        .arg(scratch)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "duckdb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("duckdb_sql.py prints JSON")
}

pub fn s3_options() -> Option<Vec<(String, String)>> {
    let endpoint = match std::env::var("TIERLOG_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "TIERLOG_S3_ENDPOINT is not set: the test command starts the S3 server (see README)"
            )
        }
        _ => {
            eprintln!("skipping: TIERLOG_S3_ENDPOINT is not set (run the README test command)");
            return None;
        }
    };
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    Some(vec![
        kv("aws_endpoint", &endpoint),
        kv("aws_allow_http", "true"),
        kv("aws_access_key_id", "test"),
        kv("aws_secret_access_key", "test"),
        kv("aws_region", "us-east-1"),
    ])
}

/// The etcd cluster to test against (`TIERLOG_ETCD_ENDPOINTS`, comma-separated client URLs,
/// started by `localstack/etcd.sh`). Required in CI; skipped with a reason elsewhere.
pub fn etcd_endpoints() -> Option<Vec<String>> {
    match std::env::var("TIERLOG_ETCD_ENDPOINTS") {
        Ok(e) if !e.trim().is_empty() => Some(
            e.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
        ),
        _ if std::env::var_os("CI").is_some() => {
            panic!("TIERLOG_ETCD_ENDPOINTS is not set: the test command starts etcd (see README)")
        }
        _ => {
            eprintln!("skipping: TIERLOG_ETCD_ENDPOINTS is not set (run the README test command)");
            None
        }
    }
}

/// The `etcd` server binary for tests that run a private etcd (`localstack/etcd.sh install`
/// installs it). Required in CI; skipped with a reason elsewhere.
pub fn etcd_binary() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("no `etcd` on PATH: the test command installs it (see README)")
        }
        None => {
            eprintln!("skipping: no `etcd` on PATH (bash localstack/etcd.sh install)");
            None
        }
    }
}

/// A prefix no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{nanos}-{}", std::process::id())
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports nothing listens on: all are held until every one is picked, so the kernel
/// cannot hand out the same port twice (released one at a time, it can).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("reserve a port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

/// An etcd cluster of this test's own (members on 127.0.0.1, on ports and data directories of
/// their own), so that killing members or compacting disturbs no other test.
pub struct PrivateEtcd {
    binary: std::path::PathBuf,
    dir: tempfile::TempDir,
    /// (client port, peer port) of each member.
    ports: Vec<(u16, u16)>,
    children: Vec<Option<std::process::Child>>,
}

impl PrivateEtcd {
    pub fn start(binary: std::path::PathBuf, members: usize) -> Self {
        let ports = free_ports(2 * members);
        let mut etcd = PrivateEtcd {
            binary,
            dir: tempfile::tempdir().expect("tempdir"),
            ports: ports.chunks(2).map(|p| (p[0], p[1])).collect(),
            children: (0..members).map(|_| None).collect(),
        };
        for member in 0..members {
            etcd.spawn(member);
        }
        etcd
    }

    pub fn endpoint(&self, member: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[member].0)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.ports.len()).map(|m| self.endpoint(m)).collect()
    }

    /// Starts `member` on its data directory (a restart when that already holds data: etcd
    /// then ignores the `--initial-*` flags).
    pub fn spawn(&mut self, member: usize) {
        let client = self.endpoint(member);
        let peer = |m: usize| format!("http://127.0.0.1:{}", self.ports[m].1);
        let cluster: Vec<String> = (0..self.ports.len())
            .map(|m| format!("n{m}={}", peer(m)))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{member}.log")))
            .expect("etcd log");
        let child = std::process::Command::new(&self.binary)
            .arg("--name")
            .arg(format!("n{member}"))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("n{member}")))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer(member)])
            .args(["--initial-advertise-peer-urls", &peer(member)])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.children[member] = Some(child);
    }

    pub fn kill9(&mut self, member: usize) {
        if let Some(mut child) = self.children[member].take() {
            child.kill().expect("kill -9 etcd");
            child.wait().expect("reap etcd");
        }
    }

    /// Sends a signal (`STOP`, `CONT`) to a member's process: a stopped etcd answers nothing,
    /// and when it continues it expires the leases whose TTL ran out meanwhile.
    pub fn signal(&self, member: usize, sig: &str) {
        let child = self.children[member].as_ref().expect("running member");
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} etcd member {member}");
    }

    /// Where the members' logs are.
    pub fn logs(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        for member in 0..self.children.len() {
            self.kill9(member);
        }
        // The data directory goes with this value: a failing test shows the members' logs.
        if std::thread::panicking() {
            for member in 0..self.children.len() {
                let log = self.dir.path().join(format!("n{member}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- etcd member {member}, last lines of its log ---");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// An S3 server (moto) of this test's own, on a free port, so that freezing it disturbs no
/// other test. Stopped (and continued first, if frozen) when dropped.
pub struct PrivateS3 {
    port: u16,
    pid: String,
}

impl PrivateS3 {
    pub fn start() -> Self {
        let port = free_port();
        let started = std::process::Command::new("bash")
            .arg(Self::script())
            .args(["start", &port.to_string()])
            .output()
            .expect("run localstack/s3.sh");
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        let cache = std::env::var("TIERLOG_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/tierlog", std::env::var("HOME").expect("HOME")));
        let pid = std::fs::read_to_string(format!("{cache}/run/moto-{port}.pid"))
            .expect("moto pid file")
            .trim()
            .to_string();
        PrivateS3 { port, pid }
    }

    fn script() -> std::path::PathBuf {
        tests_dir().join("../localstack/s3.sh")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// object_store options for this server (bucket `tierlog` exists).
    pub fn options(&self) -> Vec<(String, String)> {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        vec![
            kv("aws_endpoint", &self.endpoint()),
            kv("aws_allow_http", "true"),
            kv("aws_access_key_id", "test"),
            kv("aws_secret_access_key", "test"),
            kv("aws_region", "us-east-1"),
        ]
    }

    /// Sends a signal (`STOP`, `CONT`) to the server: a stopped server answers nothing.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} moto");
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid])
            .status();
        let _ = std::process::Command::new("bash")
            .arg(Self::script())
            .args(["stop", &self.port.to_string()])
            .status();
    }
}
