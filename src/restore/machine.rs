//! THE restore state machine: every phase, every transition, the journal,
//! and how `--resume` decides. Nothing else in the tool changes a node's
//! message stores during a restore.
//!
//! ```text
//!             ┌─────────── common ───────────┐
//!  (verified) Staged ──import──▶ Imported ──▶ [method]
//!   swap:     Stopping ──stop_app──▶ Swapping(step k) ──all moved, chown──▶ Swapped
//!             Swapped ──start_app──▶ Started ──counts──▶ [Checked ──exclude──▶] Cleaning
//!   swap with logical records (auto): … Started ──counts──▶ [Checked ──exclude──▶]
//!             Replaying ──replay, counts──▶ Cleaning
//!   common:   Cleaning ──old stores removed or kept──▶ Done
//!   undo:     Swapping | Swapped | Started ──failure──▶ RollingBack(step k)
//!             RollingBack ──stop_app, moved back, start_app──▶ RolledBack
//!             Stopping ──stop_app failed, start_app──▶ Abandoned (no store moved)
//! ```
//!
//! The journal (`journal.json` in the work area) is written and synced
//! BEFORE each step: it names the phase and, while stores move, the step
//! about to be taken (`cursor`); steps before it are done. Whether that
//! step itself happened is read from the filesystem (`swap.rs`): a crash
//! may come between a rename and the next journal write. Every journal
//! write and every step passes a failpoint named after it
//! (`restore:journal:<phase>[:<k>]`, `restore:aside:<i>`, `restore:stop-app`…),
//! which is how the crash test enumerates every instant of a restore.
//!
//! `--resume` loads the journal and continues the same loop: forward from
//! `Stopping`…`Started` (the stores are verified and staged), backward from
//! `RollingBack`, cleanup from `Checked`/`Cleaning`. Before moving any
//! store it stops the broker again (a reboot starts it by itself, on
//! whatever the data directory holds; the stop also stands down a pause
//! watchdog a killed backup may have left), and a store the broker created
//! meanwhile is displaced and kept, never overwritten or deleted. Areas in
//! `Staged`/`Imported` changed no message and are simply removed.
//!
//! The second method (`replay`: publish the decoded messages into a running
//! broker) is `Method::Replay`: `Imported ──▶ Replaying ──counts──▶ Cleaning
//! ──▶ Done`, the broker never stopped, the confirmed position of every queue
//! in `replay.json` (`src/replay/progress.rs`); it has no rollback (what was
//! published stays published; `--resume` continues after the last confirmed
//! message, and `--exclude-routing-key` is applied in flight).
//!
//! A swap whose snapshot holds quorum queues or streams as logical records
//! (which no file swap brings back) replays them once the swapped node runs
//! and its classic counts are accepted (`--method auto`; the journal's
//! `replay` names them): from `Replaying` on it is a replay, finished by
//! `--resume`, never rolled back; the previous stores wait in the work area
//! until `Cleaning`. [`Machine::advance`] is the one place that dispatches
//! on the method's phases.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::report::{ExclusionOutcome, QueueOutcome};
use super::swap::{self, Anomaly, Status, Step, Stores};
use crate::archive::manifest::Manifest;
use crate::error::{Kind, class, classified};
use crate::failpoint::hit;
use crate::rabbit::Imported;
use crate::rabbit::datadir::VhostDir;
use crate::staging::{MARK, Staging, replace_durably};

/// The journal file's name in the work area.
pub const JOURNAL: &str = "journal.json";
/// The snapshot's manifest, kept in the work area for `--resume`.
pub const MANIFEST: &str = "manifest.json";
/// The journal format this version writes and reads.
const VERSION: u32 = 2;

/// How the messages get onto the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Message stores moved in by rename while the broker is stopped.
    Swap,
    /// Messages decoded and published into the running broker.
    Replay,
}

/// What a replay restores, as the journal keeps it for `--resume`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySpec {
    /// The queues to replay, `(vhost, queue)`, in order.
    pub queues: Vec<(String, String)>,
    /// Empty them first (`--replace-messages`).
    pub purge: bool,
    /// Add to what they hold (`--append`).
    pub append: bool,
}

