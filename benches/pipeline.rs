//! rabbitmq-backup against the shell pipeline an operator would use, on the
//! same data and the same S3 server (Garage), in alternation:
//!
//! - `backup --live`            vs `tar -c msg_stores | zstd -3 -T0 | aws s3 cp - s3://…`
//! - `backup` (stop-app)        vs `stop_app; <that pipeline>; start_app`   (the pause)
//! - `restore`                  vs `stop_app; aws s3 cp s3://… - | zstd -d | tar -x; start_app`
//! - the same three encrypted (`--encrypt-to`, `--identity`) vs the pipelines
//!   with `age -r` / `age -d -i` inserted, and the cost of encryption to us
//!   (encrypted against plain, side by side)
//!
//! Prints medians of wall time, CPU time and peak memory (summed over the
//! pipeline's processes), throughput and pauses, and ratios; then the same
//! at `--scale` times the data. Run with `bench/run` (see BENCHMARKS.md).

/// The end-to-end tests' harness (nodes, Garage), shared as source.
#[path = "../tests/e2e/harness"]
#[allow(dead_code)]
mod harness {
    pub mod amqp;
    pub mod bucket;
    pub mod fixtures;
    pub mod garage;
    pub mod moto;
    pub mod process;
    pub mod rabbit;
    pub mod tool;
    pub mod versions;
    pub use process::{free_port, set_parent_death_signal};
}

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::BasicProperties;

use harness::amqp::{Msg, publish};
use harness::garage::garage;
use harness::rabbit::{CTL, RabbitNode};
use harness::tool::Tool;

/// What one process (or pipeline) cost.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    peak_kib: u64,
    pause: Option<Duration>,
    /// CPU the S3 server (Garage) spent meanwhile.
    server_cpu: Duration,
}

/// CPU time used so far by a process, from /proc.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_millis(ticks * 1000 / hz)
}

/// Runs `f`, adding the server's CPU time over the run to its cost.
fn with_server(pid: u32, f: impl FnOnce() -> Cost) -> Cost {
    let before = cpu_of(pid);
    let mut cost = f();
    cost.server_cpu = cpu_of(pid).saturating_sub(before);
    cost
}

/// Waits for `pid` with wait4, returning CPU time and peak RSS.
fn reap(child: &Child) -> (Duration, u64, std::process::ExitStatus) {
    let mut status = 0;
    // SAFETY: rusage is plain data we own; the pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(rc > 0, "wait4 failed");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as u64,
        std::process::ExitStatus::from_raw(status),
    )
}

/// Runs a pipeline of commands (stdout → stdin), measuring every process.
#[allow(clippy::zombie_processes)] // every child is reaped by `reap` (wait4)
fn pipeline(stages: Vec<Command>) -> (Cost, Vec<u8>) {
    let started = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    let n = stages.len();
    for (i, mut cmd) in stages.into_iter().enumerate() {
        if let Some(prev) = children.last_mut() {
            cmd.stdin(Stdio::from(prev.stdout.take().unwrap()));
        }
        cmd.stdout(Stdio::piped());
        if i + 1 < n {
            cmd.stderr(Stdio::inherit());
        }
        children.push(cmd.spawn().expect("spawn"));
    }
    let mut out = Vec::new();
    children
        .last_mut()
        .unwrap()
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    let mut cost = Cost::default();
    for child in &children {
        let (cpu, peak, status) = reap(child);
        assert!(status.success(), "a pipeline stage failed: {status}");
        cost.cpu += cpu;
        cost.peak_kib += peak;
    }
    cost.wall = started.elapsed();
    (cost, out)
}

fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd
}

fn aws_bin() -> PathBuf {
    let venv = harness::process::tool_cache().join("awscli-venv/bin/aws");
    if venv.is_file() { venv } else { "aws".into() }
}

