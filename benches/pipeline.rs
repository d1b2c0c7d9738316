//! rabbitmq-backup against what an operator would otherwise run, on the
//! same data and the same S3 server (Garage), in alternation:
//!
//! - `backup --live`            vs `tar -c msg_stores | zstd -3 -T0 | aws s3 cp - s3://…`
//! - `backup` (stop-app)        vs `stop_app; <that pipeline>; start_app`   (the pause)
//! - `restore`                  vs `stop_app; aws s3 cp s3://… - | zstd -d | tar -x; start_app`
//! - with `--peer PATH` (small sizes): backup and restore against the
//!   logical peer `rabbitmq-backup-core` (see `bench/peer/`)
//! - with `--encrypted`: the first three encrypted (`--encrypt-to`,
//!   `--identity`) vs the pipelines with `age -r` / `age -d -i` inserted,
//!   and the cost of encryption to us (encrypted against plain)
//!
//! at several sizes (200 small messages, 3600 messages ≈ 30 MB, 200 MiB,
//! 1 GiB), with our fixed costs broken down (before the first store byte
//! is read, the pause, after the last chunk is stored), then RabbitMQ's own
//! stop and start per version (the pause's floor), then the targets. Prints
//! medians of alternating runs. Run with `bench/run` (see BENCHMARKS.md).

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

#[path = "pipeline/data.rs"]
mod data;
#[path = "pipeline/floor.rs"]
mod floor;
#[path = "pipeline/measure.rs"]
mod measure;
#[path = "pipeline/peer.rs"]
mod peer;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use data::{Size, dir_size, load};
use harness::garage::garage;
use harness::rabbit::{CTL, RabbitNode};
use harness::tool::Tool;
use measure::{Cost, Medians, Series, pipeline, reap, sh};

fn aws_bin() -> PathBuf {
    let venv = harness::process::tool_cache().join("awscli-venv/bin/aws");
    if venv.is_file() { venv } else { "aws".into() }
}

struct Args {
    sizes: Vec<Size>,
    runs: usize,
    floor: bool,
    peer: Option<PathBuf>,
    encrypted: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: ["200small", "3600medium", "200mib", "1gib"]
            .iter()
            .map(|s| Size::parse(s))
            .collect(),
        runs: 5,
        floor: true,
        peer: std::env::var_os("BENCH_PEER").map(PathBuf::from),
        encrypted: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = || argv.get(i + 1).cloned().expect("a value after the flag");
        match argv[i].as_str() {
            "--sizes" => a.sizes = value().split(',').map(Size::parse).collect(),
            "--runs" => a.runs = value().parse().expect("a number of runs"),
            "--no-floor" => {
                a.floor = false;
                i += 1;
                continue;
            }
            "--encrypted" => {
                a.encrypted = true;
                i += 1;
                continue;
            }
            "--peer" => a.peer = Some(value().into()),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!(
                "unknown argument {other}; use --sizes 200small,3600medium,200mib,1gib --runs N [--no-floor] [--peer PATH] [--encrypted]"
            ),
        }
        i += 2;
    }
    a
}