/// How far a restore got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Everything downloaded and verified into the work area, the manifest
    /// beside it; the node is untouched.
    Staged,
    /// Definitions imported (merged); messages untouched.
    Imported,
    /// Swap: the broker is to be stopped; no store moved yet.
    Stopping,
    /// Swap: the broker is stopped; stores move, step `cursor` next.
    Swapping,
    /// Swap: every staged store is in and owned right; the broker is to start.
    Swapped,
    /// Replay: messages are being published; the replay journal
    /// (`replay.json`) holds each queue's confirmed position.
    Replaying,
    /// Swap: the broker runs on the restored stores; counts to check.
    Started,
    /// Counts accepted; the exclusion (`--exclude-routing-key`) runs.
    Checked,
    /// The restore holds; the previous stores are removed or kept (`kept`).
    Cleaning,
    /// Swap: undoing, step `cursor` next, because of `cause`.
    RollingBack,
    /// Finished.
    Done,
    /// Undone: the node has its previous stores again.
    RolledBack,
    /// Failed before any store moved: nothing to undo.
    Abandoned,
}

impl Phase {
    /// Nothing is left to do.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::RolledBack | Phase::Abandoned)
    }

    /// Messages on the node may have changed (or the broker be stopped):
    /// only `--resume` may act on the work area.
    pub fn needs_resume(self) -> bool {
        !self.is_terminal() && !matches!(self, Phase::Staged | Phase::Imported)
    }

    fn label(self) -> &'static str {
        match self {
            Phase::Staged => "staged",
            Phase::Imported => "imported",
            Phase::Stopping => "stopping",
            Phase::Swapping => "swapping",
            Phase::Swapped => "swapped",
            Phase::Replaying => "replaying",
            Phase::Started => "started",
            Phase::Checked => "checked",
            Phase::Cleaning => "cleaning",
            Phase::RollingBack => "rolling-back",
            Phase::Done => "done",
            Phase::RolledBack => "rolled-back",
            Phase::Abandoned => "abandoned",
        }
    }
}

/// `--exclude-routing-key` as the journal keeps it for `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludeSpec {
    /// Routing-key globs.
    pub globs: Vec<String>,
    /// Drop instead of moving to `<queue>.excluded`.
    pub drop: bool,
}

/// The journal of one restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Journal format.
    pub version: u32,
    /// How the messages get onto the node.
    pub method: Method,
    /// Snapshot being restored.
    pub snapshot_id: String,
    /// The snapshot's node.
    pub source_node: String,
    /// The node being restored.
    pub target_node: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Vhost store directories the restore replaces (`msg_stores/vhosts/<VH>`).
    pub vhost_dirs: Vec<VhostDir>,
    /// Keep the previous stores beside the data directory.
    pub keep_old: bool,
    /// Exclusion to run once the counts are checked.
    pub exclude: Option<ExcludeSpec>,
    /// Progress.
    pub phase: Phase,
    /// Swap: which vhosts had a store when the broker was stopped.
    pub had_store: Vec<bool>,
    /// Swapping/RollingBack: the step about to be taken; earlier ones are done.
    pub cursor: usize,
    /// RollingBack/RolledBack/Abandoned: why.
    pub cause: Option<String>,
    /// Cleaning with `keep_old`: where the previous stores go.
    pub kept: Option<PathBuf>,
    /// Where stores the broker created by itself are kept.
    pub displaced_to: Option<PathBuf>,
    /// Replay: what is replayed.
    #[serde(default)]
    pub replay: Option<ReplaySpec>,
    /// The work area belongs to a cluster restore (its swapped part): kept
    /// at the end with the final journal, which tells that restore whether
    /// the swap held or was undone; the cluster restore removes it.
    #[serde(default)]
    pub nested: bool,
}

/// What the node must do for the machine (the real one talks to RabbitMQ;
/// tests use a fake on a temporary directory).
#[allow(async_fn_in_trait)]
pub trait Node {
    /// Imports (merges) definitions.
    async fn import(&self, definitions: &[u8], scratch: &Path) -> anyhow::Result<Imported>;
    /// Stops the broker (a no-op if it is stopped), standing down any
    /// pause watchdog first so nothing starts it behind the restore's back.
    async fn stop(&self) -> anyhow::Result<()>;
    /// Starts the broker (a no-op if it runs).
    async fn start(&self) -> anyhow::Result<()>;
    /// Checks the restored queues' counts against the manifest; an
    /// unexpected shortfall is an error.
    async fn check(&self, manifest: &Manifest) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)>;
    /// Runs the exclusion on the restored queues.
    async fn exclude(
        &self,
        manifest: &Manifest,
        spec: &ExcludeSpec,
    ) -> anyhow::Result<Vec<ExclusionOutcome>>;
    /// Replay: publishes the snapshot unpacked in `area/new` (continuing
    /// after the confirmed positions of `area/replay.json`), then checks
    /// the counts.
    async fn replay(
        &self,
        _area: &Path,
        _manifest: &Manifest,
        _journal: &Journal,
    ) -> anyhow::Result<(Vec<QueueOutcome>, Vec<String>)> {
        anyhow::bail!("this node cannot replay messages")
    }
}

