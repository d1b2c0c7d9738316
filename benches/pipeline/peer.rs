//! The logical peer: `rabbitmq-backup-core` 0.2.0 (crates.io), which backs
//! queues up by consuming their messages over AMQP and requeueing them,
//! and restores by publishing them (confirms on). Driven by the small
//! program in `bench/peer/` with a YAML config, against the same node and
//! the same Garage bucket. It leaves every message `redelivered` (it is
//! not harmless, which is why we read files instead); the benchmark only
//! compares time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::harness::garage::Garage;
use crate::harness::rabbit::RabbitNode;
use crate::measure::{Cost, reap};

pub struct Peer {
    driver: PathBuf,
    dir: tempfile::TempDir,
    source: String,
    storage: String,
    node: String,
    home: PathBuf,
    backups: AtomicUsize,
}

impl Peer {
    pub fn new(driver: &Path, node: &RabbitNode, g: &Garage, bucket: &str) -> Peer {
        let source = format!(
            "  amqp_url: \"amqp://guest:guest@127.0.0.1:{}/%2f\"\n  management_url: \"{}\"\n  management_username: guest\n  management_password: guest\n",
            node.amqp_port,
            node.mgmt_url()
        );
        let storage = format!(
            "storage:\n  backend: s3\n  bucket: \"{bucket}\"\n  region: garage\n  endpoint: \"{}\"\n  access_key: \"{}\"\n  secret_key: \"{}\"\n  prefix: peer\n  path_style: true\n  allow_http: true\n",
            g.endpoint(),
            g.key_id,
            g.secret
        );
        Peer {
            driver: driver.to_path_buf(),
            dir: tempfile::tempdir().unwrap(),
            source,
            storage,
            node: node.name.clone(),
            home: node.home(),
            backups: AtomicUsize::new(0),
        }
    }

    #[allow(clippy::zombie_processes)] // reaped by `reap` (wait4)
    fn run(&self, config: String) -> Cost {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let started = Instant::now();
        let child = Command::new(&self.driver)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the peer driver (bench/run --peer builds it)");
        let (cpu, peak, status) = reap(&child);
        assert!(status.success(), "the peer failed: {status}");
        Cost {
            wall: started.elapsed(),
            cpu,
            peak_kib: peak,
            ..Cost::default()
        }
    }

    /// A backup of every queue of vhost `/` as it is now.
    pub fn backup(&self) -> Cost {
        let n = self.backups.fetch_add(1, Ordering::SeqCst) + 1;
        self.run(format!(
            "mode: backup\nbackup_id: \"bench-{n}\"\nsource:\n{}  queues:\n    vhosts: [\"/\"]\n{}backup:\n  stop_at_current_depth: true\n  include_definitions: true\n",
            self.source, self.storage
        ))
    }

    /// Restores the newest backup. The queues are purged first (outside
    /// the measurement): the peer publishes, so the node ends with the
    /// snapshot's messages as after our restore.
    pub fn restore(&self) -> Cost {
        let n = self.backups.load(Ordering::SeqCst);
        for q in ["orders", "emails", "search", "integration", "prio"] {
            let status = Command::new(crate::harness::rabbit::CTL)
                .args(["-n", &self.node, "purge_queue", q, "-q"])
                .env("HOME", &self.home)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "purge_queue {q}");
        }
        let target = self.source.lines().take(4).collect::<Vec<_>>().join("\n");
        self.run(format!(
            "mode: restore\nbackup_id: \"bench-{n}\"\ntarget:\n{target}\n{}restore:\n  publisher_confirms: true\n  restore_definitions: false\n",
            self.storage
        ))
    }
}
