//! What `--version` says about the source: the commit and its date, read
//! from git when the crate is a git checkout of its own (never from a
//! repository that merely contains an unpacked tarball). Shared by
//! `build.rs` and its test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The commit a checkout is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The first 12 hex digits of the commit id.
    pub short: String,
    /// The commit's date, `YYYY-MM-DD` (the committer's).
    pub date: String,
    /// Files whose change means another commit (for `rerun-if-changed`).
    pub watch: Vec<PathBuf>,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// The commit `dir` is checked out at, if `dir` is the top of a git
/// checkout and git is installed.
pub fn commit(dir: &Path) -> Option<Commit> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let short = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let date = git(dir, &["log", "-1", "--format=%cs", "HEAD"])?;
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { dir.join(p) }
    };
    let git_dir = abs(git(dir, &["rev-parse", "--git-dir"])?);
    let common = abs(git(dir, &["rev-parse", "--git-common-dir"])?);
    let mut watch = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(common.join(branch));
    }
    // A path that does not exist would make cargo rerun the script every time.
    watch.retain(|p| p.exists());
    Some(Commit { short, date, watch })
}

/// `YYYY-MM-DD` of a Unix time (UTC).
pub fn date_of(unix_seconds: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (unix_seconds / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The version line: the package version, the commit and its date when
/// known, and the build date.
pub fn version(package: &str, commit: Option<&Commit>, built: &str) -> String {
    match commit {
        Some(c) => format!(
            "{package} (commit {} of {}, built {built})",
            c.short, c.date
        ),
        None => format!("{package} (built {built} from a source tree without git metadata)"),
    }
}
