//! A metadata group of three members, each on its own simulated disk, talking over real node
//! links on loopback: every change the leader commits is applied by all, and the two that are
//! left elect a leader and go on when the first one dies.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use tern_amqp::FieldTable;
use tern_core::meta::{ExchangeDef, MetaCommand, MetaOutcome, Metadata};
use tern_core::names::{ExchangeName, VhostName};
use tern_core::routing::ExchangeKind;
use tern_store::sim::SimFs;
use tokio::net::TcpListener;

use super::*;
use crate::handshake::{Identity, Peer, Secret};
use crate::link::{Answer, Handler};
use crate::nodes::NodesConfig;
use crate::wire::Service;

const STEP: Duration = Duration::from_secs(15);

struct Ignore;

impl ApplyHook for Ignore {
    fn applied(&self, _: &Metadata, _: &MetaCommand, _: &Result<MetaOutcome, AmqpError>) {}
    fn replaced(&self, _: &Metadata) {}
}

/// Routes a node's incoming Raft calls to its metadata member, once it has one.
#[derive(Default)]
struct RaftCalls(OnceLock<Arc<MetaRaft>>);

impl Handler for Arc<RaftCalls> {
    fn call(
        &self,
        _from: &Peer,
        service: Service,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        let raft = self.0.get().cloned();
        Box::pin(async move {
            match (service, raft) {
                (Service::Raft { group: 0 }, Some(raft)) => raft.serve_rpc(body).await,
                (Service::Raft { group }, _) => Err(format!("no Raft group {group} here yet")),
                (Service::Control, _) => Err("no membership changes in this test".into()),
            }
        })
    }
}

struct Member {
    id: NodeId,
    raft: Arc<MetaRaft>,
    nodes: Nodes,
}

fn exchange(name: &str) -> MetaCommand {
    MetaCommand::DeclareExchange {
        vhost: VhostName::from("/"),
        def: ExchangeDef {
            name: ExchangeName::from(name),
            kind: ExchangeKind::Fanout,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        },
        passive: false,
    }
}

fn has_exchange(raft: &MetaRaft, name: &str) -> bool {
    let meta = raft.shared().lock();
    meta.exchange(&VhostName::from("/"), &ExchangeName::from(name))
        .is_some()
}

async fn three_members() -> Vec<Member> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect();
    let mut members = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as NodeId + 1;
        let identity = Identity {
            cluster_name: "tern".into(),
            node_name: format!("n{id}@localhost"),
            listen: addrs[i].clone(),
        };
        let secret = Secret::from_bytes(b"s").expect("secret");
        let calls = Arc::new(RaftCalls::default());
        let nodes = Nodes::start(
            NodesConfig::new(identity, secret),
            Arc::new(calls.clone()),
            listener,
        );
        addrs.iter().for_each(|a| nodes.dial(a.clone()));
        let shared = Arc::new(SharedMeta::new(Arc::new(Ignore)));
        let vfs: Arc<dyn Vfs> = Arc::new(SimFs::new());
        let timing = Timing {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
        };
        let member = super::Member {
            id,
            nodes: nodes.clone(),
            timing,
        };
        let raft = MetaRaft::start_member(vfs, Path::new("/meta"), shared, member)
            .await
            .expect("start");
        let raft = Arc::new(raft);
        let _ = calls.0.set(raft.clone());
        members.push(Member { id, raft, nodes });
    }
    members
}

/// Write `cmd` on the leader among `members`; the index every member must apply.
async fn write_on_leader(members: &[&Member], cmd: MetaCommand) -> u64 {
    let leader_id = members[0].raft.await_leader(STEP).await.expect("a leader");
    let leader = members
        .iter()
        .find(|m| m.id == leader_id)
        .expect("the leader is among the living");
    let (index, outcome) = leader.raft.write_indexed(cmd).await.expect("committed");
    assert!(outcome.is_ok(), "{outcome:?}");
    index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_apply_every_change_and_go_on_without_their_leader() {
    let members = three_members().await;
    let names = BTreeMap::from([
        (1, "n1@localhost".to_string()),
        (2, "n2@localhost".to_string()),
        (3, "n3@localhost".to_string()),
    ]);
    members[0].raft.initialize(names).await.expect("initialize");

    let all: Vec<&Member> = members.iter().collect();
    let index = write_on_leader(&all, exchange("x")).await;
    for m in &members {
        m.raft.await_applied(index, STEP).await.expect("applied");
        assert!(has_exchange(&m.raft, "x"), "member {} has it", m.id);
    }

    let first = members[0].raft.await_leader(STEP).await.expect("leader");
    let dead = &members[first as usize - 1];
    dead.raft.shutdown().await;
    dead.nodes.stop().await;
    let living: Vec<&Member> = members.iter().filter(|m| m.id != first).collect();
    let new_leader = async {
        loop {
            let l = living[0].raft.await_leader(STEP).await.expect("leader");
            if l != first {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(STEP, new_leader)
        .await
        .expect("a new leader in time");
    let index = write_on_leader(&living, exchange("y")).await;
    for m in &living {
        m.raft.await_applied(index, STEP).await.expect("applied");
        assert!(has_exchange(&m.raft, "x") && has_exchange(&m.raft, "y"));
    }
    for m in &living {
        m.raft.shutdown().await;
        m.nodes.stop().await;
    }
}
