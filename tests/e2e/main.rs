//! End-to-end tests: the real binary against private RabbitMQ nodes and a
//! Garage S3 server, all started by the harness on loopback.

mod harness;

mod backup;
mod capture;
mod cluster;
mod crash;
mod dist;
mod encryption;
mod exclude;
mod hardening;
mod messages;
mod mistakes;
mod operator;
mod pause;
mod reliability;
mod replay;
mod restore;
mod restore_safety;
mod retention;
mod storage;
mod versions;
