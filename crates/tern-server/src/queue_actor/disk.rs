//! The queue actor's side of its store (`store`): recovery at start, writing persistent
//! messages and the journal, paging ready messages out of memory and back, fsyncs on a
//! blocking thread.
//!
//! Paging: once a queue holds `queue_memory_messages` ready messages or `queue_memory_bytes`
//! of them in memory, further messages go to its store instead (a durable queue's own, or a
//! scratch paging store for a non-durable one), counted by the queue state but not kept; when
//! the messages in memory fall to half the limit, the oldest paged ones are read back. Paging
//! lasts while anything is paged, so messages stay in order.

use std::sync::Arc;

use tern_core::message::Message;
use tern_core::queue::MsgId;

use super::store::{self, ConfirmRequest, QueueStore};
use super::{QueueActor, QueueCmd};

impl QueueActor {
    /// Open the queue's store and index what it holds; read the first messages back. Damage
    /// there marks this queue failed (logged); the node and its other queues go on serving.
    pub(super) async fn recover(&mut self) {
        let vfs = self.vfs.clone();
        let (vhost, name) = (self.shared.vhost.clone(), self.shared.name.clone());
        let dir = store::queue_dir(&self.data_dir, &vhost, &name);
        // The store's own warnings (a damaged acks file, say) name the queue too.
        let span = tracing::Span::current();
        let open = move || span.in_scope(|| QueueStore::open_durable(vfs, &dir, &vhost, &name));
        let opened = tokio::task::spawn_blocking(open).await;
        match opened {
            Ok(Ok((store, recovered))) => {
                let n = recovered.messages;
                self.state.restore_paged(n, 0, recovered.max_id);
                if n > 0 {
                    tracing::info!(messages = n, "recovered");
                }
                self.state.enable_journal();
                self.store = Some(store);
                self.refill();
            }
            Ok(Err(e)) => self.fail(&e.to_string()),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn fail(&mut self, error: &str) {
        tracing::error!(%error, "queue storage unreadable: the queue is marked failed");
        self.failed = true;
    }

    /// Writing or syncing the store failed: what it has not synced may not be on disk. The
    /// queue stops serving (its confirms still waiting are nacked, its consumers cancelled, it
    /// refuses further work) and tells the broker, whose owner stops the node (DESIGN.md's
    /// durability contract). The files stay for recovery to judge at the next start.
    pub(super) fn storage_failed(&mut self, e: &tern_store::StoreError) {
        tracing::error!(error = %e, "queue storage failed: the queue is down");
        if let Some(store) = self.store.take() {
            store.abandon();
        }
        self.failed = true;
        for consumer in self.consumers.keys() {
            self.state.remove_consumer(*consumer);
        }
        self.cancel_consumers();
        if let Some(broker) = self.broker.upgrade() {
            let (vhost, name) = (&self.shared.vhost, &self.shared.name);
            broker.storage_failed(format!(
                "storage of queue '{name}' in vhost '{vhost}' failed: {e}"
            ));
        }
    }

    /// Take messages in: into memory, or paged to disk once memory is full. A durable queue
    /// writes its persistent ones and answers `confirm` once they are on disk.
    pub(super) fn publish(&mut self, messages: Vec<Arc<Message>>, confirm: Option<ConfirmRequest>) {
        for m in messages {
            if self.failed {
                // Refused, or its store failed on an earlier message of this batch.
                break;
            }
            if self.memory_full() && self.paging_store() {
                let id = self.state.push_paged(m.size_bytes() as u64);
                self.write(id, &m, true);
            } else {
                let id = self.state.push(m.clone());
                if m.is_persistent() && self.store.as_ref().is_some_and(QueueStore::is_durable) {
                    self.write(id, &m, false);
                }
            }
        }
        match (confirm, self.store.as_mut()) {
            (Some(c), _) if self.failed => c.answer(false),
            (Some(c), Some(store)) => store.confirm_after_sync(c),
            (Some(c), None) => c.confirm(),
            (None, _) => {}
        }
    }

    fn write(&mut self, id: MsgId, m: &Message, paged: bool) {
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.append(id, m, paged) {
                self.storage_failed(&e);
            }
        }
    }

    /// Whether a new message must go to disk: something is paged already (order), or memory
    /// holds as many ready messages as it may.
    fn memory_full(&self) -> bool {
        let limits = &self.memory;
        self.state.paged() > 0
            || self.state.in_memory() >= limits.messages
            || self.state.ready_bytes() >= limits.bytes
    }

    /// A store to page into: the queue's own, or a scratch one made now for a non-durable
    /// queue. False if none can be had (then the message stays in memory).
    fn paging_store(&mut self) -> bool {
        if self.store.is_some() {
            return true;
        }
        let vfs = self.vfs.clone();
        let dir = store::paging_dir(&self.data_dir, &self.shared.vhost, &self.shared.name);
        match QueueStore::create_paging(vfs, &dir) {
            Ok(store) => {
                self.store = Some(store);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot page to disk; keeping messages in memory");
                false
            }
        }
    }

    /// Read paged messages back while memory holds less than half of what it may. Whether any
    /// came back.
    pub(super) fn refill(&mut self) -> bool {
        let limits = self.memory;
        if self.state.paged() == 0 || self.state.in_memory() >= limits.messages / 2 {
            return false;
        }
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        let room = limits.messages - self.state.in_memory();
        let bytes = limits.bytes.saturating_sub(self.state.ready_bytes());
        let loaded = match store.load(room, bytes) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.storage_failed(&e);
                return false;
            }
        };
        let any = !loaded.is_empty();
        for l in loaded {
            self.state.load(l.id, Arc::new(l.message), l.redelivered);
        }
        any
    }

    /// queue.purge: the paged messages go from the store too.
    pub(super) fn purge_store(&mut self) {
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.purge_paged() {
                self.storage_failed(&e);
            }
        }
    }

    /// Write the journal (deliveries, removals) and start an fsync if anything waits for one.
    pub(super) fn persist(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let events = self.state.take_journal();
        let result = store.append_events(&events).and_then(|()| {
            if store.wants_sync() {
                store.begin_sync()
            } else {
                store.write().map(|()| None)
            }
        });
        match result {
            Ok(Some((upto, pending))) => {
                let tx = self.local.tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = pending.run();
                    let _ = tx.send(QueueCmd::Synced {
                        upto,
                        pending,
                        result,
                    });
                });
            }
            Ok(None) => {}
            Err(e) => self.storage_failed(&e),
        }
    }
}
