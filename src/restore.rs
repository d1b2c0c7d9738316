//! Restore (§6): put a snapshot's definitions and messages onto a node, so
//! that the node ends with exactly its previous messages or exactly the
//! snapshot's, whatever instant a crash comes at.
//!
//! - [`plan`]: the checks that decide whether a restore may go on, made
//!   before anything is downloaded where they can be (a dry run predicts
//!   the same refusals);
//! - [`fetch`]: download and verify everything into a work area beside the
//!   data directory before the node is touched;
//! - [`machine`]: THE state machine (phases, journal, transitions, what
//!   `--resume` does), with [`swap`] its filesystem steps and [`node`] the
//!   broker it drives;
//! - [`check`]: the counts after the broker started on the restored stores;
//! - [`report`]: what a restore did, as `--json` and as text.

pub mod check;
pub mod fetch;
pub mod machine;
pub mod node;
pub mod plan;
pub mod replay;
pub mod report;
pub mod swap;
