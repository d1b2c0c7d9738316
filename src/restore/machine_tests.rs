//! The state machine against a fake node on a temporary directory: every
//! instant of a restore and of its rollback crashed (a panic: no cleanup
//! code runs), with and without a "reboot" that starts the broker on
//! whatever the data directory holds, then resumed. The end-to-end
//! `reliability::a_restore_killed_at_every_instant_is_finished_or_undone_by_resume`
//! does the same with RabbitMQ.

use std::fs;
use std::sync::Mutex;

use super::*;
use crate::archive::manifest::VhostEntry;
use crate::failpoint::local::{self, Rules};

const VHOSTS: [&str; 2] = ["A", "B"];

/// A broker: stops, starts (creating a fresh store for a vhost that has
/// none, as RabbitMQ does), checks that every vhost holds the snapshot.
struct FakeNode {
    data_dir: PathBuf,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    running: bool,
    fail_stop: bool,
    fail_exclude: bool,
    fail_replay: bool,
    starts: u32,
}

impl FakeNode {
    fn new(data_dir: &Path) -> FakeNode {
        FakeNode {
            data_dir: data_dir.to_path_buf(),
            state: Mutex::new(FakeState {
                running: true,
                ..FakeState::default()
            }),
        }
    }

    /// A power cut and boot: the broker starts by itself.
    fn reboot(&self) {
        self.state.lock().unwrap().running = false;
        self.boot();
    }

    fn boot(&self) {
        for vh in VHOSTS {
            let store = self.data_dir.join(format!("msg_stores/vhosts/{vh}"));
            if !store.exists() {
                fs::create_dir_all(&store).unwrap();
                fs::write(store.join("f"), "fresh").unwrap();
            }
        }
        let mut s = self.state.lock().unwrap();
        s.running = true;
        s.starts += 1;
    }
}

impl Node for FakeNode {
    async fn import(&self, _: &[u8], _: &Path) -> anyhow::Result<Imported> {
        Ok(Imported::Merged)
    }

    async fn stop(&self) -> anyhow::Result<()> {
        if self.state.lock().unwrap().fail_stop {
            anyhow::bail!("stop_app failed");
        }
        self.state.lock().unwrap().running = false;
        Ok(())
    }

    async fn start(&self) -> anyhow::Result<()> {
        if !self.state.lock().unwrap().running {
            self.boot();
        }
        Ok(())
    }

    async fn check(&self, _: &Manifest) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
        assert!(
            self.state.lock().unwrap().running,
            "counts checked on a stopped broker"
        );
        for vh in VHOSTS {
            let f = self.data_dir.join(format!("msg_stores/vhosts/{vh}/f"));
            let content = fs::read_to_string(&f).unwrap_or_default();
            if content != format!("new-{vh}") {
                anyhow::bail!("vhost {vh} holds {content:?}");
            }
        }
        Ok((Vec::new(), Vec::new()))
    }

    async fn exclude(
        &self,
        _: &Manifest,
        _: &ExcludeSpec,
    ) -> anyhow::Result<Vec<ExclusionOutcome>> {
        if self.state.lock().unwrap().fail_exclude {
            anyhow::bail!("the AMQP connection was refused");
        }
        Ok(Vec::new())
    }

    /// Publishes the logical records: marks the data directory (twice is
    /// harmless, as a resumed replay's window is).
    async fn replay(
        &self,
        area: &Path,
        _: &Manifest,
        journal: &Journal,
    ) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
        assert!(
            self.state.lock().unwrap().running,
            "replayed into a stopped broker"
        );
        assert_eq!(journal.method, Method::Swap);
        if self.state.lock().unwrap().fail_replay {
            anyhow::bail!("the AMQP connection was refused");
        }
        assert!(area.join("new").is_dir(), "the snapshot is still staged");
        fs::write(self.data_dir.join(REPLAYED), "logical")?;
        let queues = journal.replay.as_ref().map_or(0, |r| r.queues.len());
        Ok((vec![replayed_outcome(); queues], Vec::new()))
    }
}

