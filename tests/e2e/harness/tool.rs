//! Runs the real `rabbitmq-backup` binary with a clean environment.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The outcome of one run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics unless the exit code is `code`, showing both streams.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.expect_code(0)
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// The binary with an environment built up by the test.
#[derive(Clone, Default)]
pub struct Tool {
    env: Vec<(String, String)>,
}

impl Tool {
    /// No environment but PATH.
    pub fn new() -> Tool {
        Tool::default()
    }

    /// Adds variables (later ones win).
    pub fn with(mut self, env: Vec<(String, String)>) -> Tool {
        self.env.extend(env);
        self
    }

    /// Adds one variable.
    pub fn var(self, key: &str, value: &str) -> Tool {
        self.with(vec![(key.into(), value.into())])
    }

    /// Runs with arguments and waits.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run rabbitmq-backup");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs with arguments in the working directory `dir` and waits.
    pub fn run_in(&self, dir: &std::path::Path, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .current_dir(dir)
            .output()
            .expect("run rabbitmq-backup");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The command, for tests that need to control the process.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rabbitmq-backup"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs with arguments, recording every failpoint passed (`name@n`, in
    /// order): how tests enumerate the instants of a run.
    pub fn record(&self, args: &[&str]) -> (Run, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("points");
        let run = self
            .clone()
            .var("RABBITMQ_BACKUP_FAILPOINT_RECORD", file.to_str().unwrap())
            .run(args);
        let points = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (run, points)
    }

    /// Starts the tool with a `wait` failpoint at `point` (`name` or
    /// `name@n`, the n-th pass; other rules may already be set with
    /// `RABBITMQ_BACKUP_FAILPOINT`) and returns once it is parked there
    /// (within `within`), still running. The directory holds the
    /// failpoint's marker and must live as long as the child.
    pub fn spawn_at(&self, point: &str, args: &[&str], within: Duration) -> (Child, TempDir) {
        let marker = tempfile::tempdir().unwrap();
        let point = if point.contains('@') {
            point.to_string()
        } else {
            format!("{point}@1")
        };
        let rules = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "RABBITMQ_BACKUP_FAILPOINT")
            .map(|(_, v)| format!("{v};"))
            .unwrap_or_default();
        let mut child = self
            .clone()
            .var("RABBITMQ_BACKUP_FAILPOINT", &format!("{rules}{point}=wait"))
            .var(
                "RABBITMQ_BACKUP_FAILPOINT_DIR",
                marker.path().to_str().unwrap(),
            )
            .command(args)
            .stdout(Stdio::null())
            // Kept in the marker's directory: why a run ended early.
            .stderr(std::fs::File::create(marker.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let reached = marker.path().join(format!("{point}.reached"));
        let deadline = Instant::now() + within;
        while !reached.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let stderr =
                    std::fs::read_to_string(marker.path().join("stderr")).unwrap_or_default();
                panic!("the tool ended ({status}) before {point}; its stderr:\n{stderr}");
            }
            assert!(Instant::now() < deadline, "{point} was not reached");
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, marker)
    }

    /// Starts the tool with a `wait` failpoint and SIGKILLs it there.
    pub fn kill_at(&self, point: &str, args: &[&str], within: Duration) {
        let (mut child, _marker) = self.spawn_at(point, args, within);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
