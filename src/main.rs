//! The `rabbitmq-backup` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(rabbitmq_backup::run())
}