/// What the fake replay leaves in the data directory.
const REPLAYED: &str = "replayed";

fn replayed_outcome() -> QueueOutcome {
    QueueOutcome {
        vhost: "A".into(),
        name: "orders".into(),
        queue_type: "quorum".into(),
        expected: 3,
        actual: Some(3),
        status: super::super::report::QueueState::Ok,
    }
}

struct Fixture {
    _base: tempfile::TempDir,
    data: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        // On tmpfs where there is one: the machine syncs every step.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let data = base.path().join("rabbit@h");
        for vh in VHOSTS {
            let d = data.join(format!("msg_stores/vhosts/{vh}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("f"), format!("old-{vh}")).unwrap();
        }
        Fixture { _base: base, data }
    }

    fn manifest(&self) -> Manifest {
        let mut m = crate::archive::manifest::tests::sample();
        m.vhosts = VHOSTS
            .iter()
            .map(|vh| VhostEntry {
                name: vh.to_string(),
                dir: VhostDir::parse(&format!("msg_stores/vhosts/{vh}")).unwrap(),
            })
            .collect();
        m
    }

    /// A verified work area with the snapshot's stores, and its machine.
    fn begin(&self, keep_old: bool, exclude: bool) -> Machine {
        self.begin_with(keep_old, exclude, false)
    }

    /// As [`Fixture::begin`]; with `replay`, a quorum queue's logical
    /// records are replayed after the swap.
    fn begin_with(&self, keep_old: bool, exclude: bool, replay: bool) -> Machine {
        let m = self.manifest();
        let mut staging = Staging::create(&self.data, "restore", &m.id).unwrap();
        for vh in VHOSTS {
            let d = staging.path().join(format!("new/msg_stores/vhosts/{vh}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("f"), format!("new-{vh}")).unwrap();
        }
        let spec = exclude.then(|| ExcludeSpec {
            globs: vec!["oro.email.*".into()],
            drop: false,
        });
        let replay = replay.then(|| ReplaySpec {
            queues: vec![("A".into(), "orders".into())],
            purge: true,
            append: false,
        });
        Machine::begin(
            &mut staging,
            &m,
            "rabbit@h",
            &self.data,
            keep_old,
            spec,
            replay,
        )
        .unwrap()
    }

    fn contents(&self) -> Vec<String> {
        VHOSTS
            .iter()
            .map(|vh| {
                fs::read_to_string(self.data.join(format!("msg_stores/vhosts/{vh}/f")))
                    .unwrap_or_else(|_| "absent".into())
            })
            .collect()
    }

    /// Every entry beside the data directory, but the data directory.
    fn beside(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(self.data.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| *p != self.data)
            .collect();
        out.sort();
        out
    }
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs a fresh restore on its own thread with `rules`; returns the result
/// (None after a crash) and the points passed.
fn run_restore(
    f: &Fixture,
    node: &FakeNode,
    rules: Rules,
) -> (Option<Result<Outcome, String>>, Vec<String>) {
    run_restore_with(f, node, rules, false)
}

/// As [`run_restore`]; with `replay`, logical records replayed after the swap.
fn run_restore_with(
    f: &Fixture,
    node: &FakeNode,
    rules: Rules,
    replay: bool,
) -> (Option<Result<Outcome, String>>, Vec<String>) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                local::set(rules);
                let mut machine = f.begin_with(true, false, replay);
                let result = block_on(machine.run(node, b"{}")).map_err(|e| format!("{e:#}"));
                (Some(result), local::take().passed)
            })
            .join()
            .unwrap_or((None, Vec::new()))
    })
}

fn resume(f: &Fixture, node: &FakeNode) -> Result<Outcome, anyhow::Error> {
    let (mut pending, _) = sweep(&f.data, false).unwrap();
    let Some(mut machine) = pending.pop() else {
        return Ok(Outcome::default());
    };
    block_on(machine.resume(node))
}