/// What a run of the machine did, for the report.
#[derive(Debug, Default)]
pub struct Outcome {
    /// How long the broker was stopped, in ms.
    pub pause_ms: u64,
    /// The node already held the snapshot's definitions: none were sent.
    pub definitions_already_held: bool,
    /// Per-queue counts after the restore.
    pub queues: Vec<QueueOutcome>,
    /// Exclusion results.
    pub excluded: Vec<ExclusionOutcome>,
    /// Where the previous stores were kept (`--keep-old`).
    pub previous_store: Option<PathBuf>,
    /// Anything the operator should know.
    pub warnings: Vec<String>,
}

/// A restore's work area with its journal.
#[derive(Debug)]
pub struct Machine {
    area: PathBuf,
    /// The journal as last saved.
    pub journal: Journal,
    manifest: Manifest,
    outcome: Outcome,
    /// When this process stopped the broker.
    paused: Option<Instant>,
    /// This process stopped the broker and has not started it since.
    stopped: bool,
}

/// What the loop does after a failure.
enum After {
    Continue,
    Stop(anyhow::Error),
}

impl Machine {
    /// Starts the journal of a restore whose snapshot is verified and
    /// unpacked in `staging/new`: the manifest and the journal are written
    /// and synced, and the work area is kept from now on. A swap with
    /// `replay` replays those queues (logical records) after its counts.
    pub fn begin(
        staging: &mut Staging,
        manifest: &Manifest,
        target_node: &str,
        data_dir: &Path,
        keep_old: bool,
        exclude: Option<ExcludeSpec>,
        replay: Option<ReplaySpec>,
    ) -> anyhow::Result<Machine> {
        let machine = Machine::start(
            staging.path(),
            manifest,
            target_node,
            data_dir,
            (keep_old, exclude, replay),
            false,
        )?;
        staging.keep();
        Ok(machine)
    }

    /// As [`Machine::begin`], in a directory beside the data directory that
    /// the caller keeps: a cluster restore's part swapped onto the member
    /// it runs on (`crate::cluster::machine`), resumed by that restore.
    pub fn begin_in(
        area: &Path,
        manifest: &Manifest,
        target_node: &str,
        data_dir: &Path,
        keep_old: bool,
        exclude: Option<ExcludeSpec>,
        replay: Option<ReplaySpec>,
    ) -> anyhow::Result<Machine> {
        Machine::start(
            area,
            manifest,
            target_node,
            data_dir,
            (keep_old, exclude, replay),
            true,
        )
    }

    /// Writes the manifest and the first journal into `area`.
    fn start(
        area: &Path,
        manifest: &Manifest,
        target_node: &str,
        data_dir: &Path,
        (keep_old, exclude, replay): (bool, Option<ExcludeSpec>, Option<ReplaySpec>),
        nested: bool,
    ) -> anyhow::Result<Machine> {
        let area = area.to_path_buf();
        hit("restore:manifest")?;
        replace_durably(
            &area.join(MANIFEST),
            &area.join(format!("{MANIFEST}.tmp")),
            &manifest.to_json(),
        )?;
        let mut machine = Machine {
            journal: Journal {
                version: VERSION,
                method: Method::Swap,
                snapshot_id: manifest.id.clone(),
                source_node: manifest.node.name.clone(),
                target_node: target_node.to_string(),
                data_dir: data_dir.to_path_buf(),
                vhost_dirs: manifest.vhosts.iter().map(|v| v.dir.clone()).collect(),
                keep_old,
                exclude,
                phase: Phase::Staged,
                had_store: Vec::new(),
                cursor: 0,
                cause: None,
                kept: None,
                displaced_to: None,
                replay,
                nested,
            },
            area,
            manifest: manifest.clone(),
            outcome: Outcome::default(),
            paused: None,
            stopped: false,
        };
        machine.save("staged")?;
        Ok(machine)
    }

