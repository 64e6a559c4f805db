//! Fresh nodes with one peer list form one cluster by themselves; a member that restarts on
//! its own data rejoins as the member it was and catches up.

use std::sync::Arc;

use tern_amqp::{AmqpError, FieldTable};
use tern_core::meta::{ExchangeDef, MetaCommand, MetaOutcome, Metadata};
use tern_core::names::{ExchangeName, VhostName};
use tern_core::routing::ExchangeKind;
use tern_store::sim::SimFs;

use super::*;
use crate::handshake::{Identity, Secret};
use crate::meta::ApplyHook;

const STEP: Duration = Duration::from_secs(20);

struct Ignore;

impl ApplyHook for Ignore {
    fn applied(&self, _: &Metadata, _: &MetaCommand, _: &Result<MetaOutcome, AmqpError>) {}
    fn replaced(&self, _: &Metadata) {}
}

fn exchange(name: &str) -> MetaCommand {
    MetaCommand::DeclareExchange {
        vhost: VhostName::from("/"),
        def: ExchangeDef {
            name: ExchangeName::from(name),
            kind: ExchangeKind::Direct,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        },
        passive: false,
    }
}

fn has_exchange(cluster: &Cluster, name: &str) -> bool {
    let meta = cluster.meta().shared().lock();
    meta.exchange(&VhostName::from("/"), &ExchangeName::from(name))
        .is_some()
}

fn fast() -> Timing {
    Timing {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
    }
}

async fn start(
    name: &'static str,
    listener: TcpListener,
    peers: Vec<String>,
    fs: SimFs,
) -> Cluster {
    start_result(name, listener, peers, fs)
        .await
        .expect("started")
}

async fn start_result(
    name: &'static str,
    listener: TcpListener,
    peers: Vec<String>,
    fs: SimFs,
) -> Result<Cluster, MetaError> {
    let identity = Identity {
        cluster_name: "tern".into(),
        node_name: name.into(),
        listen: listener.local_addr().expect("addr").to_string(),
    };
    let secret = Secret::from_bytes(b"cookie").expect("secret");
    let mut nodes = NodesConfig::new(identity, secret);
    nodes.backoff_min = Duration::from_millis(20);
    nodes.backoff_max = Duration::from_millis(200);
    let config = ClusterConfig {
        nodes,
        peers,
        timing: fast(),
        broker: None,
    };
    let shared = Arc::new(SharedMeta::new(Arc::new(Ignore)));
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let started = Cluster::start(config, listener, vfs, Path::new("/data/meta"), shared);
    tokio::time::timeout(STEP, started)
        .await
        .expect("started in time")
}

/// Write `cmd` through whichever of `members` leads; the log index every member must reach.
async fn write(members: &[&Cluster], cmd: MetaCommand) -> u64 {
    let leader = members[0]
        .meta()
        .await_leader(STEP)
        .await
        .expect("a leader");
    let leader = members
        .iter()
        .find(|c| c.id() == leader)
        .expect("a living leader");
    let (index, outcome) = leader.meta().write_indexed(cmd).await.expect("written");
    assert!(outcome.is_ok());
    index
}

