//! The test harness: private RabbitMQ nodes and a Garage server on
//! loopback, the real binary, and shared test data.

pub mod amqp;
pub mod bucket;
pub mod faults;
pub mod fixtures;
pub mod garage;
pub mod moto;
pub mod process;
pub mod rabbit;
pub mod seaweedfs;
pub mod tls;
pub mod tool;
pub mod versions;

pub use process::{free_port, set_parent_death_signal};