/// What a round found, for the targets.
#[derive(Debug, Default)]
struct Found {
    live: Medians,
    stop: Medians,
    restore: Medians,
    stored_ours: Option<u64>,
    stored_pipeline: u64,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One data size: load a node, alternate ours and the references `runs` times.
fn round(size: Size, runs: usize, peer: Option<&std::path::Path>, encrypted: bool) -> Found {
    let g = garage();
    let bucket = g.bucket();
    let node = RabbitNode::start();
    let started = Instant::now();
    let (messages, ratio) = load(&node, size);
    let data_dir = node.data_dir();
    let store_bytes = dir_size(&data_dir.join("msg_stores"));
    let data_mb = store_bytes as f64 / 1e6;
    println!(
        "\n### {} ({messages} messages, payload zstd -3 ratio {ratio:.2}, msg_stores {:.1} MB, loaded in {:.0} s; load average before: {})\n",
        size.label(),
        data_mb,
        started.elapsed().as_secs_f64(),
        load_average()
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
    let (key, recipient) = age_key(keys.path(), encrypted);
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
        let ms = |v: &serde_json::Value| v.as_u64().map(Duration::from_millis);
        (
            Cost {
                wall: started.elapsed(),
                cpu,
                peak_kib: peak,
                pause: ms(&report["pause_ms"]),
                server_cpu: Duration::ZERO,
                first_read: ms(&report["phases"]["first_read_ms"]),
                last_upload: ms(&report["phases"]["last_upload_ms"]),
                stored: report["stored_bytes"].as_u64(),
            },
            report,
        )
    };
    let pipeline_stop_upload = |sealed: bool| {
        let t0 = Instant::now();
        pipeline(vec![sh(&ctl("stop_app"))]);
        let (mut c, _) = pipeline(upload_sealed(&data_dir, sealed));
        pipeline(vec![sh(&ctl("start_app"))]);
        c.pause = Some(t0.elapsed());
        c.wall = t0.elapsed();
        c
    };
    let pipeline_restore = |sealed: bool| {
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
            stages.push(sh(&format!("age -d -i {}", key.display())));
        }
        stages.push(sh("zstd -q -d -c"));
        stages.push(sh(&format!("tar -C {} -xf -", data_dir.display())));
        let (mut c, _) = pipeline(stages);
        pipeline(vec![sh(&ctl("start_app"))]);
        c.pause = Some(t0.elapsed());
        c.wall = t0.elapsed();
        c
    };

