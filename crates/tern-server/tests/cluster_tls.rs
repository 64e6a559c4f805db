//! Mutual TLS on the cluster port: nodes whose certificates one CA signed link up over TLS;
//! a node with a certificate from another CA, or none at all (a plaintext node), does not.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::pki::Pki;
use rcgen::{CertificateParams, SanType};
use tern_cluster::handshake::{Identity, Secret};
use tern_cluster::link::{Answer, Handler, Link};
use tern_cluster::nodes::{NodeTls, Nodes, NodesConfig};
use tern_cluster::wire::Service;
use tern_server::config::ClusterTls;
use tokio::net::TcpListener;

/// Answers every call with nothing.
struct Quiet;

impl Handler for Quiet {
    fn call(&self, _: &Link, _: Service, _: Bytes) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(async { Ok(Bytes::new()) })
    }
}

/// A node certificate for localhost / 127.0.0.1 from `pki`, as the node's TLS.
fn node_tls(pki: &Pki, name: &str) -> NodeTls {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    pki.issue(name, params);
    let files = ClusterTls {
        cert_file: pki.path(&format!("{name}.pem")),
        key_file: pki.path(&format!("{name}.key")),
        ca_file: pki.path("ca.pem"),
    };
    tern_server::tls::cluster_tls(&files).expect("node TLS")
}

async fn node(name: &str, tls: Option<NodeTls>) -> (Nodes, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let identity = Identity {
        cluster_name: "tern".into(),
        node_name: format!("{name}@localhost"),
        listen: addr.clone(),
    };
    let mut config = NodesConfig::new(identity, Secret::from_bytes(b"s").expect("secret"));
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(100);
    config.handshake_timeout = Duration::from_secs(2);
    config.tls = tls;
    (Nodes::start(config, Arc::new(Quiet), listener), addr)
}

#[tokio::test]
async fn nodes_of_one_ca_link_over_tls_and_others_stay_out() {
    let pki = Pki::new();
    let (a, a_addr) = node("a", Some(node_tls(&pki, "a"))).await;
    let (b, _) = node("b", Some(node_tls(&pki, "b"))).await;
    b.dial(a_addr.clone());
    let link = b.link_within("a@localhost", Duration::from_secs(10)).await;
    let link = link.expect("a TLS link between nodes of one CA");
    link.call(Service::Control, Bytes::new(), Duration::from_secs(5))
        .await
        .expect("a call over it");

    // Another CA's node, and a node without TLS, dial a and get nowhere.
    let other = Pki::new();
    let (stranger, _) = node("stranger", Some(node_tls(&other, "stranger"))).await;
    let (plain, _) = node("plain", None).await;
    stranger.dial(a_addr.clone());
    plain.dial(a_addr);
    let wait = Duration::from_millis(1500);
    assert!(stranger.link_within("a@localhost", wait).await.is_none());
    assert!(plain.link_within("a@localhost", wait).await.is_none());
    assert_eq!(a.linked(), ["b@localhost"]);
    for n in [a, b, stranger, plain] {
        n.stop().await;
    }
}
