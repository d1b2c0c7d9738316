//! Talking to the node on every version Debian ships (OTP 23, 25, 27, 29:
//! the distribution handshake changed over those): the Erlang distribution
//! client, and every named expression through both transports with the
//! same answers.

use std::time::Duration;

use rabbitmq_backup::etf::Term;
use rabbitmq_backup::rabbit::control::{Control, Transport, WatchdogOutcome};
use rabbitmq_backup::rabbit::ctl::Ctl;
use rabbitmq_backup::rabbit::dist::{CallError, Distribution, cookie};

use crate::harness::amqp::publish;
use crate::harness::fixtures::{classic_messages, oro_messages, topology};
use crate::harness::rabbit::RabbitNode;
use crate::harness::versions::Version;

const PATIENCE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The Erlang/OTP release each version runs on in Debian.
fn otp(version: Version) -> &'static str {
    match version {
        Version::V3_8 => "23",
        Version::V3_10 => "25",
        Version::V4_0 => "27",
        Version::V4_3 => "29",
    }
}

/// The client itself: bindings (never text) carry values, JSON decodes, a
/// raised error is reported as such, and many calls share the connection.
async fn client(node: &RabbitNode) {
    let cookie = cookie::find(None, Some(&node.home())).unwrap();
    let dist = Distribution::connect(&node.name, &cookie).await.unwrap();
    let json = dist
        .eval(
            "rabbit_json:encode(#{<<\"v\">> => V, <<\"node\">> => node()}).",
            vec![("V", Term::Binary("vhost ü\"'x".as_bytes()))],
            PATIENCE,
        )
        .await
        .unwrap();
    let Ok(Term::Binary(b)) = json.term() else {
        panic!("{json:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(b).unwrap();
    assert_eq!(v["v"], "vhost ü\"'x");
    assert_eq!(v["node"], node.name.as_str());
    let err = dist.eval("1 = 2.", vec![], PATIENCE).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Raised { class, reason } if class == "error" && reason.contains("badmatch")),
        "{err}"
    );
    let answers = futures::future::join_all(
        (0..20).map(|i| dist.eval("N * 2.", vec![("N", Term::Int(i))], PATIENCE)),
    )
    .await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap().term().unwrap(), Term::Int(2 * i as i128));
    }
    // Every kind of term the node may answer decodes: pids, references,
    // funs, big numbers, floats, maps, long binaries, improper lists.
    let all = dist
        .eval(
            "{self(), make_ref(), fun() -> ok end, 1 bsl 100, -2.5, #{a => [1|2]}, \
             binary:copy(<<\"x\">>, 1000000), 'ü atom', \"str\"}.",
            vec![],
            PATIENCE,
        )
        .await
        .unwrap();
    let all = all.term().unwrap();
    let items = all.tuple().unwrap();
    assert!(
        matches!(&items[0], Term::Pid(p) if p.node == node.name),
        "{all}"
    );
    assert!(
        matches!(&items[1], Term::Ref(r) if r.node == node.name),
        "{all}"
    );
    assert!(matches!(&items[2], Term::Other(_)), "{all}");
    assert_eq!(items[3], Term::Int(1 << 100));
    assert_eq!(items[4], Term::Float(-2.5));
    assert_eq!(
        items[5].to_string(),
        "#{a => [1|2]}",
        "maps and improper lists"
    );
    assert_eq!(items[6].binary().map(<[u8]>::len), Some(1_000_000));
    assert_eq!(items[7], Term::Atom("ü atom"));
    assert_eq!(items[8], Term::Bytes(b"str"));
    // A wrong cookie is named as the likely cause.
    let wrong = cookie::find(Some(&rabbitmq_backup::settings::Secret::new("WRONG")), None).unwrap();
    let err = format!(
        "{:#}",
        Distribution::connect(&node.name, &wrong).await.unwrap_err()
    );
    assert!(err.contains("cookie"), "{err}");
}

