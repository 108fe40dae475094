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
