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
            let port = free_port();
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
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (run scripts/install-deps --tests): {e}",
                    bin.display()
                )
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            tx.send(Moto { port }).unwrap();
            let _ = child.wait();
        });
        rx.recv().unwrap()
    })
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
