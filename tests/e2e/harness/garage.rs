//! A single-node Garage S3 server on loopback, one per test process, with a
//! fresh bucket per test.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, set_parent_death_signal};

/// The running server.
pub struct Garage {
    /// Its process id (for CPU accounting in the benchmark).
    #[allow(dead_code)] // read by benches/pipeline.rs, which shares this file
    pub pid: u32,
    /// S3 API port.
    pub s3_port: u16,
    /// Access key id.
    pub key_id: String,
    /// Secret key.
    pub secret: String,
    config: PathBuf,
    bin: PathBuf,
    _dir: PathBuf,
}

static GARAGE: OnceLock<Garage> = OnceLock::new();
static GARAGE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Removes the server's data when the test process exits (the server
/// itself dies with the process).
extern "C" fn remove_data() {
    if let Some(dir) = GARAGE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// The garage binary: `$GARAGE_BIN`, `~/.cargo/bin/garage`, or on PATH.
fn garage_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("GARAGE_BIN") {
        return bin.into();
    }
    let cargo_bin =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/garage");
    if cargo_bin.is_file() {
        return cargo_bin;
    }
    "garage".into()
}

/// The shared server, started on first use.
pub fn garage() -> &'static Garage {
    GARAGE.get_or_init(|| {
        // The server is spawned from a thread that never ends, so that the
        // parent-death signal fires only when the whole test process ends.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (garage, mut child) = start();
            tx.send(garage).unwrap();
            // Holds the server for the life of the process.
            let _ = child.wait();
        });
        rx.recv().unwrap()
    })
}

fn start() -> (Garage, std::process::Child) {
    let dir = tempfile::Builder::new()
        .prefix("rmqb-garage-")
        .tempdir()
        .unwrap()
        .keep();
    let _ = GARAGE_DIR.set(dir.clone());
    // SAFETY: registers a plain function to run at exit.
    unsafe {
        libc::atexit(remove_data);
    }
    let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let config = dir.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    let bin = garage_bin();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(&config)
        .arg("server")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: prctl in the child before exec.
    unsafe {
        cmd.pre_exec(set_parent_death_signal);
    }
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {} (cargo install garage --locked): {e}",
            bin.display()
        )
    });
    let mut garage = Garage {
        pid: child.id(),
        s3_port,
        key_id: String::new(),
        secret: String::new(),
        config,
        bin,
        _dir: dir,
    };
    // Ready when the CLI can talk to it over RPC (`node id` alone answers
    // from the key file, before the server listens).
    let deadline = Instant::now() + Duration::from_secs(60);
    let node_id = loop {
        let out = garage.cli_output(&["node", "id", "-q"]);
        if out.status.success() && garage.cli_output(&["status"]).status.success() {
            break String::from_utf8_lossy(&out.stdout)
                .trim()
                .split('@')
                .next()
                .unwrap()
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "garage did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // `node id` reads the key from disk (Garage 2): the RPC server may not
    // listen yet, so the first RPC command is retried until it answers.
    loop {
        let out = garage.cli_output(&["layout", "assign", "-z", "dc1", "-c", "10G", &node_id]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "garage did not answer over RPC: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    garage.cli(&["layout", "apply", "--version", "1"]);
    let key = garage.cli(&["key", "create", "rabbitmq-backup-tests"]);
    let field = |label: &str| {
        key.lines()
            .find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label} in: {key}"))
    };
    garage.key_id = field("Key ID:");
    garage.secret = field("Secret key:");
    (garage, child)
}

impl Garage {
    fn cli_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run garage")
    }

    /// Runs the garage CLI; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Creates a new bucket the test key may use, and waits until S3 serves it.
    pub fn bucket(&self) -> String {
        let name = format!(
            "b{}x{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        self.cli(&["bucket", "create", &name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            &self.key_id,
        ]);
        name
    }

    /// Environment for the tool (standard AWS variables only).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ENDPOINT_URL_S3".into(), self.endpoint()),
        ]
    }

    /// A new bucket with a client to inspect it.
    pub fn new_bucket(&self) -> super::bucket::Bucket {
        super::bucket::Bucket {
            client: self.client(),
            name: self.bucket(),
        }
    }

    /// An S3 client for inspecting and tampering with buckets in tests.
    pub fn client(&self) -> aws_sdk_s3::Client {
        super::bucket::s3_client(self.endpoint(), "garage", &self.key_id, &self.secret)
    }
}
