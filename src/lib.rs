//! rabbitmq-backup: back up a RabbitMQ node's definitions and message store
//! to S3-compatible storage or a local directory, and restore it.

pub mod archive;
pub mod error;
pub mod rabbit;
pub mod repo;
