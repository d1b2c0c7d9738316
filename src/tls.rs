//! The one TLS stack: rustls 0.23 with the `ring` crypto provider, for S3
//! (aws-smithy-http-client), the management API (hyper-rustls) and `amqps://`
//! (lapin) alike. `scripts/check-deps` fails the build on a second stack.
//!
//! Why ring rather than aws-lc-rs: it compiles from Rust and a little
//! assembly in seconds where aws-lc builds a large C library (minutes on a
//! 2-core CI machine, and a C toolchain for every cross target), and it
//! makes the binary smaller. What aws-lc-rs would add — FIPS mode and
//! post-quantum key exchange — nothing here asks for; revisit if that changes.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every TLS client of this process uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes [`provider`] the process default, for the clients that look it up
/// (lapin). Safe to call more than once.
pub fn install_default_provider() {
    // Err means a provider is installed already: ours, as nothing else installs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM bundle of extra CAs named by `AWS_CA_BUNDLE` (the AWS CLI's
/// setting), if set: trusted beside the system's roots for S3.
pub fn aws_ca_bundle() -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let pem = std::fs::read(&path).map_err(|e| {
        crate::error::usage(format!(
            "cannot read AWS_CA_BUNDLE {}: {e}",
            std::path::Path::new(&path).display()
        ))
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(crate::error::usage(format!(
            "AWS_CA_BUNDLE {} holds no PEM certificate",
            std::path::Path::new(&path).display()
        )));
    }
    Ok(Some(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_ring_and_installs_once() {
        install_default_provider();
        install_default_provider();
        let installed = CryptoProvider::get_default().expect("installed");
        // ring's suites, in ring's order: the same provider.
        assert_eq!(
            format!("{:?}", installed.cipher_suites),
            format!("{:?}", provider().cipher_suites)
        );
    }
}