#[test]
fn a_restore_runs_every_phase_and_keeps_the_previous_stores() {
    let f = Fixture::new();
    let node = FakeNode::new(&f.data);
    let (result, passed) = run_restore(&f, &node, Rules::default());
    let outcome = result.unwrap().unwrap();
    assert_eq!(f.contents(), ["new-A", "new-B"]);
    let kept = outcome.previous_store.unwrap();
    assert_eq!(fs::read_to_string(kept.join("A/f")).unwrap(), "old-A");
    assert_eq!(f.beside(), vec![kept], "the work area is gone");
    let phases: Vec<&str> = passed
        .iter()
        .filter_map(|p| p.strip_prefix("restore:journal:"))
        .collect();
    assert_eq!(
        phases,
        [
            "staged@1",
            "imported@1",
            "stopping@1",
            "swapping:0@1",
            "swapping:1@1",
            "swapping:2@1",
            "swapping:3@1",
            "swapped@1",
            "started@1",
            "cleaning@1",
            "done@1"
        ]
    );
}

#[test]
fn a_swap_then_replay_replays_after_the_counts_and_resumes_a_failed_replay() {
    let f = Fixture::new();
    let node = FakeNode::new(&f.data);
    let (result, passed) = run_restore_with(&f, &node, Rules::default(), true);
    let outcome = result.unwrap().unwrap();
    assert_eq!(f.contents(), ["new-A", "new-B"]);
    assert!(f.data.join(REPLAYED).exists());
    assert_eq!(outcome.queues.len(), 1, "the replayed queue is reported");
    let phases: Vec<&str> = passed
        .iter()
        .filter_map(|p| p.strip_prefix("restore:journal:"))
        .filter(|p| !p.starts_with("swapping"))
        .collect();
    assert_eq!(
        phases,
        [
            "staged@1",
            "imported@1",
            "stopping@1",
            "swapped@1",
            "started@1",
            "replaying@1",
            "cleaning@1",
            "done@1"
        ]
    );

    // A replay that fails leaves a resumable area with the previous stores.
    let f = Fixture::new();
    let node = FakeNode::new(&f.data);
    node.state.lock().unwrap().fail_replay = true;
    let mut machine = f.begin_with(false, false, true);
    let err = block_on(machine.run(&node, b"{}")).unwrap_err();
    assert_eq!(crate::error::kind_of(&err), Kind::NeedsAttention, "{err:#}");
    assert!(
        format!("{err:#}").contains("replay of the quorum queues"),
        "{err:#}"
    );
    assert_eq!(
        f.contents(),
        ["new-A", "new-B"],
        "no rollback after the counts"
    );
    let (pending, _) = sweep(&f.data, true).unwrap();
    assert_eq!(pending[0].journal.phase, Phase::Replaying);
    assert!(pending[0].next_action().contains("quorum queues"));
    assert!(
        pending[0].area().join("old/A").exists(),
        "previous stores kept"
    );
    node.state.lock().unwrap().fail_replay = false;
    node.state.lock().unwrap().running = false; // a reboot that did not start it
    resume(&f, &node).unwrap();
    assert!(f.data.join(REPLAYED).exists());
    assert!(f.beside().is_empty(), "{:?}", f.beside());
}

/// Crashes a restore at every point of a successful run and of a run that
/// rolls back, optionally reboots, resumes, and checks the invariant: both
/// vhosts hold the previous stores or both the snapshot's, and every
/// previous store still exists somewhere.
#[test]
fn every_crash_point_is_finished_or_undone_by_resume() {
    crash_everywhere(false);
}

/// The same with logical records replayed after the swap: the node ends
/// with the previous stores and nothing replayed, or with the snapshot's
/// stores and the logical records replayed.
#[test]
fn every_crash_point_of_a_swap_then_replay_is_finished_or_undone_by_resume() {
    crash_everywhere(true);
}

