//! Talking to a RabbitMQ node: the management HTTP API, `rabbitmqctl`, and
//! the layout of its data directory.

pub mod ctl;
pub mod datadir;
pub mod http;