    const PIPE: &str = "tar | zstd -3 -T0 | aws s3 cp";
    let mut live = Series::new("backup --live", PIPE);
    let mut live3 = Series::new("backup --live, both zstd -3", PIPE);
    let mut stop = Series::new("backup (stop-app)", "stop_app; tar | zstd | aws; start_app");
    let mut restore = Series::new("restore", "stop_app; aws | zstd -d | tar -x; start_app");
    let mut sealed_live = Series::new("backup --live, encrypted (age)", "tar | zstd | age | aws");
    let mut sealed_stop = Series::new(
        "backup (stop-app), encrypted (age)",
        "stop_app; tar | zstd | age | aws; start_app",
    );
    let mut sealed_restore = Series::new(
        "restore, encrypted (age)",
        "stop_app; aws | age -d | zstd -d | tar -x; start_app",
    );
    let mut peer_backup = Series::new("backup --live", "logical peer backup");
    let mut peer_restore = Series::new("restore", "logical peer restore");
    let peer = peer.map(|p| peer::Peer::new(p, &node, g, &bucket));
    let mut last_id = String::new();
    for run in 0..runs {
        live.measure(
            run,
            g.pid,
            || ours(&["backup", "--live", "--repo", &repo, "--json"]).0,
            || pipeline(upload(&data_dir)).0,
        );
        // The same at equal compression level, for comparison.
        let level3 = [
            "backup",
            "--live",
            "--compression-level",
            "3",
            "--repo",
            &repo,
            "--json",
        ];
        live3.measure(
            run,
            g.pid,
            || ours(&level3).0,
            || pipeline(upload(&data_dir)).0,
        );
        // Restores use this consistent snapshot, as the pipeline's restore
        // uses its stop-app tarball: a live copy makes the node rebuild its
        // indices from every message file.
        stop.measure(
            run,
            g.pid,
            || {
                let (c, r) = ours(&["backup", "--repo", &repo, "--json"]);
                last_id = r["id"].as_str().unwrap().to_string();
                c
            },
            || pipeline_stop_upload(false),
        );
        let restore_args = [
            "restore",
            &last_id,
            "--repo",
            &repo,
            "--replace-messages",
            "--json",
        ];
        restore.measure(
            run,
            g.pid,
            || ours(&restore_args).0,
            || pipeline_restore(false),
        );
        if encrypted {
            let sealed = |args: &[&str], extra: [&str; 2]| -> Vec<String> {
                args.iter().chain(&extra).map(|a| a.to_string()).collect()
            };
            let to = ["--encrypt-to", recipient.as_str()];
            let identity = key.display().to_string();
            let with_identity = ["--identity", identity.as_str()];
            let run_ours = |args: Vec<String>| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ours(&args)
            };
            sealed_live.measure(
                run,
                g.pid,
                || run_ours(sealed(&["backup", "--live", "--repo", &repo, "--json"], to)).0,
                || pipeline(upload_sealed(&data_dir, true)).0,
            );
            let mut sealed_id = String::new();
            sealed_stop.measure(
                run,
                g.pid,
                || {
                    let (c, r) = run_ours(sealed(&["backup", "--repo", &repo, "--json"], to));
                    sealed_id = r["id"].as_str().unwrap().to_string();
                    c
                },
                || pipeline_stop_upload(true),
            );
            let args = [
                "restore",
                &sealed_id,
                "--repo",
                &repo,
                "--replace-messages",
                "--json",
            ];
            sealed_restore.measure(
                run,
                g.pid,
                || run_ours(sealed(&args, with_identity)).0,
                || pipeline_restore(true),
            );
        }
        if let Some(peer) = &peer {
            peer_backup.measure(
                run,
                g.pid,
                || ours(&["backup", "--live", "--repo", &repo, "--json"]).0,
                || peer.backup(),
            );
            peer_restore.measure(run, g.pid, || ours(&restore_args).0, || peer.restore());
        }
        // Keep the bucket small: only the newest snapshot stays.
        let _ = tool.run(&["prune", "--keep-last", "1", "--repo", &repo]);
        eprintln!("{}: run {} of {runs} done", size.label(), run + 1);
    }
    // The pipeline's stored size, outside the measurements.
    let (_, compressed) = pipeline(vec![
        sh(&format!("tar -C {} -cf - msg_stores", data_dir.display())),
        sh("zstd -q -3 -T0 -c"),
    ]);
    println!(
        "| operation | reference | ours | reference time | speed-up | ours CPU | reference CPU | CPU ratio | S3 server CPU ours / reference | ours peak | reference peak | throughput ours / reference |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut found = Found {
        live: live.print(data_mb),
        ..Found::default()
    };
    live3.print(data_mb);
    found.stop = stop.print(data_mb);
    found.restore = restore.print(data_mb);
    if encrypted {
        sealed_live.print(data_mb);
        sealed_stop.print(data_mb);
        sealed_restore.print(data_mb);
    }
    if peer.is_some() {
        peer_backup.print(data_mb);
        peer_restore.print(data_mb);
    }
    found.stored_ours = live.stored();
    found.stored_pipeline = compressed.len() as u64;
    let pause = |m: &Medians| {
        (
            m.ours_pause.unwrap_or(f64::NAN),
            m.theirs_pause.unwrap_or(f64::NAN),
        )
    };
    let (op, tp) = pause(&found.stop);
    let (orp, trp) = pause(&found.restore);
    println!(
        "\npauses (median): stop-app backup ours {op:.2} s vs pipeline {tp:.2} s (**{:.1}x shorter**); restore ours {orp:.2} s vs pipeline {trp:.2} s",
        tp / op
    );
    println!(
        "stored: ours (level 1) {:.1} MB, level 3 {:.1} MB; pipeline (zstd -3) {:.1} MB",
        found.stored_ours.unwrap_or(0) as f64 / 1e6,
        live3.stored().unwrap_or(0) as f64 / 1e6,
        found.stored_pipeline as f64 / 1e6
    );
    println!(
        "\nOur fixed costs (medians): before the first store byte is read (start, connection, checks, pause), the pause, the data phase, after the last chunk is stored (manifest, report, exit)\n"
    );
    println!("| operation | wall | before first read | pause | data | after last upload |");
    println!("|---|---|---|---|---|---|");
    for s in [&live, &live3, &stop, &restore] {
        s.print_fixed_costs();
    }
    if encrypted {
        println!("\nencryption cost, ours (median, encrypted against plain):\n");
        println!(
            "| operation | plain | encrypted | wall | plain CPU | encrypted CPU | CPU | peak plain / encrypted |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (plain, sealed) in [
            (&live, &sealed_live),
            (&stop, &sealed_stop),
            (&restore, &sealed_restore),
        ] {
            plain.print_cost_of(sealed);
        }
    }
    println!("\nload average after: {}", load_average());
    found
}

