//! The request rate limit's disconnect, with a real client flooding a real edge: refusals (429)
//! first, then the connection closed with `close::ABUSE`, while a client that stays within
//! its limits is left alone.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomcast_client::{Client, ClientError};
use roomcast_protocol::protocol::{close, code};
use support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_flood_is_disconnected_for_abuse() {
    // The default limits: 100 requests/s, bursts of 200.
    let env = Env::start(&["edge-a"], &[]);
    let mut opts = env.options(0);
    opts.reconnect = false;
    let flooder = Arc::new(
        Client::connect_direct(opts.clone(), env.edges[0].addr, "flooder")
            .await
            .unwrap(),
    );
    let calm = Client::connect_direct(opts, env.edges[0].addr, "calm")
        .await
        .unwrap();
    let query = || Bytes::from_static(br#"{"uid":"x"}"#);

    // More requests at once than the edge lets be in flight (8 streams; the rest wait for
    // stream credit), back to back.
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (flooder, ok, refused) = (flooder.clone(), ok.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(20) {
                match flooder.request("gate.queryEntry", query()).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ClientError::Request { code: c, .. }) if c == code::LIMIT_EXCEEDED => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ClientError::Closed(_)) => return,
                    // A request in flight when the edge closes may fail another way.
                    Err(_) if flooder.connection().close_code().is_some() => return,
                    Err(e) => panic!("unexpected error while flooding: {e}"),
                }
            }
        }));
    }
    // Meanwhile a calm client makes a request every 50 ms.
    let mut calm_answers = 0;
    while calm_answers < 20 {
        calm.request("gate.queryEntry", query()).await.unwrap();
        calm_answers += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, refused) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    let took = started.elapsed();
    assert_eq!(
        flooder.connection().close_code(),
        Some(close::ABUSE),
        "the flood ({ok} answered, {refused} refused in {took:?}) was not disconnected"
    );
    assert!(
        took < Duration::from_secs(15),
        "disconnected only after {took:?}"
    );
    assert!(refused >= 50, "429s came first: {refused}");
    assert!(ok >= 200, "the burst was served: {ok}");
    // The calm client is still connected and served.
    assert_eq!(calm.connection().close_code(), None);
    calm.request("gate.queryEntry", query()).await.unwrap();
}
