//! Runs the real `rabbitmq-backup` binary with a clean environment.

use serde_json::Value;

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
}