fn crash_everywhere(replay: bool) {
    let recording = |fail_at: Option<&str>| {
        let f = Fixture::new();
        let node = FakeNode::new(&f.data);
        let rules = Rules {
            fail_at: fail_at.map(str::to_string),
            ..Rules::default()
        };
        run_restore_with(&f, &node, rules, replay).1
    };
    let forward = recording(None);
    let failing = "restore:check-counts@1";
    let backward = recording(Some(failing));
    let after_failure = backward.iter().skip_while(|p| *p != failing).skip(1);
    let cases: Vec<(Option<&str>, &String)> = forward
        .iter()
        .map(|p| (None, p))
        .chain(after_failure.map(|p| (Some(failing), p)))
        .collect();
    assert!(cases.len() > 30, "{cases:?}");
    if replay {
        assert!(
            forward.iter().any(|p| p == "restore:journal:replaying@1")
                && forward.iter().any(|p| p == "restore:replay@1"),
            "{forward:?}"
        );
    }
    let mut tried = 0;
    for reboot in [false, true] {
        for (fail_at, point) in &cases {
            let f = Fixture::new();
            let node = FakeNode::new(&f.data);
            let rules = Rules {
                fail_at: fail_at.map(str::to_string),
                crash_at: Some(point.to_string()),
                ..Rules::default()
            };
            let (result, _) = run_restore_with(&f, &node, rules, replay);
            assert!(result.is_none(), "{point}: no crash");
            if reboot {
                node.reboot();
            }
            let what = format!("{point} (reboot: {reboot}, failing: {fail_at:?})");
            let resumed = resume(&f, &node);
            if let Err(e) = &resumed {
                assert_eq!(crate::error::kind_of(e), Kind::RolledBack, "{what}: {e:#}");
            }
            assert!(
                node.state.lock().unwrap().running,
                "{what}: the broker runs"
            );
            let contents = f.contents();
            let previous = ["old-A", "old-B"];
            let beside = f.beside();
            let replayed = f.data.join(REPLAYED).exists();
            assert_eq!(
                replayed,
                replay && contents == ["new-A", "new-B"],
                "{what}: replayed with {contents:?}"
            );
            if contents == ["new-A", "new-B"] {
                // The previous stores are kept (--keep-old) beside the data directory.
                let kept: Vec<&PathBuf> = beside
                    .iter()
                    .filter(|p| p.to_string_lossy().contains("-previous-"))
                    .collect();
                assert_eq!(kept.len(), 1, "{what}: {beside:?}");
                assert_eq!(fs::read_to_string(kept[0].join("B/f")).unwrap(), "old-B");
            } else {
                assert_eq!(contents, previous, "{what}");
            }
            // What a rebooted broker created is kept, never removed.
            for p in &beside {
                let name = p.file_name().unwrap().to_string_lossy();
                assert!(
                    name.contains("-previous-") || name.contains("-displaced-"),
                    "{what}: {name} left behind"
                );
            }
            // Nothing is left to resume.
            assert!(sweep(&f.data, true).unwrap().0.is_empty(), "{what}");
            tried += 1;
        }
    }
    eprintln!("crash points tried and recovered: {tried}");
}