    /// The definitions were imported by the caller (a cluster restore
    /// imports them once for every part): `Staged` becomes `Imported`.
    pub fn imported_elsewhere(&mut self) -> anyhow::Result<()> {
        if self.journal.phase == Phase::Staged {
            self.enter(Phase::Imported)?;
        }
        Ok(())
    }

    /// As [`Machine::begin`], for a replay of `spec`.
    pub fn begin_replay(
        staging: &mut Staging,
        manifest: &Manifest,
        target_node: &str,
        data_dir: &Path,
        exclude: Option<ExcludeSpec>,
        spec: ReplaySpec,
    ) -> anyhow::Result<Machine> {
        let mut machine = Machine::begin(
            staging,
            manifest,
            target_node,
            data_dir,
            false,
            exclude,
            Some(spec),
        )?;
        machine.journal.method = Method::Replay;
        machine.journal.vhost_dirs.clear();
        machine.save("staged")?;
        Ok(machine)
    }

    /// Loads the journal and manifest of an earlier restore's work area.
    pub fn load(area: &Path) -> anyhow::Result<Machine> {
        let path = area.join(JOURNAL);
        let text = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let journal: Journal = serde_json::from_slice(&text).map_err(|e| {
            anyhow::anyhow!("{} is damaged or from another version: {e}", path.display())
        })?;
        if journal.version != VERSION {
            anyhow::bail!(
                "{} has journal version {}, this rabbitmq-backup reads version {VERSION}",
                path.display(),
                journal.version
            );
        }
        let manifest =
            Manifest::from_json(&std::fs::read(area.join(MANIFEST))?, "of the work area")?;
        Ok(Machine {
            area: area.to_path_buf(),
            journal,
            manifest,
            outcome: Outcome::default(),
            paused: None,
            stopped: false,
        })
    }

    /// A swap that replays logical records (quorum queues, streams) once
    /// the swapped node runs.
    pub fn replays_after_swap(&self) -> bool {
        self.journal.method == Method::Swap
            && self
                .journal
                .replay
                .as_ref()
                .is_some_and(|r| !r.queues.is_empty())
    }

    /// The work area.
    pub fn area(&self) -> &Path {
        &self.area
    }

