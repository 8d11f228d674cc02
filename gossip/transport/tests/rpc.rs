//! Calls over real QUIC on loopback.

use std::future::Future;
use std::net::UdpSocket;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_gossip::NodeId;
use shoal_transport::{Handler, NodeTls, Service, Transport, TransportConfig, TransportError};
use tokio_util::sync::CancellationToken;

/// Answers with the caller's id and the request reversed.
struct Echo;

impl Handler for Echo {
    fn handle(
        &self,
        from: NodeId,
        _service: Service,
        mut body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> {
        Box::pin(async move {
            if body == b"fail" {
                return Err("asked to fail".into());
            }
            if body == b"slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            body.reverse();
            let mut out = from.0.to_be_bytes().to_vec();
            out.extend_from_slice(&body);
            Ok(out)
        })
    }
}

fn node(secret: u8, id: u64, config: TransportConfig) -> Transport {
    let tls = NodeTls::new(&[secret; 32], NodeId(id)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    Transport::bind(sock, &tls, NodeId(id), config).unwrap()
}

fn serve(t: &Transport) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(t.clone().serve(Arc::new(Echo), stop.clone()));
    stop
}

#[tokio::test]
async fn calls_answer_and_reuse_the_connection() {
    let a = node(1, 1, TransportConfig::default());
    let b = node(1, 2, TransportConfig::default());
    let _stop = serve(&b);
    let addr = b.local_addr().unwrap();
    for _ in 0..3 {
        let out = a
            .request(NodeId(2), addr, Service::State, b"abc")
            .await
            .unwrap();
        assert_eq!(
            &out[..8],
            &1u64.to_be_bytes(),
            "the server sees the caller's id"
        );
        assert_eq!(&out[8..], b"cba");
    }
    assert_eq!(a.stats().connects.load(Ordering::Relaxed), 1);
    let err = a
        .request(NodeId(2), addr, Service::State, b"fail")
        .await
        .unwrap_err();
    assert_eq!(err, TransportError::Remote("asked to fail".into()));
}

#[tokio::test]
async fn another_cluster_is_refused() {
    let a = node(1, 1, TransportConfig::default());
    let stranger = node(2, 9, TransportConfig::default());
    let _stop = serve(&a);
    let addr = a.local_addr().unwrap();
    let result = stranger
        .request(NodeId(1), addr, Service::State, b"hi")
        .await;
    assert!(result.is_err(), "{result:?}");
    // And the other way: a refuses to trust the stranger as a server.
    let _stop2 = serve(&stranger);
    let result = a
        .request(
            NodeId(9),
            stranger.local_addr().unwrap(),
            Service::State,
            b"hi",
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    for _ in 0..50 {
        if a.stats().handshakes_refused.load(Ordering::Relaxed) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the refused handshake was not counted");
}

#[tokio::test]
async fn a_forgotten_nodes_certificate_is_no_longer_trusted() {
    let a = node(1, 1, TransportConfig::default());
    let b = node(1, 2, TransportConfig::default());
    let _stop = serve(&a);
    let addr = a.local_addr().unwrap();
    b.request(NodeId(1), addr, Service::State, b"hi")
        .await
        .expect("trusted before the forget");
    a.set_refused([NodeId(2)].into_iter().collect());
    // A new connection (the old one is dropped with the node's state)
    // presenting b's certificate is closed; whatever id b claims.
    let b = node(1, 2, TransportConfig::default());
    let result = b.request(NodeId(1), addr, Service::State, b"hi").await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        a.stats().handshakes_refused.load(Ordering::Relaxed) > 0,
        "the refusal was not counted"
    );
    // And a calls b no more.
    let _stop_b = serve(&b);
    let result = a
        .request(NodeId(2), b.local_addr().unwrap(), Service::State, b"hi")
        .await;
    assert!(result.is_err(), "{result:?}");
    // Another node of the cluster is still served.
    let c = node(1, 3, TransportConfig::default());
    c.request(NodeId(1), addr, Service::State, b"hi")
        .await
        .expect("others are still trusted");
}

#[tokio::test]
async fn limits_and_faults() {
    let config = TransportConfig {
        request_timeout: Duration::from_millis(300),
        max_message_bytes: 1024,
        ..TransportConfig::default()
    };
    let a = node(1, 1, config.clone());
    let b = node(1, 2, config);
    let _stop = serve(&b);
    let addr = b.local_addr().unwrap();
    let big = vec![7u8; 4096];
    assert!(matches!(
        a.request(NodeId(2), addr, Service::State, &big).await,
        Err(TransportError::TooLarge { .. })
    ));
    assert!(matches!(
        a.request(NodeId(2), addr, Service::State, b"slow").await,
        Err(TransportError::Timeout { .. })
    ));
    a.set_blocked([NodeId(2)].into());
    assert_eq!(
        a.request(NodeId(2), addr, Service::State, b"x").await,
        Err(TransportError::Blocked(NodeId(2)))
    );
    a.set_blocked(Default::default());
    b.set_blocked([NodeId(1)].into());
    assert!(matches!(
        a.request(NodeId(2), addr, Service::State, b"x").await,
        Err(TransportError::Remote(_))
    ));
    b.set_blocked(Default::default());
    assert!(
        a.request(NodeId(2), addr, Service::State, b"x")
            .await
            .is_ok()
    );
}