/// Application-like JSON, about 2.5x compressible with zstd -3.
fn payload(i: usize, size: usize, rng: &mut u64) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "order",
        "customer",
        "product",
        "price",
        "quantity",
        "warehouse",
        "shipment",
        "invoice",
        "email",
        "template",
        "status",
        "pending",
        "complete",
        "search",
        "reindex",
        "integration",
        "sync",
        "channel",
        "website",
        "locale",
        "currency",
        "discount",
        "address",
        "payment",
    ];
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut out = format!("{{\"id\":{i},\"items\":[").into_bytes();
    while out.len() + 80 < size {
        let r = next();
        let word = WORDS[(r % 24) as usize];
        out.extend_from_slice(
            format!(
                "{{\"{word}\":\"{:016x}{:08x}\",\"n\":{}}},",
                next(),
                r >> 32,
                r % 100_000
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"{}]}");
    out.resize(size, b' ');
    out
}

/// Publishes about `mib` MiB of persistent messages of mixed sizes into
/// four classic queues and one priority queue.
fn load(node: &RabbitNode, mib: usize) -> (usize, f64) {
    let queues = ["orders", "emails", "search", "integration", "prio"];
    let defs = serde_json::json!({
        "queues": queues.iter().map(|q| {
            let args = if *q == "prio" { serde_json::json!({"x-max-priority": 4}) } else { serde_json::json!({}) };
            serde_json::json!({"name": q, "vhost": "/", "durable": true, "auto_delete": false, "arguments": args})
        }).collect::<Vec<_>>()
    });
    node.import_definitions(&defs);
    // Mostly small messages, as an application sends them; by bytes, the
    // large ones dominate.
    let sizes = [
        1_000, 1_500, 2_000, 3_000, 1_000, 8_000, 12_000, 2_500, 40_000, 1_200, 150_000, 6_000,
        500_000,
    ];
    let target = mib << 20;
    let (mut total, mut count, mut rng) = (0usize, 0usize, 0x9e37_79b9_7f4a_7c15u64);
    let mut sample = Vec::new();
    while total < target {
        let mut batch = Vec::new();
        while batch.len() < 200 && total < target {
            let size = sizes[count % sizes.len()];
            let body = payload(count, size, &mut rng);
            if sample.len() < 4 << 20 {
                sample.extend_from_slice(&body);
            }
            let queue = queues[count % queues.len()];
            batch.push(Msg {
                routing_key: queue.into(),
                properties: BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_priority((count % 5) as u8),
                body,
            });
            total += size;
            count += 1;
        }
        publish(node, "/", "", &batch);
    }
    let ratio = sample.len() as f64 / zstd::bulk::compress(&sample, 3).unwrap().len() as f64;
    (count, ratio)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

struct Series {
    name: &'static str,
    ours: Vec<Cost>,
    theirs: Vec<Cost>,
}

impl Series {
    fn new(name: &'static str) -> Self {
        Series {
            name,
            ours: vec![],
            theirs: vec![],
        }
    }

    /// One pair of measurements, each with the S3 server's CPU; who goes
    /// first alternates with `run`, so neither always finds a warm cache.
    fn measure(
        &mut self,
        run: usize,
        server: u32,
        mut ours: impl FnMut() -> Cost,
        mut theirs: impl FnMut() -> Cost,
    ) {
        for ours_first in [run.is_multiple_of(2), !run.is_multiple_of(2)] {
            if ours_first {
                self.ours.push(with_server(server, &mut ours));
            } else {
                self.theirs.push(with_server(server, &mut theirs));
            }
        }
    }

    fn med(costs: &[Cost], f: impl Fn(&Cost) -> f64) -> f64 {
        median(costs.iter().map(f).collect())
    }

    /// One row: what `other` (the same operation, encrypted) costs us
    /// against `self`.
    fn print_cost_of(&self, other: &Series) {
        let wall = |c: &Cost| c.wall.as_secs_f64();
        let cpu = |c: &Cost| c.cpu.as_secs_f64();
        let peak = |c: &Cost| c.peak_kib as f64 / 1024.0;
        let (pw, ew) = (Self::med(&self.ours, wall), Self::med(&other.ours, wall));
        let (pc, ec) = (Self::med(&self.ours, cpu), Self::med(&other.ours, cpu));
        let (pp, ep) = (Self::med(&self.ours, peak), Self::med(&other.ours, peak));
        println!(
            "| {} | {pw:.2} s | {ew:.2} s | {:+.1}% | {pc:.2} s | {ec:.2} s | {:+.1}% | {pp:.0} / {ep:.0} MiB |",
            self.name,
            100.0 * (ew - pw) / pw,
            100.0 * (ec - pc) / pc
        );
    }

    fn print(&self, data_mib: f64) -> (f64, f64, f64, Option<(f64, f64)>) {
        let wall = |c: &Cost| c.wall.as_secs_f64();
        let cpu = |c: &Cost| c.cpu.as_secs_f64();
        let peak = |c: &Cost| c.peak_kib as f64 / 1024.0;
        let (ow, tw) = (Self::med(&self.ours, wall), Self::med(&self.theirs, wall));
        let (oc, tc) = (Self::med(&self.ours, cpu), Self::med(&self.theirs, cpu));
        let (op, tp) = (Self::med(&self.ours, peak), Self::med(&self.theirs, peak));
        let server = |c: &Cost| c.server_cpu.as_secs_f64();
        let (os, ts) = (
            Self::med(&self.ours, server),
            Self::med(&self.theirs, server),
        );
        println!(
            "| {} | {ow:.2} s | {tw:.2} s | **{:.2}x** | {oc:.2} s | {tc:.2} s | {:.2}x | {os:.2} / {ts:.2} s | {op:.0} MiB | {tp:.0} MiB | {:.0} / {:.0} MB/s |",
            self.name,
            tw / ow,
            tc / oc,
            data_mib * 1.048576 / ow,
            data_mib * 1.048576 / tw
        );
        let pauses = self.theirs[0].pause.map(|_| {
            let p = |c: &Cost| c.pause.unwrap_or_default().as_secs_f64();
            (Self::med(&self.ours, p), Self::med(&self.theirs, p))
        });
        (ow, tw, op, pauses)
    }
}

struct Args {
    mib: usize,
    runs: usize,
    scale: usize,
}

fn args() -> Args {
    let mut a = Args {
        mib: 1024,
        runs: 5,
        scale: 4,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = || {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag")
        };
        match argv[i].as_str() {
            "--size-mib" => a.mib = value(),
            "--runs" => a.runs = value(),
            "--scale" => a.scale = value(),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}; use --size-mib N --runs N --scale N"),
        }
        i += 2;
    }
    a
}

/// One data size: load a node, alternate ours and theirs `runs` times.
fn round(mib: usize, runs: usize) -> (f64, f64, Option<(f64, f64)>) {
    let g = garage();
    let bucket = g.bucket();
    let node = RabbitNode::start();
    let started = Instant::now();
    let (messages, ratio) = load(&node, mib);
    let data_dir = node.data_dir();
    let store_mib = dir_size(&data_dir.join("msg_stores")) as f64 / 1048576.0;
    println!(
        "\n### {mib} MiB of messages ({messages} messages, payload zstd -3 ratio {ratio:.2}, msg_stores {store_mib:.0} MiB, loaded in {:.0} s)\n",
        started.elapsed().as_secs_f64()
    );
    let tool = Tool::new().with(node.env()).with(g.env());
    if std::env::var("BENCH_PARK").is_ok() {
        for (k, v) in node.env().into_iter().chain(g.env()) {
            println!("export {k}={v}");
        }
        println!("export BUCKET={bucket} DATA_DIR={}", data_dir.display());
        loop {
            std::thread::park();
        }
    }
    let aws = aws_bin();
    let aws_env = |cmd: &mut Command| {
        cmd.env("AWS_ACCESS_KEY_ID", &g.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &g.secret)
            .env("AWS_DEFAULT_REGION", "garage");
    };
    let endpoint = g.endpoint();
    let ctl = |args: &str| {
        format!(
            "HOME={} {CTL} -n {} {args} > /dev/null",
            node.home().display(),
            node.name
        )
    };
    let repo = format!("s3://{bucket}/ours");
    let keys = tempfile::tempdir().unwrap();
    let (key, recipient) = age_key(keys.path());
    let key = key.display().to_string();
    let pipe_key = |sealed: bool| {
        format!(
            "s3://{bucket}/pipeline/msg_stores.tar.zst{}",
            if sealed { ".age" } else { "" }
        )
    };
    let upload_sealed = |d: &std::path::Path, sealed: bool| {
        let mut stages = vec![
            sh(&format!("tar -C {} -cf - msg_stores", d.display())),
            sh("zstd -q -3 -T0 -c"),
        ];
        if sealed {
            stages.push(sh(&format!("age -r {recipient}")));
        }
        let mut cp = Command::new(&aws);
        cp.args([
            "--endpoint-url",
            &endpoint,
            "s3",
            "cp",
            "-",
            &pipe_key(sealed),
            "--only-show-errors",
        ]);
        aws_env(&mut cp);
        stages.push(cp);
        stages
    };
    let upload = |d: &std::path::Path| upload_sealed(d, false);
    #[allow(clippy::zombie_processes)] // reaped by `reap` (wait4)
    let ours = |args: &[&str]| -> (Cost, serde_json::Value) {
        let started = Instant::now();
        let mut cmd = tool.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let (cpu, peak, status) = reap(&child);
        assert!(status.success(), "rabbitmq-backup {args:?} failed");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let pause = report["pause_ms"].as_u64().map(Duration::from_millis);
        (
            Cost {
                wall: started.elapsed(),
                cpu,
                peak_kib: peak,
                pause,
                server_cpu: Duration::ZERO,
            },
            report,
        )
    };

    let mut live = [
        Series::new("backup --live"),
        Series::new("backup --live, encrypted (age)"),
    ];
    let mut live3 = Series::new("backup --live, both zstd -3");
    let mut stop = [
        Series::new("backup (stop-app)"),
        Series::new("backup (stop-app), encrypted (age)"),
    ];
    let mut restore = [
        Series::new("restore"),
        Series::new("restore, encrypted (age)"),
    ];
    // Our flags for an encrypted run; the pipelines insert `age` instead.
    let encrypt = ["--encrypt-to", recipient.as_str()];
    let decrypt = ["--identity", key.as_str()];
    for run in 0..runs {
        for sealed in [false, true] {
            let i = usize::from(sealed);
            let with = |args: &[&str], flags: &[&str]| -> Vec<String> {
                let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                if sealed {
                    all.extend(flags.iter().map(|a| a.to_string()));
                }
                all
            };
            let run_ours = |args: Vec<String>| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ours(&args)
            };
            live[i].measure(
                run,
                g.pid,
                || {
                    run_ours(with(
                        &["backup", "--live", "--repo", &repo, "--json"],
                        &encrypt,
                    ))
                    .0
                },
                || pipeline(upload_sealed(&data_dir, sealed)).0,
            );
            if !sealed {
                // The same at equal compression level, for comparison.
                live3.measure(
                    run,
                    g.pid,
                    || {
                        ours(&[
                            "backup",
                            "--live",
                            "--compression-level",
                            "3",
                            "--repo",
                            &repo,
                            "--json",
                        ])
                        .0
                    },
                    || pipeline(upload(&data_dir)).0,
                );
            }
            // Restores use this consistent snapshot, as the pipeline's restore
            // uses its stop-app tarball: a live copy makes the node rebuild its
            // indices from every message file.
            let mut last_id = String::new();
            stop[i].measure(
                run,
                g.pid,
                || {
                    let (c, r) = run_ours(with(&["backup", "--repo", &repo, "--json"], &encrypt));
                    last_id = r["id"].as_str().unwrap().to_string();
                    c
                },
                || {
                    let t0 = Instant::now();
                    pipeline(vec![sh(&ctl("stop_app"))]);
                    let (mut c, _) = pipeline(upload_sealed(&data_dir, sealed));
                    pipeline(vec![sh(&ctl("start_app"))]);
                    c.pause = Some(t0.elapsed());
                    c.wall = t0.elapsed();
                    c
                },
            );
            restore[i].measure(
                run,
                g.pid,
                || {
                    run_ours(with(
                        &[
                            "restore",
                            &last_id,
                            "--repo",
                            &repo,
                            "--replace-messages",
                            "--json",
                        ],
                        &decrypt,
                    ))
                    .0
                },
                || {
                    let t0 = Instant::now();
                    pipeline(vec![sh(&ctl("stop_app"))]);
                    pipeline(vec![sh(&format!(
                        "rm -rf {}/msg_stores",
                        data_dir.display()
                    ))]);
                    let mut cp = Command::new(&aws);
                    cp.args([
                        "--endpoint-url",
                        &endpoint,
                        "s3",
                        "cp",
                        &pipe_key(sealed),
                        "-",
                        "--only-show-errors",
                    ]);
                    aws_env(&mut cp);
                    let mut stages = vec![cp];
                    if sealed {
                        stages.push(sh(&format!("age -d -i {key}")));
                    }
                    stages.push(sh("zstd -q -d -c"));
                    stages.push(sh(&format!("tar -C {} -xf -", data_dir.display())));
                    let (mut c, _) = pipeline(stages);
                    pipeline(vec![sh(&ctl("start_app"))]);
                    c.pause = Some(t0.elapsed());
                    c.wall = t0.elapsed();
                    c
                },
            );
        }
        // Keep the bucket small: only the newest snapshot stays.
        let _ = tool.run(&["prune", "--keep-last", "1", "--repo", &repo]);
        eprintln!("run {} of {runs} done", run + 1);
    }
    println!(
        "| operation | ours | pipeline | speed-up | ours CPU | pipeline CPU | CPU ratio | S3 server CPU ours / pipeline | ours peak | pipeline peak | throughput ours / pipeline |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let (_, _, backup_peak, _) = live[0].print(mib as f64);
    live[1].print(mib as f64);
    live3.print(mib as f64);
    let (_, _, _, stop_pause) = stop[0].print(mib as f64);
    stop[1].print(mib as f64);
    let (_, _, restore_peak, restore_pause) = restore[0].print(mib as f64);
    restore[1].print(mib as f64);
    let (op, tp) = stop_pause.unwrap();
    let (orp, trp) = restore_pause.unwrap();
    println!(
        "\npauses (median): stop-app backup ours {op:.2} s vs pipeline {tp:.2} s (**{:.1}x shorter**); restore ours {orp:.2} s vs pipeline {trp:.2} s",
        tp / op
    );
    println!("\nencryption cost, ours (median, encrypted against plain):\n");
    println!(
        "| operation | plain | encrypted | wall | plain CPU | encrypted CPU | CPU | peak plain / encrypted |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for pair in [&live, &stop, &restore] {
        pair[0].print_cost_of(&pair[1]);
    }
    (backup_peak.max(restore_peak), orp, Some((op, tp)))
}

/// An age key pair made by `age-keygen`: (identity file, recipient).
fn age_key(dir: &std::path::Path) -> (PathBuf, String) {
    let key = dir.join("key.txt");
    let made = Command::new("age-keygen").arg("-o").arg(&key).output();
    assert!(
        made.is_ok_and(|o| o.status.success()),
        "age-keygen failed (Debian package age)"
    );
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    (
        key,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

fn main() {
    let a = args();
    println!(
        "# rabbitmq-backup benchmark\n\nmachine: {} CPUs, {}; runs per measurement: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap()
                    .trim()
                    .to_string())
            )
            .unwrap_or_default(),
        a.runs
    );
    let (peak1, pause1, _) = round(a.mib, a.runs);
    if a.scale > 1 {
        let (peak4, pause4, _) = round(a.mib * a.scale, a.runs);
        println!(
            "\nscaling {}x: peak memory {peak1:.0} → {peak4:.0} MiB ({:+.0}%), restore pause {pause1:.2} → {pause4:.2} s ({:+.2} s)",
            a.scale,
            100.0 * (peak4 - peak1) / peak1,
            pause4 - pause1
        );
    }
}
