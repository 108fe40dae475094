//! The transport-floor probe (`roomcast-dev floor`) measures what it claims: every server kind
//! delivers every frame it hands to the transport to a real client process-side reader (no
//! loss on loopback at a low rate), and the batched variants really batch their sends.

use roomcast_e2e::cluster::Certs;
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