/// Every expression through `control`: the probe, data directory, cluster,
/// AMQP listener, exact counts of classic and quorum queues, stop and start
/// with and without a watchdog, and around a start under way elsewhere.
async fn expressions(node: &RabbitNode, control: &Control, version: Version) {
    // The management API answers slightly before the boot is complete: the
    // probe waits for the boot.
    let probe = control.probe().await.unwrap();
    assert_eq!(probe.node, node.name);
    assert_eq!(probe.rabbitmq, version.number());
    assert_eq!(probe.erlang, otp(version));
    assert!(probe.running && !probe.watchdog);
    assert_eq!(probe.data_dir, node.data_dir());
    assert_eq!(control.data_dir().await.unwrap(), node.data_dir());
    let cluster = control.cluster().await.unwrap();
    assert_eq!(cluster.members, vec![node.name.as_str()], "{version}");
    assert_eq!(cluster.running, vec![node.name.as_str()], "{version}");
    // No name set by the operator: none (3.8 seeds its default at boot:
    // the node's name at the host's full name).
    let own = |n: &str| n.split('@').next().map(str::to_string);
    assert!(
        cluster.name.is_none()
            || (version == Version::V3_8
                && cluster.name.as_deref().and_then(own) == own(&node.name)),
        "{version}: {:?}",
        cluster.name
    );
    let pairs = [("/", "quorum"), ("/", "classic"), ("/", "missing")]
        .map(|(v, n)| (v.to_string(), n.to_string()));
    let leaders = control.live_leaders(&pairs).await.unwrap();
    let here = Some(node.name.clone());
    assert_eq!(
        leaders,
        vec![
            ("/".into(), "quorum".into(), here.clone()),
            ("/".into(), "classic".into(), here),
            ("/".into(), "missing".into(), None)
        ],
        "{version}"
    );
    // Already led where asked: nothing to move, nothing immovable.
    let stay = [("/".to_string(), "quorum".to_string(), node.name.clone())];
    assert!(control.transfer_leadership(&stay).await.unwrap().is_empty());
    let server: rabbitmq_backup::capture::channel::Endpoint =
        control.start_capture_server().await.unwrap();
    rabbitmq_backup::capture::channel::Channel::connect(&server)
        .await
        .unwrap();
    let (protocol, _, port) = control.amqp_listener().await.unwrap().unwrap();
    let url = node.amqp_url();
    assert_eq!(protocol, "amqp");
    assert!(url.ends_with(&format!(":{port}")), "{url} vs {port}");

    let queues = control.queues(&["/".into(), "oro".into()]).await.unwrap();
    let names: Vec<(&str, &str, &str, u64)> = queues
        .iter()
        .map(|(q, home)| {
            assert_eq!(home.as_deref(), Some(node.name.as_str()), "{version}");
            (
                q.vhost.as_str(),
                q.name.as_str(),
                q.queue_type.as_str(),
                q.messages,
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("/", "classic", "classic", 7),
            ("/", "quorum", "quorum", 4),
            ("oro", "oro.default", "classic", 6)
        ],
        "{version}"
    );
    let classic = &queues[0].0;
    assert!(classic.durable);
    assert_eq!(classic.messages_persistent, Some(7));
    assert_eq!(classic.consumers, 0);
    assert_eq!(
        (classic.policy.as_deref(), classic.message_ttl),
        (None, false)
    );

    // A backup's pause: a watchdog is left, and stood down by the start.
    control
        .stop_app(Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(!control.app_running().await.unwrap());
    let probe = control.probe().await.unwrap();
    assert!(!probe.running && probe.watchdog, "{version}");
    control.pet_watchdog().await.unwrap();
    assert_eq!(
        control.start_app().await.unwrap(),
        WatchdogOutcome::StoodDown
    );
    assert!(control.app_running().await.unwrap());
    // A restore's: no watchdog.
    control.stop_app(None).await.unwrap();
    assert_eq!(control.start_app().await.unwrap(), WatchdogOutcome::None);

    // A start under way elsewhere (the node's own boot holds the marker
    // until it has seen itself ready): the stop waits for it to end.
    let marker = BootMarker::connect(node).await;
    marker.hold(Duration::from_millis(800)).await;
    control.stop_app(None).await.unwrap();
    assert!(!marker.held().await, "{version}: stopped during a start");
    assert!(!control.app_running().await.unwrap());
    // `rabbit:start()` returns at once while the marker is held, starting
    // nothing: the start waits it out and starts the broker itself...
    marker.hold(Duration::from_millis(800)).await;
    assert_eq!(control.start_app().await.unwrap(), WatchdogOutcome::None);
    assert!(control.app_running().await.unwrap(), "{version}");
    // ...within its patience, or says why not.
    control.stop_app(None).await.unwrap();
    marker.hold(Duration::from_secs(4)).await;
    let err = control
        .start_app_within(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("did not come up within 1 s of the start (boot state stopped)"),
        "{version}: {err:#}"
    );
    control.start_app().await.unwrap();
    assert!(control.app_running().await.unwrap(), "{version}");
}

/// Holds RabbitMQ's boot marker (the registered name `rabbit_boot`) on the
/// node for a while, as a start under way does.
struct BootMarker(Distribution);

impl BootMarker {
    async fn connect(node: &RabbitNode) -> BootMarker {
        let cookie = cookie::find(None, Some(&node.home())).unwrap();
        BootMarker(Distribution::connect(&node.name, &cookie).await.unwrap())
    }

    /// Registered before this returns, for `hold`.
    async fn hold(&self, hold: Duration) {
        let ms = Term::Int(hold.as_millis() as i128);
        self.0
            .eval(
                "P = spawn(fun() -> receive go -> timer:sleep(Ms) end end), \
                 true = register(rabbit_boot, P), P ! go, ok.",
                vec![("Ms", ms)],
                PATIENCE,
            )
            .await
            .unwrap();
    }

    async fn held(&self) -> bool {
        let held = self
            .0
            .eval("is_pid(whereis(rabbit_boot)).", vec![], PATIENCE)
            .await
            .unwrap();
        held.term().unwrap() == Term::Atom("true")
    }
}

fn both_transports(version: Version) {
    let node = RabbitNode::start_version(version);
    node.import_definitions(&topology());
    publish(&node, "/", "", &classic_messages("classic", 7));
    publish(&node, "/", "", &classic_messages("quorum", 4));
    publish(&node, "oro", "oro.default", &oro_messages(6));
    runtime().block_on(async {
        client(&node).await;
        let ctl = Ctl::new(node.ctl_with_home(), Some(node.name.clone()));
        let via_dist = Control::connect(ctl.clone(), &node.name, None, Some(&node.home())).await;
        assert_eq!(via_dist.transport(), Transport::Distribution);
        expressions(&node, &via_dist, version).await;
        let via_ctl = Control::rabbitmqctl(ctl);
        assert_eq!(via_ctl.transport(), Transport::Rabbitmqctl);
        expressions(&node, &via_ctl, version).await;
    });
}

#[test]
fn node_control_on_3_8() {
    both_transports(Version::V3_8);
}

#[test]
fn node_control_on_3_10() {
    both_transports(Version::V3_10);
}

#[test]
fn node_control_on_4_0() {
    both_transports(Version::V4_0);
}

#[test]
fn node_control_on_4_3() {
    both_transports(Version::V4_3);
}
