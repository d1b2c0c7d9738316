//! The store reader on damaged and hostile copies of the real fixture
//! stores: bytes flipped, files cut short, garbage appended, length fields
//! set to huge values, in every kind of file (index segments, journals,
//! version-2 segments, per-queue stores, shared stores, `.queue_name`,
//! `.config`). Reading must end in messages or a clear error naming a file
//! — never a panic — and no allocation may grow with what the bytes claim
//! (the process's address space is capped).

use std::path::{Path, PathBuf};
use std::sync::Once;

use proptest::prelude::*;
use rabbitmq_backup::store::Store;

/// How much address space the damaged stores may make the process take on
/// top of what it had: the reader's buffers are a few MiB, the fixtures'
/// files tens of KiB, while a damaged length field claims up to 2^64 bytes.
/// (A counting global allocator is not possible: a dependency,
/// rabbitmq_http_client's rbase64, installs mimalloc as the global one.)
const HEADROOM: u64 = 256 << 20;

/// Caps the process's address space once: an allocation sized by what the
/// bytes claim then fails, and the process aborts, failing the test.
fn limit_address_space() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let limit = libc::rlimit {
            rlim_cur: vm_kib * 1024 + HEADROOM,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads the struct we own.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    });
}

fn fixture(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store")
        .join(version)
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("msg_stores")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for f in files(from) {
        let rel = f.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&f, to.join(rel)).unwrap();
    }
}

#[derive(Debug, Clone)]
enum Damage {
    /// Set bytes at (position, value).
    Flip(Vec<(usize, u8)>),
    /// Keep only this fraction (per mille) of the file.
    Cut(u16),
    /// Append bytes.
    Append(Vec<u8>),
    /// Write 0xff over 8 bytes: lengths and sizes claim the maximum.
    Huge(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Damage::Flip),
        (0u16..1000).prop_map(Damage::Cut),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
        any::<usize>().prop_map(Damage::Huge),
    ]
}

fn apply(path: &Path, d: &Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match d {
        Damage::Flip(flips) if !bytes.is_empty() => {
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = *v;
            }
        }
        Damage::Cut(permille) => bytes.truncate(bytes.len() * usize::from(*permille) / 1000),
        Damage::Append(more) => bytes.extend_from_slice(more),
        Damage::Huge(at) if bytes.len() >= 8 => {
            let i = at % (bytes.len() - 7);
            bytes[i..i + 8].fill(0xff);
        }
        _ => {}
    }
    std::fs::write(path, bytes).unwrap();
}

/// Reads every queue; returns how many messages and errors there were.
fn read_everything(root: &Path) -> (u64, u64) {
    let work = tempfile::tempdir().unwrap();
    let (mut messages, mut errors) = (0, 0);
    let store = match Store::open(root) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.file.starts_with("msg_stores"), "{e}");
            return (0, 1);
        }
    };
    for vhost in store.vhosts() {
        let reader = match store.vhost(&vhost.name, work.path()) {
            Ok(r) => r,
            Err(e) => {
                assert!(e.file.starts_with("msg_stores"), "{e}");
                errors += 1;
                continue;
            }
        };
        for queue in &vhost.queues {
            for item in reader.queue(queue) {
                match item {
                    Ok(_) => messages += 1,
                    Err(e) => {
                        assert!(e.file.starts_with("msg_stores"), "{e}");
                        errors += 1;
                    }
                }
            }
        }
    }
    (messages, errors)
}

fn check(version: &str, which: usize, d: &Damage) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(version), dir.path());
    let all = files(dir.path());
    let victim = &all[which % all.len()];
    apply(victim, d);
    limit_address_space();
    let outcome = std::panic::catch_unwind(|| read_everything(dir.path()));
    prop_assert!(
        outcome.is_ok(),
        "{version}: {} damaged by {d:?} made the reader panic",
        victim.display()
    );
    Ok(())
}

proptest! {
    // 4 stores x 200 cases.
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_stores_give_errors_never_panics_or_huge_allocations(which in any::<usize>(), d in damage()) {
        for version in ["3.8.9", "3.10.8-live", "4.0.5", "4.3.6"] {
            check(version, which, &d)?;
        }
    }
}

#[test]
fn the_untouched_fixtures_read_without_errors() {
    for version in ["3.8.9", "3.10.8", "3.10.8-live", "4.0.5", "4.3.6"] {
        let (messages, errors) = read_everything(&fixture(version));
        assert_eq!(errors, 0, "{version}");
        assert!(messages > 20, "{version}: {messages}");
    }
}

#[test]
fn the_address_space_cap_refuses_what_a_damaged_length_would_ask_for() {
    limit_address_space();
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve_exact(1 << 30).is_err());
}
