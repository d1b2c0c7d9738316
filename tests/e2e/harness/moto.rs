//! A moto S3 server (from PyPI): unlike Garage it keeps object tags and
//! tag-filtered lifecycle rules, so the tier-tag path is tested for real.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{free_port, set_parent_death_signal};

/// The running server.
pub struct Moto {
    /// Port.
    pub port: u16,
}

static MOTO: OnceLock<Moto> = OnceLock::new();
static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// `$MOTO_SERVER`, or the virtualenv scripts/install-deps makes.
fn moto_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("MOTO_SERVER") {
        return bin.into();
    }
    super::process::tool_cache().join("moto-venv/bin/moto_server")
}

/// The shared server, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // A free port can be taken by another process before moto binds
            // it: then moto exits, and another port is tried.
            for _ in 0..3 {
                let port = free_port();
                let mut child = spawn(port);
                if wait_ready(port, &mut child) {
                    tx.send(Moto { port }).unwrap();
                    let _ = child.wait();
                    return;
                }
            }
            panic!("moto did not start on any of three ports");
        });
        rx.recv().unwrap()
    })
}

fn spawn(port: u16) -> std::process::Child {
    let bin = moto_bin();
    let mut cmd = Command::new(&bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl in the child before exec.
    unsafe {
        cmd.pre_exec(set_parent_death_signal);
    }
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {} (run scripts/install-deps --tests): {e}",
            bin.display()
        )
    })
}

/// True once moto itself answers on `port` (its own API, not just any
/// listener); false if it exited.
fn wait_ready(port: u16, child: &mut std::process::Child) -> bool {
    // reqwest has no TLS provider of its own here: the process-wide one.
    rabbitmq_backup::tls::install_default_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let answered = client
            .get(format!("http://127.0.0.1:{port}/moto-api/data.json"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if answered {
            return true;
        }
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Moto {
    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment for the tool.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL_S3".into(), self.endpoint()),
        ]
    }

    /// A client for inspecting buckets.
    pub fn client(&self) -> aws_sdk_s3::Client {
        super::bucket::s3_client(self.endpoint(), "us-east-1", "testing", "testing")
    }

    /// A new bucket with a client to inspect it.
    pub fn new_bucket(&self) -> super::bucket::Bucket {
        let name = format!(
            "m{}x{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::SeqCst)
        );
        let client = self.client();
        super::amqp::rt()
            .block_on(async { client.create_bucket().bucket(&name).send().await.unwrap() });
        super::bucket::Bucket { client, name }
    }
}
