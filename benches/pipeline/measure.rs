//! Measuring processes and pipelines: wall and CPU time, peak memory, the
//! S3 server's CPU meanwhile, and medians of alternating runs.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one process (or pipeline) cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_kib: u64,
    pub pause: Option<Duration>,
    /// CPU the S3 server (Garage) spent meanwhile.
    pub server_cpu: Duration,
    /// Ours only (from `--json`): when the first store byte was read and
    /// the last chunk stored, since the run started.
    pub first_read: Option<Duration>,
    pub last_upload: Option<Duration>,
    /// Bytes stored in the repository.
    pub stored: Option<u64>,
}

/// CPU time used so far by a process, from /proc.
pub fn cpu_of(pid: u32) -> Duration {
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
pub fn with_server(pid: u32, f: impl FnOnce() -> Cost) -> Cost {
    let before = cpu_of(pid);
    let mut cost = f();
    cost.server_cpu = cpu_of(pid).saturating_sub(before);
    cost
}

/// Waits for `pid` with wait4, returning CPU time and peak RSS.
pub fn reap(child: &Child) -> (Duration, u64, std::process::ExitStatus) {
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
pub fn pipeline(stages: Vec<Command>) -> (Cost, Vec<u8>) {
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

pub fn sh(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The medians of one row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Medians {
    pub ours: f64,
    pub theirs: f64,
    pub ours_peak_mib: f64,
    pub ours_pause: Option<f64>,
    pub theirs_pause: Option<f64>,
}

/// One operation, ours against a reference, measured in alternation.
pub struct Series {
    pub name: String,
    pub reference: &'static str,
    pub ours: Vec<Cost>,
    pub theirs: Vec<Cost>,
}

impl Series {
    pub fn new(name: &str, reference: &'static str) -> Self {
        Series {
            name: name.to_string(),
            reference,
            ours: vec![],
            theirs: vec![],
        }
    }

    /// One pair of measurements, each with the S3 server's CPU; who goes
    /// first alternates with `run`, so neither always finds a warm cache.
    pub fn measure(
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

    fn med_opt(costs: &[Cost], f: impl Fn(&Cost) -> Option<f64>) -> Option<f64> {
        let xs: Vec<f64> = costs.iter().filter_map(f).collect();
        (!xs.is_empty()).then(|| median(xs))
    }

    /// The table row; `data_mb` for throughput.
    pub fn print(&self, data_mb: f64) -> Medians {
        let wall = |c: &Cost| c.wall.as_secs_f64();
        let cpu = |c: &Cost| c.cpu.as_secs_f64();
        let peak = |c: &Cost| c.peak_kib as f64 / 1024.0;
        let server = |c: &Cost| c.server_cpu.as_secs_f64();
        let (ow, tw) = (Self::med(&self.ours, wall), Self::med(&self.theirs, wall));
        let (oc, tc) = (Self::med(&self.ours, cpu), Self::med(&self.theirs, cpu));
        let (op, tp) = (Self::med(&self.ours, peak), Self::med(&self.theirs, peak));
        let (os, ts) = (
            Self::med(&self.ours, server),
            Self::med(&self.theirs, server),
        );
        println!(
            "| {} | {} | {ow:.3} s | {tw:.3} s | **{:.2}x** | {oc:.2} s | {tc:.2} s | {:.2}x | {os:.2} / {ts:.2} s | {op:.0} MiB | {tp:.0} MiB | {:.0} / {:.0} MB/s |",
            self.name,
            // A shell pipeline's bars would split the Markdown cell.
            self.reference.replace('|', "\\|"),
            tw / ow,
            tc / oc,
            data_mb / ow,
            data_mb / tw
        );
        let pause = |c: &Cost| c.pause.map(|p| p.as_secs_f64());
        Medians {
            ours: ow,
            theirs: tw,
            ours_peak_mib: op,
            ours_pause: Self::med_opt(&self.ours, pause),
            theirs_pause: Self::med_opt(&self.theirs, pause),
        }
    }

    /// Where our time went (medians): before the first store byte was
    /// read (start, connection, checks, the pause), the pause itself, the
    /// data phase, and after the last chunk was stored (manifest, exit).
    pub fn print_fixed_costs(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let wall = Self::med(&self.ours, |c| ms(c.wall));
        let before = Self::med_opt(&self.ours, |c| c.first_read.map(ms));
        let pause = Self::med_opt(&self.ours, |c| c.pause.map(ms));
        let data = Self::med_opt(&self.ours, |c| {
            Some(ms(c.last_upload?.saturating_sub(c.first_read?)))
        });
        let after = Self::med_opt(&self.ours, |c| {
            c.last_upload.map(|l| ms(c.wall.saturating_sub(l)))
        });
        let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} ms"));
        println!(
            "| {} | {wall:.0} ms | {} | {} | {} | {} |",
            self.name,
            show(before),
            show(pause),
            show(data),
            show(after)
        );
    }

    /// One row: what `other` (the same operation, encrypted) costs us
    /// against `self`.
    pub fn print_cost_of(&self, other: &Series) {
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

    /// Median stored bytes of our runs.
    pub fn stored(&self) -> Option<u64> {
        Self::med_opt(&self.ours, |c| c.stored.map(|s| s as f64)).map(|s| s as u64)
    }
}