#[test]
fn a_resume_that_cannot_stop_the_broker_moves_nothing_and_starts_nothing() {
    let f = Fixture::new();
    let node = FakeNode::new(&f.data);
    let crash = Rules {
        crash_at: Some("restore:in:0@1".into()),
        ..Rules::default()
    };
    assert!(run_restore(&f, &node, crash).0.is_none());
    // A's store is aside, the snapshot's not yet in: a half-swapped node.
    assert_eq!(f.contents(), ["absent", "old-B"]);
    node.state.lock().unwrap().fail_stop = true;
    let starts = node.state.lock().unwrap().starts;
    let err = resume(&f, &node).unwrap_err();
    assert_eq!(crate::error::kind_of(&err), Kind::NeedsAttention, "{err:#}");
    assert_eq!(
        node.state.lock().unwrap().starts,
        starts,
        "never started on a half-swapped store"
    );
    assert_eq!(f.contents(), ["absent", "old-B"], "nothing moved");
    let (pending, _) = sweep(&f.data, true).unwrap();
    assert_eq!(pending[0].journal.phase, Phase::Swapping, "still resumable");
    node.state.lock().unwrap().fail_stop = false;
    resume(&f, &node).unwrap();
    assert_eq!(f.contents(), ["new-A", "new-B"]);
}

#[test]
fn keeping_the_previous_stores_twice_keeps_both() {
    let f = Fixture::new();
    let node = FakeNode::new(&f.data);
    let first = run_restore(&f, &node, Rules::default()).0.unwrap().unwrap();
    let second = run_restore(&f, &node, Rules::default()).0.unwrap().unwrap();
    let (a, b) = (
        first.previous_store.unwrap(),
        second.previous_store.unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(fs::read_to_string(a.join("A/f")).unwrap(), "old-A");
    assert_eq!(fs::read_to_string(b.join("A/f")).unwrap(), "new-A");
}

#[test]
fn a_rollback_takes_the_snapshot_out_of_a_vhost_new_on_the_node() {
    let f = Fixture::new();
    fs::remove_dir_all(f.data.join("msg_stores/vhosts/B")).unwrap();
    let mut node = FakeNode::new(&f.data);
    // This broker does not create the missing store by itself.
    node.data_dir = f.data.join("elsewhere");
    let rules = Rules {
        fail_at: Some("restore:check-counts@1".into()),
        ..Rules::default()
    };
    let err = run_restore(&f, &node, rules).0.unwrap().unwrap_err();
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        f.contents(),
        ["old-A", "absent"],
        "no snapshot data left in B"
    );
}

#[test]
fn a_failed_exclusion_keeps_the_previous_stores_for_resume() {
    let f = Fixture::new();
    let node = FakeNode::new(&f.data);
    node.state.lock().unwrap().fail_exclude = true;
    let mut machine = f.begin(false, true);
    let err = block_on(machine.run(&node, b"{}")).unwrap_err();
    assert_eq!(crate::error::kind_of(&err), Kind::NeedsAttention, "{err:#}");
    assert!(
        err.downcast_ref::<crate::hooks::SkipAfter>().is_some(),
        "{err:#}"
    );
    assert_eq!(f.contents(), ["new-A", "new-B"]);
    let (pending, _) = sweep(&f.data, true).unwrap();
    assert_eq!(pending[0].journal.phase, Phase::Checked);
    assert!(
        pending[0].area().join("old/A").exists(),
        "previous stores kept"
    );
    node.state.lock().unwrap().fail_exclude = false;
    resume(&f, &node).unwrap();
    assert!(f.beside().is_empty(), "{:?}", f.beside());
}

#[test]
fn a_damaged_journal_is_refused_and_its_area_kept() {
    let f = Fixture::new();
    let machine = f.begin(false, false);
    fs::write(machine.area().join(JOURNAL), b"{ damaged").unwrap();
    let err = sweep(&f.data, false).unwrap_err();
    assert_eq!(crate::error::kind_of(&err), Kind::NeedsAttention);
    assert!(format!("{err:#}").contains("cannot be read"), "{err:#}");
    assert!(machine.area().join("new").exists());
}

#[test]
fn areas_that_touched_no_message_are_swept() {
    let f = Fixture::new();
    let machine = f.begin(false, false);
    let (pending, removed) = sweep(&f.data, false).unwrap();
    assert!(pending.is_empty());
    assert_eq!(removed, vec![machine.area().to_path_buf()]);
    assert!(!machine.area().exists());
}
