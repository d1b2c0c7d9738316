//! The Erlang distribution client against real nodes of every version
//! Debian ships (OTP 23, 25, 27, 29: the handshake changed over those).

use std::time::Duration;

use erl_dist::term::{Binary, Term};
use rabbitmq_backup::rabbit::dist::{CallError, Distribution, cookie};

use crate::harness::rabbit::RabbitNode;
use crate::harness::versions::Version;

const PATIENCE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects with the cookie from the node's HOME, evaluates expressions
/// with bindings, decodes JSON, and reports a raised error as such.
fn talks_to(version: Version) {
    let node = RabbitNode::start_version(version);
    runtime().block_on(async {
        let cookie = cookie::find(None, Some(&node.home())).unwrap();
        let dist = Distribution::connect(&node.name, &cookie).await.unwrap();
        let name = dist
            .eval("atom_to_binary(node(), utf8).", vec![], PATIENCE)
            .await
            .unwrap();
        assert_eq!(name, Term::from(Binary::from(node.name.as_bytes())));
        let json = dist
            .eval(
                "rabbit_json:encode(#{<<\"v\">> => V, <<\"running\">> => rabbit:is_running()}).",
                vec![("V", Binary::from("vhost ü\"x".as_bytes()).into())],
                PATIENCE,
            )
            .await
            .unwrap();
        let Term::Binary(b) = json else {
            panic!("{json}")
        };
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v["v"], "vhost ü\"x");
        assert!(v["running"].is_boolean(), "{v}");
        let err = dist.eval("1 = 2.", vec![], PATIENCE).await.unwrap_err();
        assert!(
            matches!(&err, CallError::Raised { class, .. } if class == "error"),
            "{err}"
        );
        // Many questions on one connection, concurrently.
        let answers = futures::future::join_all((0..20).map(|i| {
            dist.eval(
                "N * 2.",
                vec![("N", Term::from(erl_dist::term::FixInteger::from(i)))],
                PATIENCE,
            )
        }))
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(
                a.unwrap(),
                Term::from(erl_dist::term::FixInteger::from(2 * i as i32))
            );
        }
    });
}

#[test]
fn distribution_on_3_8() {
    talks_to(Version::V3_8);
}

#[test]
fn distribution_on_3_10() {
    talks_to(Version::V3_10);
}

#[test]
fn distribution_on_4_0() {
    talks_to(Version::V4_0);
}

#[test]
fn distribution_on_4_3() {
    talks_to(Version::V4_3);
}
