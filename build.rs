//! Puts the commit and build date into `--version` (RABBITMQ_BACKUP_VERSION).
//! The build date honours SOURCE_DATE_EPOCH, for reproducible builds.

#[path = "build/git.rs"]
mod git;

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = git::commit(&dir);
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let version = git::version(
        &std::env::var("CARGO_PKG_VERSION").expect("set by cargo"),
        commit.as_ref(),
        &git::date_of(now),
    );
    println!("cargo:rustc-env=RABBITMQ_BACKUP_VERSION={version}");
    // Run again only when the commit changes, not at every build.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/git.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    for path in commit.iter().flat_map(|c| &c.watch) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
