//! The snapshot archive: a tar stream of `definitions.json` and the message
//! store, cut into compressed, content-addressed chunks, with a manifest.

pub mod chunker;
pub mod digests;
pub mod frames;
pub mod manifest;
pub mod paths;
pub mod reader;
pub mod writer;
