//! The pause's floor: how long RabbitMQ itself takes to stop and start its
//! application on each version, asked over the tool's own Erlang
//! distribution connection (one round trip each), beside what one question
//! costs over that connection and through `rabbitmqctl`.

use std::time::{Duration, Instant};

use rabbitmq_backup::rabbit::control::Control;
use rabbitmq_backup::rabbit::ctl::Ctl;

use crate::data::{Size, load};
use crate::harness::amqp::rt;
use crate::harness::rabbit::RabbitNode;
use crate::harness::versions::Version;
use crate::measure::median;

/// Whether the chroot of `version` is installed (the host's always is).
fn available(version: Version) -> bool {
    version == Version::HOST
        || crate::harness::process::tool_cache()
            .join("chroots")
            .join(version.suite())
            .join("usr/lib/rabbitmq/bin/rabbitmq-server")
            .is_file()
}

/// Medians (seconds) of stop, start, a question over distribution, and a
/// question through rabbitmqctl, on one loaded node of `version`.
fn measure(version: Version, runs: usize) -> [f64; 4] {
    let node = RabbitNode::start_version(version);
    load(&node, Size::Medium(3600));
    let ctl = Ctl::new(node.ctl_with_home(), Some(node.name.clone()));
    let (mut stop, mut start, mut ask, mut ctl_ask) = (vec![], vec![], vec![], vec![]);
    rt().block_on(async {
        let control = Control::connect(ctl.clone(), &node.name, None, Some(&node.home())).await;
        let via_ctl = Control::rabbitmqctl(ctl);
        for _ in 0..runs {
            let t = Instant::now();
            control.stop_app(None).await.unwrap();
            stop.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            control.start_app().await.unwrap();
            start.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            assert!(control.app_running().await.unwrap());
            ask.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            assert!(via_ctl.app_running().await.unwrap());
            ctl_ask.push(t.elapsed().as_secs_f64());
            // Let the restarted broker settle like a production one.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    [median(stop), median(start), median(ask), median(ctl_ask)]
}

/// Prints the table; returns the host version's stop + start (seconds).
pub fn print(runs: usize) -> Option<f64> {
    println!(
        "\n### The pause's floor: RabbitMQ's own stop_app and start_app (3600 messages loaded; medians of {runs})\n"
    );
    println!(
        "| RabbitMQ (Erlang/OTP) | stop_app | start_app | stop + start | one question over distribution | one question via rabbitmqctl |"
    );
    println!("|---|---|---|---|---|---|");
    let mut host = None;
    for version in Version::ALL {
        if !available(version) {
            println!("| {version} | not installed | | | | |");
            continue;
        }
        let [stop, start, ask, ctl_ask] = measure(version, runs);
        if version == Version::HOST {
            host = Some(stop + start);
        }
        println!(
            "| {version} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} ms | {:.0} ms |",
            stop * 1e3,
            start * 1e3,
            (stop + start) * 1e3,
            ask * 1e3,
            ctl_ask * 1e3
        );
    }
    host
}