    /// The snapshot's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn stores(&self) -> Stores {
        Stores::new(&self.area, &self.journal.data_dir, &self.journal.vhost_dirs)
    }

    /// Writes the journal (synced); `label` names the failpoint before it.
    fn save(&mut self, label: &str) -> anyhow::Result<()> {
        hit(&format!("restore:journal:{label}"))?;
        replace_durably(
            &self.area.join(JOURNAL),
            &self.area.join(format!("{JOURNAL}.tmp")),
            &serde_json::to_vec_pretty(&self.journal)?,
        )?;
        Ok(())
    }

    /// A transition: the new phase is journalled before its work starts.
    fn enter(&mut self, phase: Phase) -> anyhow::Result<()> {
        self.journal.phase = phase;
        match phase {
            Phase::Swapping | Phase::RollingBack => {
                self.journal.cursor = 0;
                self.save(&format!("{}:0", phase.label()))
            }
            _ => self.save(phase.label()),
        }
    }

    /// What `--resume` will do from here, in a sentence.
    pub fn next_action(&self) -> String {
        let vhosts = self.journal.vhost_dirs.len();
        let then_replay = if self.replays_after_swap() {
            ", then replay the quorum queues and streams (logical records)"
        } else {
            ""
        };
        match self.journal.phase {
            Phase::Staged | Phase::Imported => {
                "nothing: no message was touched; the work area is removed".into()
            }
            Phase::Stopping | Phase::Swapping => format!(
                "stop the broker, finish moving the snapshot's stores in ({vhosts} vhosts), start the broker, check the counts (rolling back if they are wrong){then_replay}"
            ),
            Phase::Swapped => format!(
                "start the broker on the restored stores and check the counts (rolling back if they are wrong){then_replay}"
            ),
            Phase::Started => format!(
                "check the counts (rolling back if they are wrong){then_replay}, then clean up"
            ),
            Phase::Replaying => format!(
                "publish the rest of the snapshot's {}messages, after the last confirmed one (the broker keeps running; at most one window of messages per interrupted queue may be published twice), then check the counts{}",
                if self.replays_after_swap() { "quorum queues' and streams' " } else { "" },
                if self.replays_after_swap() { " and remove or keep the previous stores" } else { "" }
            ),
            Phase::Checked if self.replays_after_swap() => "run the exclusion again, replay the quorum queues and streams (logical records), then remove or keep the previous stores".into(),
            Phase::Checked => "run the exclusion again, then remove or keep the previous stores".into(),
            Phase::Cleaning => "remove or keep the previous stores".into(),
            Phase::RollingBack => format!(
                "stop the broker, finish putting the previous stores back ({vhosts} vhosts), start the broker (the restore failed: {})",
                self.journal.cause.as_deref().unwrap_or("unknown cause")
            ),
            Phase::Done | Phase::RolledBack | Phase::Abandoned => "nothing: the restore had ended".into(),
        }
    }

    /// Runs a fresh restore from `Staged` to its end.
    pub async fn run<N: Node>(&mut self, node: &N, definitions: &[u8]) -> anyhow::Result<Outcome> {
        self.drive(node, Some(definitions)).await
    }

    /// Finishes or undoes an interrupted restore, after putting the broker
    /// in the state the journal's phase needs.
    pub async fn resume<N: Node>(&mut self, node: &N) -> anyhow::Result<Outcome> {
        self.check_steps()?;
        match self.journal.phase {
            // A reboot starts the broker on whatever the data directory
            // holds: stop it before any store moves.
            Phase::Swapping | Phase::RollingBack => {
                if let Err(e) = node.stop().await {
                    return Err(self.attention(e.context(
                        "cannot stop the broker, so no store was moved; run `rabbitmq-backup restore --resume` again once rabbitmqctl works",
                    )));
                }
                self.paused = Some(Instant::now());
                self.stopped = true;
            }
            // The broker must run for the checks, the exclusion, the replay
            // after a swap, and to end.
            Phase::Started | Phase::Checked | Phase::Cleaning | Phase::Replaying
                if self.journal.phase != Phase::Replaying || self.replays_after_swap() =>
            {
                if let Err(e) = node.start().await {
                    return match self.failed(node, e).await {
                        After::Continue => self.drive(node, None).await,
                        After::Stop(e) => Err(e),
                    };
                }
            }
            _ => {}
        }
        self.drive(node, None).await
    }

    /// Refuses a work area whose stores contradict the journal: some step
    /// before the cursor is not done.
    fn check_steps(&self) -> anyhow::Result<()> {
        let stores = self.stores();
        let steps = match self.journal.phase {
            Phase::Swapping => swap::forward(&self.journal.had_store),
            Phase::RollingBack => swap::backward(self.journal.vhost_dirs.len()),
            _ => return Ok(()),
        };
        for step in steps.iter().take(self.journal.cursor) {
            if stores.status(*step) == Status::Todo {
                return Err(self.attention(anyhow::Error::new(Anomaly(format!(
                    "the journal says {step:?} is done but the files say otherwise; something else changed the stores"
                )))));
            }
        }
        Ok(())
    }

    async fn drive<N: Node>(
        &mut self,
        node: &N,
        definitions: Option<&[u8]>,
    ) -> anyhow::Result<Outcome> {
        loop {
            if self.journal.phase.is_terminal() {
                return self.end();
            }
            if let Err(e) = self.advance(node, definitions).await {
                match self.failed(node, e).await {
                    After::Continue => {}
                    After::Stop(e) => return Err(e),
                }
            }
        }
    }

    /// One transition from the current phase.
    async fn advance<N: Node>(
        &mut self,
        node: &N,
        definitions: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        match self.journal.phase {
            Phase::Staged => {
                let definitions = definitions
                    .ok_or_else(|| anyhow::anyhow!("the definitions to import are not at hand"))?;
                hit("restore:import")?;
                let imported = node.import(definitions, &self.area).await.map_err(|e| {
                    e.context("cannot import the snapshot's definitions; the node's messages are untouched")
                })?;
                self.outcome.definitions_already_held = imported == Imported::AlreadyHeld;
                self.enter(Phase::Imported)
            }
            Phase::Imported => {
                crate::signals::check()?;
                match self.journal.method {
                    Method::Swap => self.enter(Phase::Stopping),
                    Method::Replay => self.enter(Phase::Replaying),
                }
            }
            Phase::Replaying => {
                hit("restore:replay")?;
                let (queues, warnings) = node
                    .replay(&self.area, &self.manifest, &self.journal)
                    .await?;
                // After a swap, beside the classic queues' counts.
                self.outcome.queues.extend(queues);
                self.outcome.warnings.extend(warnings);
                // The exclusion happened in flight.
                self.enter_cleaning()
            }
            Phase::Stopping => {
                tracing::info!("stopping the broker (stop_app) to swap the message stores in");
                hit("restore:stop-app")?;
                node.stop().await?;
                self.paused = Some(Instant::now());
                self.stopped = true;
                self.journal.had_store = self.stores().present();
                self.enter(Phase::Swapping)
            }
            Phase::Swapping => {
                let steps = swap::forward(&self.journal.had_store);
                self.take_steps(&steps, Phase::Swapping)?;
                hit("restore:chown")?;
                self.stores().fix_owner()?;
                self.enter(Phase::Swapped)
            }
            Phase::Swapped => {
                hit("restore:start-app")?;
                // From here the broker's state is unknown until start returns.
                self.stopped = false;
                node.start().await?;
                if let Some(paused) = self.paused {
                    self.outcome.pause_ms = paused.elapsed().as_millis() as u64;
                    tracing::info!(
                        "the broker is running again on the restored data after a pause of {} ms",
                        self.outcome.pause_ms
                    );
                }
                self.enter(Phase::Started)
            }
            Phase::Started => {
                hit("restore:check-counts")?;
                let (queues, warnings) = node.check(&self.manifest).await?;
                self.outcome.queues = queues;
                self.outcome.warnings.extend(warnings);
                if self.journal.exclude.is_some() {
                    self.enter(Phase::Checked)
                } else {
                    self.after_exclusion()
                }
            }
            Phase::Checked => {
                if let Some(spec) = self.journal.exclude.clone() {
                    hit("restore:exclude")?;
                    self.outcome.excluded = node.exclude(&self.manifest, &spec).await?;
                }
                self.after_exclusion()
            }
            Phase::Cleaning => {
                let stores = self.stores();
                if let Some(old) = stores.old_stores() {
                    match self.journal.kept.clone() {
                        Some(kept) => {
                            hit("restore:keep-old")?;
                            swap::rename_durably(&old, &kept)?;
                            self.outcome.previous_store = Some(kept);
                        }
                        None => {
                            hit("restore:remove-old")?;
                            std::fs::remove_dir_all(&old)?;
                        }
                    }
                } else if let Some(kept) = self.journal.kept.clone().filter(|k| k.exists()) {
                    self.outcome.previous_store = Some(kept);
                }
                self.enter(Phase::Done)
            }
            Phase::RollingBack => {
                if !self.stopped {
                    hit("restore:rollback:stop-app")?;
                    node.stop().await?;
                    self.stopped = true;
                }
                let steps = swap::backward(self.journal.vhost_dirs.len());
                self.take_steps(&steps, Phase::RollingBack)?;
                hit("restore:rollback:start-app")?;
                self.stopped = false;
                node.start().await?;
                self.enter(Phase::RolledBack)
            }
            Phase::Done | Phase::RolledBack | Phase::Abandoned => Ok(()),
        }
    }

    /// The swapped node's counts are accepted and the exclusion ran: the
    /// logical records are replayed next, if there are any.
    fn after_exclusion(&mut self) -> anyhow::Result<()> {
        if self.replays_after_swap() {
            self.enter(Phase::Replaying)
        } else {
            self.enter_cleaning()
        }
    }

    fn enter_cleaning(&mut self) -> anyhow::Result<()> {
        if self.journal.keep_old && self.journal.kept.is_none() {
            self.journal.kept = Some(self.beside("previous")?);
        }
        self.enter(Phase::Cleaning)
    }

    /// A fresh path beside the data directory (never reused: `--keep-old`
    /// twice with the same snapshot keeps both).
    fn beside(&self, what: &str) -> anyhow::Result<PathBuf> {
        let dir_name = self
            .journal
            .data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = crate::repo::snapshot_id::new_id(time::OffsetDateTime::now_utc());
        Ok(crate::staging::parent_of(&self.journal.data_dir)?
            .join(format!("{MARK}-{what}-{dir_name}-{stamp}")))
    }

    /// Takes every step not yet done, journalling each intent first.
    fn take_steps(&mut self, steps: &[Step], phase: Phase) -> anyhow::Result<()> {
        let stores = self.stores();
        for (k, step) in steps.iter().enumerate().skip(self.journal.cursor) {
            if stores.status(*step) != Status::Todo {
                continue;
            }
            if self.journal.cursor != k {
                self.journal.cursor = k;
                self.save(&format!("{}:{k}", phase.label()))?;
            }
            hit(&step.point())?;
            if stores.occupied(*step) {
                self.displace(&stores, *step)?;
            }
            stores.take(*step)?;
        }
        self.journal.cursor = steps.len();
        Ok(())
    }

    /// Moves aside a store the broker created by itself where ours goes.
    fn displace(&mut self, stores: &Stores, step: Step) -> anyhow::Result<()> {
        hit(&format!("{}:displace", step.point()))?;
        let to = stores.displace(step)?;
        tracing::warn!(
            "the broker was started while the restore was interrupted (a reboot?) and created {}; moved to {}",
            stores.current(step.vhost()).display(),
            to.display()
        );
        Ok(())
    }

    /// Decides what a failure in the current phase leads to.
    async fn failed<N: Node>(&mut self, node: &N, e: anyhow::Error) -> After {
        if e.downcast_ref::<Anomaly>().is_some() {
            return After::Stop(self.attention(e));
        }
        match self.journal.phase {
            Phase::Staged | Phase::Imported => {
                // No message was touched: nothing to keep.
                if let Err(rm) = std::fs::remove_dir_all(&self.area) {
                    tracing::warn!("could not remove the work area {}: {rm}", self.area.display());
                }
                After::Stop(e)
            }
            Phase::Stopping => {
                // No store moved: starting the broker again is safe.
                tracing::error!("{e:#}");
                if let Err(start) = node.start().await {
                    return After::Stop(self.attention(e.context(format!(
                        "and starting the broker again failed too ({start:#}); no message store was moved"
                    ))));
                }
                self.journal.cause = Some(format!("{e:#}"));
                match self.enter(Phase::Abandoned) {
                    Ok(()) => After::Continue,
                    Err(j) => After::Stop(self.attention(j)),
                }
            }
            Phase::Swapping | Phase::Swapped | Phase::Started => {
                tracing::error!("{e:#}; rolling back to the previous message stores");
                self.journal.cause = Some(format!("{e:#}"));
                match self.enter(Phase::RollingBack) {
                    Ok(()) => After::Continue,
                    Err(j) => After::Stop(self.attention(e.context(format!("{j:#}")))),
                }
            }
            Phase::Checked => After::Stop(
                e.context(crate::hooks::SkipAfter)
                    .context(class(
                        Kind::NeedsAttention,
                        format!(
                            "the snapshot's messages are restored and checked, but excluding messages failed, so --after was NOT run; the previous stores are kept in {}. Fix the cause, then run `rabbitmq-backup restore --resume` to run the exclusion again and finish",
                            self.area.display()
                        ),
                    )),
            ),
            Phase::Cleaning | Phase::RollingBack | Phase::Replaying => {
                After::Stop(self.attention(e))
            }
            Phase::Done | Phase::RolledBack | Phase::Abandoned => After::Stop(e),
        }
    }

    /// An error that leaves the work area for `--resume` (exit 8).
    fn attention(&self, e: anyhow::Error) -> anyhow::Error {
        let node = &self.journal.target_node;
        if self.replays_after_swap() && self.journal.phase == Phase::Replaying {
            return e.context(class(
                Kind::NeedsAttention,
                format!(
                    "the restore of snapshot {} onto {node} swapped the classic queues' stores in and checked them, then the replay of the quorum queues and streams stopped; the broker keeps running and holds the messages confirmed so far. The work area {} holds the snapshot, the replay journal and the previous message stores: fix the cause, then run `rabbitmq-backup restore --resume` to publish the rest",
                    self.journal.snapshot_id,
                    self.area.display()
                ),
            ));
        }
        if self.journal.method == Method::Replay {
            return e.context(class(
                Kind::NeedsAttention,
                format!(
                    "the replay of snapshot {} onto {node} stopped at phase {:?}; the broker keeps running and holds the messages confirmed so far. The work area {} holds the snapshot and the replay journal: fix the cause, then run `rabbitmq-backup restore --resume` to publish the rest",
                    self.journal.snapshot_id,
                    self.journal.phase,
                    self.area.display()
                ),
            ));
        }
        e.context(class(
            Kind::NeedsAttention,
            format!(
                "the restore of snapshot {} onto {node} stopped at phase {:?}; the broker may be stopped. The work area {} holds its journal and the previous message stores: run `rabbitmq-backup restore --resume` to finish or undo it",
                self.journal.snapshot_id,
                self.journal.phase,
                self.area.display()
            ),
        ))
    }

    /// A terminal phase: keeps what the broker created by itself, removes
    /// the work area, and reports.
    fn end(&mut self) -> anyhow::Result<Outcome> {
        let stores = self.stores();
        if let Some(displaced) = stores.displaced() {
            let to = match self.journal.displaced_to.clone() {
                Some(to) => to,
                None => {
                    let to = self.beside("displaced")?;
                    self.journal.displaced_to = Some(to.clone());
                    self.save(&format!("{}:displaced", self.journal.phase.label()))?;
                    to
                }
            };
            hit("restore:keep-displaced")?;
            swap::rename_durably(&displaced, &to)?;
        }
        if let Some(to) = self.journal.displaced_to.as_ref().filter(|p| p.exists()) {
            self.outcome.warnings.push(format!(
                "the broker was started while the restore was interrupted (a reboot?) and created new stores; they hold any message published meanwhile and are kept in {}",
                to.display()
            ));
        }
        if stores.old_stores().is_some() {
            return Err(self.attention(anyhow::anyhow!(
                "the restore ended but its old/ directory still holds stores"
            )));
        }
        if !self.journal.nested {
            hit("restore:remove-area")?;
            if let Err(e) = std::fs::remove_dir_all(&self.area) {
                self.outcome.warnings.push(format!(
                    "could not remove the work area {}: {e}",
                    self.area.display()
                ));
            }
        }
        let node = &self.journal.target_node;
        let cause = self.journal.cause.clone().unwrap_or_default();
        match self.journal.phase {
            Phase::RolledBack => Err(classified(
                Kind::RolledBack,
                format!(
                    "the restore failed and node {node} was rolled back to its previous messages (definitions stay imported): {cause}"
                ),
            )),
            Phase::Abandoned => Err(anyhow::anyhow!(
                "the restore failed before any message store was moved; node {node} runs on its previous messages (definitions stay imported): {cause}"
            )),
            _ => Ok(std::mem::take(&mut self.outcome)),
        }
    }
}

