//! Starts the capture server on the node (`server.erl`): one evaluation
//! that answers where the server listens and the token it expects.

use anyhow::Context;

use super::channel::Endpoint;
use crate::rabbit::control::Control;

/// Starts a capture server on the node (the expressions in `server.erl`,
/// [`crate::rabbit::exprs::CAPTURE_SERVER`]); it waits a minute for the tool.
pub async fn start(control: &Control) -> anyhow::Result<Endpoint> {
    control
        .start_capture_server()
        .await
        .context("cannot start the capture of quorum queues and streams on the node")
}
