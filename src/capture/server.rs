//! Starts the capture server on the node (`server.erl`): one evaluation
//! that answers where the server listens and the token it expects.

use anyhow::Context;

use super::channel::Endpoint;
use crate::rabbit::ctl::Ctl;

/// The server's Erlang expressions (documented in the file itself).
pub const SERVER: &str = include_str!("server.erl");

/// Starts a capture server on the node; it waits a minute for the tool.
pub async fn start(ctl: &Ctl) -> anyhow::Result<Endpoint> {
    let answer = ctl
        .eval_binary(SERVER)
        .await
        .context("cannot start the capture of quorum queues and streams on the node")?;
    serde_json::from_slice(&answer).with_context(|| {
        format!(
            "unexpected answer when starting the capture on the node: {}",
            String::from_utf8_lossy(&answer)
        )
    })
}
