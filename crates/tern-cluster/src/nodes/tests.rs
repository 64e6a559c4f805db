//! Nodes over real TCP on loopback: a peer list that names every node links each pair once;
//! a node with another secret stays out; a restarted peer is dialed again; two nodes dialing
//! each other settle on one link and stay there.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::*;
use crate::link::{Answer, CallError};
use crate::wire::Service;

const STEP: Duration = Duration::from_secs(10);
const RAFT: Service = Service::Raft { group: 0 };

/// Answers every call with its own node name.
struct Name(String);

impl Handler for Name {
    fn call(
        &self,
        _from: &Link,
        _s: Service,
        _b: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        let name = self.0.clone();
        Box::pin(async move { Ok(Bytes::from(name)) })
    }
}

struct Node {
    nodes: Nodes,
    addr: String,
}

async fn node_on(name: &str, secret: &str, listener: TcpListener) -> Node {
    let addr = listener.local_addr().expect("addr").to_string();
    let identity = Identity {
        cluster_name: "tern".into(),
        node_name: format!("{name}@localhost"),
        listen: addr.clone(),
    };
    let mut config = NodesConfig::new(
        identity,
        Secret::from_bytes(secret.as_bytes()).expect("secret"),
    );
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    let handler = Arc::new(Name(format!("{name}@localhost")));
    Node {
        nodes: Nodes::start(config, handler, listener),
        addr,
    }
}

async fn node(name: &str, secret: &str) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    node_on(name, secret, listener).await
}

/// `to`'s answer to a call from `from`. A call on a link that the tie-break replaces fails
/// with LinkDown; like any caller, this one then calls again on the link that stayed.
async fn answer(from: &Node, to: &str) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let link = from.nodes.link_within(to, STEP).await;
        let link = link.unwrap_or_else(|| panic!("a link to {to}"));
        match link.call(RAFT, Bytes::new(), STEP).await {
            Ok(body) => return String::from_utf8(body.to_vec()).expect("utf-8"),
            Err(CallError::LinkDown(_)) if tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("no answer from {to}: {e}"),
        }
    }
}

#[tokio::test]
async fn a_peer_list_naming_every_node_links_each_pair_once() {
    let nodes = [
        node("a", "s").await,
        node("b", "s").await,
        node("c", "s").await,
    ];
    let peers: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for n in &nodes {
        for addr in &peers {
            n.nodes.dial(addr.clone());
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        for (j, other) in ["a", "b", "c"].iter().enumerate() {
            if i != j {
                assert_eq!(
                    answer(n, &format!("{other}@localhost")).await,
                    format!("{other}@localhost")
                );
            }
        }
    }
    for n in &nodes {
        let others: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|o| format!("{o}@localhost"))
            .filter(|o| *o != n.nodes.identity().node_name)
            .collect();
        assert_eq!(n.nodes.linked(), others, "never linked to itself");
    }
    for n in &nodes {
        n.nodes.stop().await;
    }
}

#[tokio::test]
async fn a_node_with_another_secret_is_never_linked() {
    let (a, intruder) = (node("a", "right").await, node("x", "wrong").await);
    intruder.nodes.dial(a.addr.clone());
    a.nodes.dial(intruder.addr.clone());
    let link = a
        .nodes
        .link_within("x@localhost", Duration::from_millis(500))
        .await;
    assert!(link.is_none());
    assert!(a.nodes.linked().is_empty() && intruder.nodes.linked().is_empty());
    assert_eq!(a.nodes.links_established(), 0);
}

#[tokio::test]
async fn a_restarted_peer_is_dialed_again() {
    let a = node("a", "s").await;
    let b = node("b", "s").await;
    a.nodes.dial(b.addr.clone());
    assert_eq!(answer(&a, "b@localhost").await, "b@localhost");
    let first = a.nodes.link("b@localhost").expect("linked");
    b.nodes.stop().await;
    first.down().await;
    let listener = TcpListener::bind(&b.addr)
        .await
        .expect("the same port again");
    let b = node_on("b", "s", listener).await;
    assert_eq!(answer(&a, "b@localhost").await, "b@localhost");
    b.nodes.stop().await;
    a.nodes.stop().await;
}

#[tokio::test]
async fn two_nodes_dialing_each_other_settle_on_one_link() {
    let a = node("a", "s").await;
    let b = node("b", "s").await;
    a.nodes.dial(b.addr.clone());
    b.nodes.dial(a.addr.clone());
    assert_eq!(answer(&a, "b@localhost").await, "b@localhost");
    assert_eq!(answer(&b, "a@localhost").await, "a@localhost");
    let settled = (a.nodes.links_established(), b.nodes.links_established());
    // Long enough for a churning dialer to have redialed many times (its backoff is 20 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (a.nodes.links_established(), b.nodes.links_established()),
        settled,
        "no link came up again: the dialers wait on the link they have"
    );
    assert!(settled.0 <= 2 && settled.1 <= 2, "{settled:?}");
    let via_a = a.nodes.link("b@localhost").expect("a's link");
    let via_b = b.nodes.link("a@localhost").expect("b's link");
    assert!(!via_a.is_down() && !via_b.is_down());
    a.nodes.stop().await;
    b.nodes.stop().await;
}