/// An age key pair made by `age-keygen` when `wanted`: (identity file,
/// recipient); placeholders otherwise (no `age` needed).
fn age_key(dir: &std::path::Path, wanted: bool) -> (PathBuf, String) {
    let key = dir.join("key.txt");
    if !wanted {
        return (key, String::new());
    }
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

fn main() {
    let a = args();
    println!(
        "# rabbitmq-backup benchmark\n\nmachine: {} CPUs, {}; runs per measurement: {}; load average at start: {}",
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
        a.runs,
        load_average()
    );
    let mut rounds = Vec::new();
    for size in &a.sizes {
        let peer = match size {
            Size::Small(_) | Size::Medium(_) => a.peer.as_deref(),
            Size::MiB(_) => None,
        };
        rounds.push((*size, round(*size, a.runs, peer, a.encrypted)));
    }
    let floor = if a.floor { floor::print(a.runs) } else { None };
    targets(&rounds, floor);
}

/// The targets against what was measured.
fn targets(rounds: &[(Size, Found)], floor: Option<f64>) {
    println!("\n### Against the targets\n");
    println!("| target | measured | |");
    println!("|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let find = |f: fn(&Size) -> bool| rounds.iter().find(|(s, _)| f(s)).map(|(_, r)| r);
    if let Some(r) = find(|s| matches!(s, Size::Small(_))) {
        println!(
            "| live backup of 200 messages ≤ 0.2 s | {:.3} s | {} |",
            r.live.ours,
            verdict(r.live.ours <= 0.2)
        );
    }
    for (size, r) in rounds {
        if let Some(p) = r.stop.ours_pause {
            println!(
                "| stop-app pause ≤ 0.7 s ({}) | {p:.2} s{} | {} |",
                size.label(),
                floor.map_or(String::new(), |f| format!(
                    " (RabbitMQ's own stop + start: {f:.2} s)"
                )),
                verdict(p <= 0.7)
            );
        }
    }
    for (size, r) in rounds.iter().filter(|(s, _)| matches!(s, Size::MiB(_))) {
        let ratio = r.live.theirs / r.live.ours;
        let smaller = r.stored_ours.is_some_and(|s| s <= r.stored_pipeline);
        println!(
            "| `backup --live` ≥ 1.6x the pipeline ({}), same or smaller stored size | {ratio:.2}x; stored {:.1} vs {:.1} MB | {} |",
            size.label(),
            r.stored_ours.unwrap_or(0) as f64 / 1e6,
            r.stored_pipeline as f64 / 1e6,
            verdict(ratio >= 1.6 && smaller)
        );
    }
    if let Some(r) = find(|s| matches!(s, Size::Medium(_))) {
        println!(
            "| restore of the 30 MB case ≤ 1.2 s including the broker restart | {:.2} s | {} |",
            r.restore.ours,
            verdict(r.restore.ours <= 1.2)
        );
    }
    if let Some(r) = find(|s| matches!(s, Size::MiB(m) if *m >= 1024)) {
        let ratio = r.restore.theirs / r.restore.ours;
        println!(
            "| restore ≥ 1.8x the pipeline at 1 GiB | {ratio:.2}x | {} |",
            verdict(ratio >= 1.8)
        );
    }
    let mibs: Vec<&(Size, Found)> = rounds
        .iter()
        .filter(|(s, _)| matches!(s, Size::MiB(_)))
        .collect();
    if let (Some((s1, r1)), Some((s2, r2))) = (mibs.first(), mibs.last())
        && s1 != s2
    {
        let peak = |r: &Found| r.live.ours_peak_mib.max(r.restore.ours_peak_mib);
        let (p1, p2) = (peak(r1), peak(r2));
        println!(
            "| peak memory flat in data size | {p1:.0} MiB ({}) → {p2:.0} MiB ({}), {:+.0}% | {} |",
            s1.label(),
            s2.label(),
            100.0 * (p2 - p1) / p1,
            verdict(p2 <= p1 * 1.2)
        );
    }
}
