//! The transport-floor probe (`roomcast-dev floor`) measures what it claims: every server kind
//! delivers every frame it hands to the transport to a real client process-side reader (no
//! loss on loopback at a low rate), and the batched variants really batch their sends.

use roomcast_e2e::cluster::Certs;
use roomcast_e2e::floor::hops::{self, MsgPath};
use roomcast_e2e::floor::{self, FloorArgs, Kind};

#[test]
fn every_server_kind_delivers_everything_and_the_batched_ones_batch() {
    let certs = Certs::for_tests().expect("certificates");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_roomcast-dev"));
    let kinds = vec![
        Kind::UdpSendto,
        Kind::UdpSendmmsg,
        Kind::Quinn,
        Kind::QuinnSendmmsg,
        Kind::ProtoSendto,
        Kind::ProtoSendmmsg,
    ];
    let args = FloorArgs {
        path: MsgPath::OneHop,
        kinds: kinds.clone(),
        rates: vec![40],
        // Rooms of 10, so that one message is 10 datagrams a sendmmsg can batch.
        clients: 20,
        rooms: 2,
        clients_per_endpoint: 10,
        duration: 1,
        warmup: 0,
        callgrind: false,
        certs: certs.dir.clone(),
    };
    let runs = floor::run(&bin, args).expect("probe runs");
    assert_eq!(runs.len(), kinds.len());
    for r in &runs {
        // 40 msg/s to rooms of 10 for 1 s: about 400 deliveries.
        assert!(
            r.deliveries >= 200,
            "{}: {} deliveries",
            r.kind,
            r.deliveries
        );
        assert_eq!(r.lost, 0, "{}: lost deliveries", r.kind);
        assert_eq!(r.client_errors, 0, "{}: client errors", r.kind);
        let batched = r.kind.ends_with("sendmmsg");
        if batched {
            assert!(
                r.send_calls_per_delivery < 0.5,
                "{} sends {} calls per delivery",
                r.kind,
                r.send_calls_per_delivery
            );
        } else {
            assert!(
                r.send_calls_per_delivery >= 0.9,
                "{} sends {} calls per delivery",
                r.kind,
                r.send_calls_per_delivery
            );
        }
    }
}

/// The multi-hop probe (`roomcast-dev floor --path backend|direct`) carries every message over
/// its hops (a real redis-server, two edge processes, a backend process on `backend`): every
/// request is answered, every member reads every message of its room, nothing is lost, and
/// both latencies and the CPU readings of every process are recorded.
#[test]
fn the_multi_hop_paths_deliver_every_message_to_every_member() {
    let certs = Certs::for_tests().expect("certificates");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_roomcast-dev"));
    for path in [MsgPath::Backend, MsgPath::Direct] {
        let args = FloorArgs {
            path,
            kinds: vec![Kind::Quinn],
            rates: vec![20],
            // Rooms of 10, 5 members on each edge.
            clients: 40,
            rooms: 4,
            clients_per_endpoint: 10,
            duration: 1,
            warmup: 0,
            callgrind: false,
            certs: certs.dir.clone(),
        };
        let runs = hops::run(&bin, args).expect("probe runs");
        assert_eq!(runs.len(), 1);
        let r = &runs[0];
        assert_eq!(r.path, path.name());
        // 20 msg/s to rooms of 10 for 1 s: about 200 deliveries.
        assert!(r.deliveries >= 100, "{r:?}");
        assert_eq!(r.lost, 0, "{r:?}");
        assert_eq!(r.dropped, 0, "{r:?}");
        assert_eq!(r.short_members, 0, "{r:?}");
        assert_eq!((r.send_errors, r.client_errors), (0, 0), "{r:?}");
        assert!(
            r.p50_us > 0 && r.p99_us >= r.p50_us && r.max_us >= r.p99_us,
            "{r:?}"
        );
        assert!(r.answer_p50_us > 0, "{r:?}");
        assert_eq!(
            r.backend_cpu_us_per_delivery.is_some(),
            path == MsgPath::Backend
        );
    }
}

/// The idle probe (`roomcast-dev floor idle`) establishes every connection on every kind of
/// server, keeps them open through the settling time, and reads a memory growth that is not
/// zero and is ordered as the servers are built: a QUIC connection with its TLS state costs
/// kilobytes, a UDP peer entry far less.
#[test]
fn the_idle_probe_holds_every_connection_and_measures_its_memory() {
    use roomcast_e2e::floor::idle::{self, IdleArgs, IdleKind, Variant};
    let certs = Certs::for_tests().expect("certificates");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_roomcast-dev"));
    let n = 300;
    let args = IdleArgs {
        kinds: vec![IdleKind::Udp, IdleKind::Quinn, IdleKind::Proto],
        variants: vec![Variant::Edge, Variant::Lean],
        connections: n,
        clients_per_endpoint: 100,
        settle: 1,
        connect_timeout: 120,
        heaptrack: false,
        certs: certs.dir.clone(),
    };
    let runs = idle::run(&bin, args).expect("idle probe runs");
    // udp once, each QUIC kind with both variants.
    assert_eq!(runs.len(), 5);
    for r in &runs {
        assert_eq!(r.established, n as u64, "{}/{}", r.kind, r.variant);
        assert_eq!(
            r.live, n as u64,
            "{}/{}: closed while idle",
            r.kind, r.variant
        );
        assert!(
            r.rss_kib_per_connection > 0.0 && r.heap_kib_per_connection > 0.0,
            "{}/{}: {r:?}",
            r.kind,
            r.variant
        );
        if r.kind == "udp" {
            assert!(r.heap_kib_per_connection < 1.0, "udp: {r:?}");
        } else {
            // A QUIC connection's state (quinn-proto's `Connection`, TLS keys) is several KiB
            // whatever the variant; well under 100 KiB unless something leaks per connection.
            assert!(
                (4.0..100.0).contains(&r.heap_kib_per_connection),
                "{}/{}: {r:?}",
                r.kind,
                r.variant
            );
        }
    }
}
