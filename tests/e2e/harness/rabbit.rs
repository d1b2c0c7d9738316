//! Private RabbitMQ nodes on loopback: own name, ports and directory,
//! started from Debian's package of any version (the host's, or one in a
//! chroot: see `versions.rs`), stopped by process id.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::versions::{Version, in_chroot_script};
use super::{free_port, set_parent_death_signal};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// The host's real rabbitmqctl (Debian's /usr/sbin one switches to the
/// rabbitmq user). A node's own is [`RabbitNode::ctl_program`].
pub const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// A cookie shared by every test node and CLI call.
const COOKIE: &str = "RABBITMQBACKUPTESTCOOKIE";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running node.
pub struct RabbitNode {
    /// Node name (`rbt<pid>x<n>v<version>@localhost`).
    pub name: String,
    /// Its RabbitMQ version.
    pub version: Version,
    /// AMQP port.
    pub amqp_port: u16,
    /// Management API port.
    pub mgmt_port: u16,
    dist_port: u16,
    chroot: Option<PathBuf>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RabbitNode {
    /// Starts a node of the host's version and waits until it has booted.
    pub fn start() -> RabbitNode {
        RabbitNode::start_version(Version::HOST)
    }

    /// Starts a node of `version` and waits until it has booted.
    pub fn start_version(version: Version) -> RabbitNode {
        let mut node = RabbitNode::spawn_version(version);
        node.wait_ready();
        node
    }

    /// Starts a node of `version` without waiting for it. Called on the
    /// thread that owns the node: its VM dies with the thread that spawned
    /// it (the parent-death signal is per thread).
    fn spawn_version(version: Version) -> RabbitNode {
        let chroot = version.chroot();
        if chroot.is_some() {
            ensure_epmd();
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!(
            "rbt{}x{n}v{}@localhost",
            std::process::id(),
            version.short().replace('.', "")
        );
        let dir = tempfile::Builder::new()
            .prefix("rmqb-node-")
            .tempdir()
            .expect("tempdir");
        let mut node = RabbitNode {
            name,
            version,
            chroot,
            amqp_port: free_port(),
            mgmt_port: free_port(),
            dist_port: free_port(),
            dir,
            child: None,
        };
        node.spawn();
        node
    }

    /// The directory holding everything of this node.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// HOME for the node and its CLI (holds the Erlang cookie).
    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("mnesia").join(&self.name)
    }

    /// The tool's work areas beside the data directory (lock files aside),
    /// sorted.
    pub fn work_areas(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.data_dir().parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rabbitmq-backup-") && !n.ends_with(".lock"))
            .collect();
        out.sort();
        out
    }

    /// The management API base URL.
    pub fn mgmt_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.mgmt_port)
    }

    /// The AMQP URL of a vhost (guest credentials).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}", self.amqp_port)
    }

    /// The `rabbitmqctl` for this node: the host's, or for a chroot node a
    /// wrapper script that runs the chroot's own (pass it as `--rabbitmqctl`).
    pub fn ctl_program(&self) -> PathBuf {
        match self.chroot {
            None => PathBuf::from(CTL),
            Some(_) => self.root().join("bin/rabbitmqctl"),
        }
    }

    /// Kills the broker's VM (SIGKILL, as a crash or a power cut would) and
    /// boots it again with the same name, ports and directory: a reboot.
    /// Returns once it has booted.
    pub fn restart(&mut self) {
        self.kill();
        self.boot();
    }

    /// A `rabbitmqctl` that finds this node's cookie by itself (its HOME is
    /// the node's), whatever the caller's HOME.
    pub fn ctl_with_home(&self) -> PathBuf {
        let path = self.root().join("bin/rabbitmqctl-with-home");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nHOME={} exec {} \"$@\"\n",
                self.home().display(),
                self.ctl_program().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    /// Kills the broker's VM by its pid and waits until epmd has forgotten
    /// the node's name (so the name can be registered again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let short = self.name.split('@').next().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let names = Command::new("epmd").arg("-names").output();
            let listed = names.is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(short.as_str()))
            });
            if !listed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "epmd still lists node {} 30 s after it was killed",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn boot(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let root = self.root().to_path_buf();
        for sub in ["home", "mnesia", "log", "bin"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let cookie = root.join("home/.erlang.cookie");
        std::fs::write(&cookie, COOKIE).unwrap();
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .unwrap();
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{}\nmanagement.tcp.port = {}\nmanagement.tcp.ip = 127.0.0.1\n",
                self.amqp_port, self.mgmt_port
            ),
        )
        .unwrap();
        std::fs::write(root.join("enabled_plugins"), "[rabbitmq_management].\n").unwrap();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(root.join("log/stdout.log"))
            .unwrap();
        let mut extra_args = "-noinput".to_string();
        let mut cmd = match &self.chroot {
            None => Command::new(SERVER),
            Some(chroot) => {
                let wrapper = self.ctl_program();
                std::fs::write(
                    &wrapper,
                    format!(
                        "#!/bin/sh\n# RabbitMQ {}'s own rabbitmqctl, in its chroot.\nexec {} {} {} /usr/lib/rabbitmq/bin/rabbitmqctl \"$@\"\n",
                        self.version,
                        in_chroot_script().display(),
                        chroot.display(),
                        root.display()
                    ),
                )
                .unwrap();
                std::fs::set_permissions(
                    &wrapper,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
                // The host's epmd serves every version (ensure_epmd): none
                // is started inside a chroot.
                extra_args.push_str(" -start_epmd false");
                let mut cmd = Command::new(in_chroot_script());
                cmd.arg(chroot).arg(&root).arg(SERVER);
                cmd
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", root.join("home"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", root.join("log"))
            .env("RABBITMQ_CONFIG_FILE", root.join("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                root.join("enabled_plugins"),
            )
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", root.join("plugins-expand"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            // exec the VM directly: the pid we hold is the broker's.
            .env("RABBITMQ_ALLOW_INPUT", "1")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", &extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl in the child before exec; no allocation.
        unsafe {
            cmd.pre_exec(set_parent_death_signal);
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start RabbitMQ {} ({e}): run scripts/install-deps --tests",
                self.version
            )
        }));
    }

    /// Makes this node a member of `seed`'s cluster: `stop_app`, `reset`,
    /// `join_cluster`, `start_app`, as an operator does.
    pub fn join(&mut self, seed: &RabbitNode) {
        self.ctl(&["stop_app"]);
        self.ctl(&["reset"]);
        self.ctl(&["join_cluster", &seed.name]);
        self.ctl(&["start_app"]);
        self.wait_ready();
    }

    /// `n` nodes of the host's version on loopback, each with its own
    /// name, ports and directory, the others joined to the first.
    pub fn cluster(n: usize) -> Vec<RabbitNode> {
        RabbitNode::cluster_of(Version::HOST, n)
    }

    /// `n` nodes of `version` (every one in its own chroot for a chroot
    /// version), booted side by side, the others joined to the first one
    /// by one; returns once every member sees all `n` running.
    pub fn cluster_of(version: Version, n: usize) -> Vec<RabbitNode> {
        // One epmd up first: nodes booting side by side would race to start it.
        ensure_epmd();
        // Booted side by side, each waited for in turn.
        let mut nodes: Vec<RabbitNode> =
            (0..n).map(|_| RabbitNode::spawn_version(version)).collect();
        for node in &mut nodes {
            // Ports are picked free but not held: one taken by another
            // test's server before the node bound it gets a second pick.
            for _ in 0..2 {
                if node.wait_ready_or_exit().is_ok() {
                    break;
                }
                eprintln!(
                    "node {} did not start, with fresh ports again:\n{}",
                    node.name,
                    node.log_tail()
                );
                node.kill();
                (node.amqp_port, node.mgmt_port, node.dist_port) =
                    (free_port(), free_port(), free_port());
                node.spawn();
            }
            node.wait_ready();
        }
        let (seed, rest) = nodes.split_first_mut().unwrap();
        for node in rest {
            node.join(seed);
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        for node in &nodes {
            node.wait_running_members(&names);
        }
        nodes
    }

    /// Waits until this node's management API lists exactly `names` as its
    /// cluster's nodes, every one running.
    pub fn wait_running_members(&self, names: &[String]) {
        let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
        want.sort();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let nodes: Option<Value> = self
                .http()
                .get(format!("{}/api/nodes", self.mgmt_url()))
                .basic_auth("guest", Some("guest"))
                .send()
                .ok()
                .and_then(|r| r.json().ok());
            let mut running: Vec<&str> = nodes
                .as_ref()
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter(|n| n["running"] == true)
                        .filter_map(|n| n["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            running.sort();
            if running == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} sees {running:?} running, not {want:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the RabbitMQ application (the VM stays up): the member is
    /// down for its cluster.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    /// Starts the application again and waits until it serves.
    pub fn start_app(&mut self) {
        self.ctl(&["start_app"]);
        self.wait_ready();
    }

    /// Waits until the management API answers and the AMQP listener takes
    /// connections (the broker has booted).
    pub fn wait_ready(&mut self) {
        if let Err(status) = self.wait_ready_or_exit() {
            panic!(
                "node {} exited ({status}) while starting:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// Waits until the management API answers and the AMQP listener takes
    /// connections, or the VM exits (its exit
    /// status is returned: a port taken meanwhile by another test's server).
    fn wait_ready_or_exit(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(180);
        rabbitmq_backup::tls::install_default_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(status);
            }
            let ok = client
                .get(format!("{}/api/overview", self.mgmt_url()))
                .basic_auth("guest", Some("guest"))
                .send()
                .is_ok_and(|r| r.status().is_success())
                // The API answers before the boot ends; the listeners start last.
                && self.amqp_listening();
            if ok {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not start in time:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the node's AMQP listener takes connections.
    pub fn amqp_listening(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.amqp_port)).is_ok()
    }

    /// The end of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for file in [format!("{}.log", self.name), "stdout.log".into()] {
            if let Ok(text) = std::fs::read_to_string(self.root().join("log").join(file)) {
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
                out.push('\n');
            }
        }
        out
    }

    /// Runs rabbitmqctl against this node; panics on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(self.ctl_program())
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .env("HOME", self.home())
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Exact message counts of a vhost's queues.
    pub fn counts(&self, vhost: &str) -> std::collections::BTreeMap<String, u64> {
        let out = self.ctl(&[
            "list_queues",
            "-q",
            "-p",
            vhost,
            "--formatter",
            "json",
            "name",
            "messages",
        ]);
        let rows: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
        rows.iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["messages"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until `queue` in `vhost` has no consumer: a closed channel's
    /// consumer leaves a quorum queue asynchronously (a Raft command).
    pub fn wait_no_consumers(&self, vhost: &str, queue: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.ctl(&[
                "list_queues",
                "-q",
                "-p",
                vhost,
                "--formatter",
                "json",
                "name",
                "consumers",
            ]);
            let rows: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
            let consumers = rows
                .iter()
                .find(|r| r["name"] == queue)
                .and_then(|r| r["consumers"].as_u64())
                .unwrap_or(0);
            if consumers == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{queue} in {vhost} kept {consumers} consumers"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn http(&self) -> reqwest::blocking::Client {
        rabbitmq_backup::tls::install_default_provider();
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// Imports definitions through the management API.
    pub fn import_definitions(&self, definitions: &Value) {
        let response = self
            .http()
            .post(format!("{}/api/definitions", self.mgmt_url()))
            .basic_auth("guest", Some("guest"))
            .json(definitions)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "import failed: {}",
            response.text().unwrap_or_default()
        );
    }

    /// Exports definitions through the management API.
    pub fn export_definitions(&self) -> Value {
        self.http()
            .get(format!("{}/api/definitions", self.mgmt_url()))
            .basic_auth("guest", Some("guest"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Environment for the tool so that it talks to this node. No AMQP
    /// URL: the tool asks the node for its listener (on a random port).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HOME".into(), self.home().display().to_string()),
            ("RABBITMQ_NODENAME".into(), self.name.clone()),
            ("RABBITMQ_MANAGEMENT_URL".into(), self.mgmt_url()),
            (
                "RABBITMQCTL".into(),
                self.ctl_program().display().to_string(),
            ),
        ]
    }
}

/// Starts the host's epmd once per test process (a no-op when one runs):
/// every node, of every version, registers with it.
fn ensure_epmd() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let status = Command::new("epmd")
            .arg("-daemon")
            .status()
            .expect("run epmd (the host's erlang-base package)");
        assert!(status.success(), "epmd -daemon failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", 4369)).is_err() {
            assert!(Instant::now() < deadline, "epmd does not listen on 4369");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only the process we started, by its id.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- log of node {} ---\n{}", self.name, self.log_tail());
        }
    }
}