/// Sorts the work areas of earlier restores of the node with `data_dir`.
/// Call only while holding the [`crate::staging::NodeLock`]. Areas whose
/// restore changed no message (no journal, `Staged`, `Imported`) or ended
/// are stale: removed (unless `look_only`) and returned second.
/// Interrupted ones are returned first, for `--resume`, and so is any area
/// that still holds stores in `old/` or `displaced/`, whatever its phase.
/// An area whose journal cannot be read is an error, never a removal: it
/// may hold the node's previous stores.
pub fn sweep(data_dir: &Path, look_only: bool) -> anyhow::Result<(Vec<Machine>, Vec<PathBuf>)> {
    let mut pending = Vec::new();
    let mut stale = Vec::new();
    for area in crate::staging::areas(data_dir, "restore")? {
        let holds_stores =
            swap::non_empty(&area.join("old")) || swap::non_empty(&area.join("displaced"));
        if !area.join(JOURNAL).exists() && !holds_stores {
            stale.push(area); // killed before the journal: nothing was touched
            continue;
        }
        let machine = Machine::load(&area).map_err(|e| {
            e.context(class(
                Kind::NeedsAttention,
                format!(
                    "the journal of an earlier restore in {} cannot be read; its old/ directory may hold the node's previous message stores: inspect it and move it away by hand",
                    area.display()
                ),
            ))
        })?;
        if machine.journal.phase.needs_resume() || holds_stores {
            pending.push(machine);
        } else {
            stale.push(area);
        }
    }
    if !look_only {
        for area in &stale {
            std::fs::remove_dir_all(area)?;
        }
    }
    Ok((pending, stale))
}

/// The work area of an interrupted restore of the node, if there is one
/// (a backup must not copy a half-restored node, nor stop it).
pub fn interrupted(data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok(sweep(data_dir, true)?.0.first().map(|m| m.area.clone()))
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