/// Three listeners on loopback, and their addresses: one peer list for three nodes.
async fn three_listeners() -> (Vec<TcpListener>, Vec<String>) {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let peers = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect();
    (listeners, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_nodes_with_one_peer_list_form_one_cluster_and_a_restarted_member_rejoins() {
    let (listeners, peers) = three_listeners().await;
    let disks = [SimFs::new(), SimFs::new(), SimFs::new()];
    // Started in an order that is not the names' order: the seed (n1) comes up last.
    let members = start_all(["n3@h", "n2@h", "n1@h"], listeners, &peers, &disks).await;
    let ids: Vec<(String, NodeId)> = members
        .iter()
        .map(|c| (c.nodes().identity().node_name.clone(), c.id()))
        .collect();
    assert_eq!(
        ids,
        [("n3@h".into(), 3), ("n2@h".into(), 2), ("n1@h".into(), 1)],
        "ids in name order"
    );

    let all: Vec<&Cluster> = members.iter().collect();
    let index = write(&all, exchange("before")).await;
    for c in &members {
        c.meta().await_applied(index, STEP).await.expect("applied");
        assert!(has_exchange(c, "before"));
    }

    // n2 stops; a change is made without it; it comes back on its own data and catches up.
    let n2 = &members[1];
    n2.shutdown().await;
    let rest = [&members[0], &members[2]];
    let index = write(&rest, exchange("while-away")).await;
    let listener = TcpListener::bind(&peers[1]).await.expect("n2's port again");
    let back = start("n2@h", listener, peers.clone(), disks[1].clone()).await;
    assert_eq!(back.id(), 2, "the member it was");
    back.meta()
        .await_applied(index, STEP)
        .await
        .expect("caught up");
    assert!(has_exchange(&back, "before") && has_exchange(&back, "while-away"));
    for c in [&members[0], &members[2], &back] {
        c.shutdown().await;
    }
}

/// A fresh node whose peers are a running cluster joins it (learner, then voter) and gets
/// what was written before; stopped, it can be forgotten, and a running node cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_joins_a_running_cluster_and_a_stopped_one_is_forgotten() {
    let (listeners, peers) = three_listeners().await;
    let disks = [SimFs::new(), SimFs::new(), SimFs::new()];
    let members = start_all(["n1@h", "n2@h", "n3@h"], listeners, &peers, &disks).await;
    let all: Vec<&Cluster> = members.iter().collect();
    let index = write(&all, exchange("before-join")).await;

    // n4 knows only the running cluster's addresses.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let n4 = start("n4@h", listener, peers.clone(), SimFs::new()).await;
    assert_eq!(n4.id(), 4, "the next free id");
    n4.meta()
        .await_applied(index, STEP)
        .await
        .expect("caught up");
    assert!(has_exchange(&n4, "before-join"));
    let voters: Vec<NodeId> = members[0].meta().voters().into_iter().collect();
    assert_eq!(voters, [1, 2, 3, 4], "a voter, not only a learner");

    // A running node cannot be forgotten; a stopped one can, and the rest go on.
    let refused = members[1].forget("n4@h").await.expect_err("n4 runs");
    assert!(refused.to_string().contains("running"), "{refused}");
    n4.shutdown().await;

    // n4 back with its data lost is refused: it must be forgotten first.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let again = start_result("n4@h", listener, peers.clone(), SimFs::new()).await;
    let refused = again.err().expect("a wiped member is refused");
    assert!(refused.to_string().contains("already member"), "{refused}");

    let forgotten = tokio::time::timeout(STEP, async {
        loop {
            match members[1].forget("n4@h").await {
                Ok(()) => return,
                // The leader may still have its link to n4 for a moment.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    forgotten.await.expect("forgotten in time");
    let voters: Vec<NodeId> = members[0].meta().voters().into_iter().collect();
    assert_eq!(voters, [1, 2, 3]);
    let index = write(&all, exchange("after-forget")).await;
    for c in &members {
        let applied = c.meta().await_applied(index, STEP).await;
        let at = c.meta().applied_index();
        applied.unwrap_or_else(|e| panic!("member {} at {at} of {index}: {e}", c.id()));
        c.shutdown().await;
    }
}

/// Start the named nodes at once on their listeners and disks, with one peer list.
async fn start_all(
    names: [&'static str; 3],
    listeners: Vec<TcpListener>,
    peers: &[String],
    disks: &[SimFs; 3],
) -> Vec<Cluster> {
    let starts = names
        .into_iter()
        .zip(listeners)
        .zip(disks)
        .map(|((name, l), fs)| start(name, l, peers.to_vec(), fs.clone()));
    futures_join(starts).await
}

/// Run the futures at once (each is a node starting; they wait for each other).
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[test]
fn control_requests_decode_to_themselves_and_malformed_ones_are_refused() {
    let form = Control::Form {
        members: BTreeMap::from([(1, "a@h".to_string()), (2, "b@h".to_string())]),
    };
    let bytes = form.encode();
    assert_eq!(Control::decode(bytes.clone()), Ok(form));
    for cut in 0..bytes.len() {
        assert!(Control::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
    }
    let write = Control::Write(exchange("x"));
    let bytes = write.encode();
    assert_eq!(Control::decode(bytes.clone()), Ok(write));
    for cut in 0..bytes.len() {
        assert!(Control::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
    }
    for membership in [
        Control::Join {
            name: "n4@h".into(),
        },
        Control::Promote {
            id: 4,
            name: "n4@h".into(),
        },
        Control::Forget {
            name: "n4@h".into(),
        },
    ] {
        let bytes = membership.encode();
        assert_eq!(Control::decode(bytes.clone()), Ok(membership));
        for cut in 0..bytes.len() {
            assert!(Control::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
    let mut huge = BytesMut::new();
    huge.put_u8(1);
    huge.put_u32(u32::MAX);
    assert!(Control::decode(huge.freeze()).is_err());
}

#[test]
fn the_node_record_survives_a_crash_once_saved_and_damage_is_refused() {
    let fs = SimFs::new();
    let dir = Path::new("/data/meta");
    assert_eq!(NodeRecord::load(&fs, dir).expect("load"), None);
    let record = NodeRecord {
        name: "n1@h".into(),
        id: 7,
    };
    record.save(&fs, dir).expect("save");
    let after = fs.crash(tern_store::sim::Crash::LoseUnsynced);
    assert_eq!(NodeRecord::load(&after, dir).expect("load"), Some(record));
    fs.flip_bit(&dir.join("node"), 0, 6);
    assert!(
        NodeRecord::load(&fs, dir).is_err(),
        "a damaged record is refused"
    );
}

/// Three fresh nodes formed into one cluster (names n1..n3, ids 1..3), each on its own disk.
async fn formed() -> (Vec<Cluster>, Vec<String>) {
    let (listeners, peers) = three_listeners().await;
    let starts = ["n1@h", "n2@h", "n3@h"]
        .into_iter()
        .zip(listeners)
        .map(|(name, l)| start(name, l, peers.clone(), SimFs::new()));
    let members = futures_join(starts).await;
    members[0]
        .meta()
        .await_leader(STEP)
        .await
        .expect("a leader");
    (members, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_a_follower_is_committed_by_the_leader_and_seen_at_once_where_made() {
    let (members, _) = formed().await;
    let leader = members[0].meta().await_leader(STEP).await.expect("leader");
    let follower = members
        .iter()
        .find(|c| c.id() != leader)
        .expect("a follower");
    let outcome = follower
        .write(exchange("via-follower"), STEP)
        .await
        .expect("written");
    assert_eq!(outcome, Ok(MetaOutcome::ExchangeDeclared { created: true }));
    assert!(
        has_exchange(follower, "via-follower"),
        "read your writes on the follower"
    );

    // A refusal comes back as the leader's AMQP error.
    let mut fanout = exchange("via-follower");
    if let MetaCommand::DeclareExchange { def, .. } = &mut fanout {
        def.kind = ExchangeKind::Fanout;
    }
    let refused = follower.write(fanout, STEP).await.expect("answered");
    let e = refused.expect_err("inequivalent type");
    assert_eq!(e.code, tern_amqp::ReplyCode::PreconditionFailed, "{e}");
    for c in &members {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_a_change_fails_fast_with_the_reason() {
    let (members, _) = formed().await;
    members[1].shutdown().await;
    members[2].shutdown().await;
    let wait = Duration::from_millis(1500);
    let started = tokio::time::Instant::now();
    let refused = members[0].write(exchange("lonely"), wait).await;
    let took = started.elapsed();
    let Err(MetaError::Unavailable(why)) = refused else {
        panic!("{refused:?}");
    };
    assert!(why.contains("majority"), "{why}");
    assert!(took < wait + Duration::from_secs(2), "gave up in {took:?}");
    members[0].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_the_others_elect_one_and_go_on() {
    let (members, _) = formed().await;
    let first = members[0].meta().await_leader(STEP).await.expect("leader");
    let all: Vec<&Cluster> = members.iter().collect();
    let index = write(&all, exchange("x")).await;
    for c in &members {
        c.meta().await_applied(index, STEP).await.expect("applied");
        assert!(has_exchange(c, "x"), "node {} has it", c.id());
    }
    let dead = members
        .iter()
        .find(|c| c.id() == first)
        .expect("the leader");
    dead.shutdown().await;
    let living: Vec<&Cluster> = members.iter().filter(|c| c.id() != first).collect();
    let new_leader = async {
        loop {
            match living[0].meta().await_leader(STEP).await {
                Ok(l) if l != first => return l,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(STEP, new_leader)
        .await
        .expect("a new leader in time");
    let outcome = living[0].write(exchange("y"), STEP).await.expect("written");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(has_exchange(living[0], "y"), "seen at once where made");
    // The other applies it once the leader tells it the change is committed; the metrics'
    // applied index may lag behind the state, so the state itself is watched.
    let deadline = tokio::time::Instant::now() + STEP;
    while !has_exchange(living[1], "y") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "y never reached the other node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(has_exchange(living[1], "x"));
    for c in &living {
        c.shutdown().await;
    }
}
