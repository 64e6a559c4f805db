//! The metadata group on the simulated file system: commands survive restarts and crashes,
//! from the log and from snapshots, and the hook sees every change.

use std::path::PathBuf;
use std::sync::Mutex;

use tern_amqp::{FieldTable, ReplyCode};
use tern_core::meta::{ExchangeDef, MetaCommand, MetaOutcome, Metadata};
use tern_core::names::{ExchangeName, VhostName};
use tern_core::routing::ExchangeKind;
use tern_store::sim::{Crash, SimFs};

use super::*;

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<String>>,
    replaced: Mutex<usize>,
}

impl ApplyHook for Recorder {
    fn applied(
        &self,
        _meta: &Metadata,
        cmd: &MetaCommand,
        outcome: &Result<MetaOutcome, AmqpError>,
    ) {
        let line = format!("{:?} -> {}", std::mem::discriminant(cmd), outcome.is_ok());
        self.applied.lock().unwrap().push(line);
    }
    fn replaced(&self, _meta: &Metadata) {
        *self.replaced.lock().unwrap() += 1;
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/data/meta")
}

fn exchange(name: &str) -> MetaCommand {
    MetaCommand::DeclareExchange {
        vhost: VhostName::from("/"),
        def: ExchangeDef {
            name: ExchangeName::from(name),
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        },
        passive: false,
    }
}

async fn start(fs: &SimFs) -> (MetaRaft, Arc<Recorder>) {
    let hook = Arc::new(Recorder::default());
    let shared = Arc::new(SharedMeta::new(hook.clone()));
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    let raft = MetaRaft::start(vfs, &dir(), shared).await.expect("start");
    (raft, hook)
}

fn has_exchange(raft: &MetaRaft, name: &str) -> bool {
    let meta = raft.shared().lock();
    meta.exchange(&VhostName::from("/"), &ExchangeName::from(name))
        .is_some()
}

#[tokio::test]
async fn commands_survive_a_crash_once_written() {
    let fs = SimFs::new();
    let (raft, _) = start(&fs).await;
    for name in ["a", "b", "c"] {
        let outcome = raft.write(exchange(name)).await.expect("written");
        assert_eq!(outcome, Ok(MetaOutcome::ExchangeDeclared { created: true }));
    }
    raft.shutdown().await;
    let (raft, hook) = start(&fs.crash(Crash::LoseUnsynced)).await;
    assert!(["a", "b", "c"].iter().all(|n| has_exchange(&raft, n)));
    assert_eq!(
        hook.applied.lock().unwrap().len(),
        3,
        "replayed through the hook"
    );
    raft.shutdown().await;
}

fn last_log_index(raft: &MetaRaft) -> u64 {
    raft.raft.metrics().borrow().last_log_index.unwrap_or(0)
}

#[tokio::test]
async fn a_batch_is_one_log_entry_and_replays_member_by_member() {
    let fs = SimFs::new();
    let (raft, hook) = start(&fs).await;
    let before = last_log_index(&raft);
    let batch = MetaCommand::Batch(vec![exchange("a"), exchange("b"), exchange("c")]);
    let outcome = raft.write(batch).await.expect("written");
    let Ok(MetaOutcome::Batch { outcomes, refused }) = outcome else {
        panic!("not a batch outcome: {outcome:?}");
    };
    assert_eq!((outcomes.len(), refused), (3, None));
    assert_eq!(
        last_log_index(&raft),
        before + 1,
        "one entry, one durable write"
    );
    assert_eq!(
        hook.applied.lock().unwrap().len(),
        3,
        "the hook sees each member"
    );
    raft.shutdown().await;
    let (raft, hook) = start(&fs.crash(Crash::LoseUnsynced)).await;
    assert!(["a", "b", "c"].iter().all(|n| has_exchange(&raft, n)));
    assert_eq!(
        hook.applied.lock().unwrap().len(),
        3,
        "replayed member by member"
    );
    raft.shutdown().await;
}

#[tokio::test]
async fn a_refused_command_answers_its_error_and_changes_nothing() {
    let fs = SimFs::new();
    let (raft, _) = start(&fs).await;
    let refused = raft
        .write(MetaCommand::DeleteExchange {
            vhost: VhostName::from("/"),
            name: ExchangeName::from("amq.direct"),
            if_unused: false,
        })
        .await
        .expect("written");
    assert_eq!(refused.map_err(|e| e.code), Err(ReplyCode::AccessRefused));
    assert!(has_exchange(&raft, "amq.direct"));
    raft.shutdown().await;
}

#[tokio::test]
async fn state_comes_back_from_a_snapshot_plus_the_log_after_it() {
    let fs = SimFs::new();
    let (raft, _) = start(&fs).await;
    raft.write(exchange("before")).await.unwrap().unwrap();
    raft.snapshot_now().await.expect("snapshot");
    raft.write(exchange("after")).await.unwrap().unwrap();
    raft.shutdown().await;
    let (raft, hook) = start(&fs.crash(Crash::LoseUnsynced)).await;
    assert!(has_exchange(&raft, "before") && has_exchange(&raft, "after"));
    assert_eq!(
        *hook.replaced.lock().unwrap(),
        1,
        "loaded from the snapshot"
    );
    assert_eq!(
        hook.applied.lock().unwrap().len(),
        1,
        "only what came after it replayed"
    );
    raft.shutdown().await;
}

#[tokio::test]
async fn a_write_after_shutdown_is_refused_as_stopped_not_as_a_failure() {
    let fs = SimFs::new();
    let (raft, _) = start(&fs).await;
    raft.shutdown().await;
    let err = raft.write(exchange("late")).await.expect_err("stopped");
    assert!(err.is_stopped(), "{err}");
}

#[tokio::test]
async fn a_failed_fsync_is_an_error_that_is_not_stopped() {
    let fs = SimFs::new();
    let (raft, _) = start(&fs).await;
    fs.fail_sync_after(Some(0));
    let err = raft
        .write(exchange("lost"))
        .await
        .expect_err("fsync failed");
    assert!(!err.is_stopped(), "{err}");
    assert!(!has_exchange(&raft, "lost"));
    // Once failed, it stays failed with the same cause, not "stopped".
    let again = raft
        .write(exchange("next"))
        .await
        .expect_err("still failed");
    assert!(!again.is_stopped(), "{again}");
}
