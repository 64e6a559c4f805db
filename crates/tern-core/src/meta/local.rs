//! Commands that can be answered without going through the log: passive declares, and
//! commands that would change nothing (a redeclare, a binding that exists, a delete of what is
//! not there). Clients redeclare their queues and bindings on every connect; answering those
//! locally spares the metadata log a write and the client an fsync.

use tern_amqp::{AmqpError, FieldTable};

use super::access::AccessCommand;
use super::{Binding, MetaCommand, MetaOutcome, Metadata};
use crate::names::VhostName;

fn sorted(arguments: &FieldTable) -> FieldTable {
    let mut t = arguments.clone();
    t.0.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

impl Metadata {
    /// The answer to `cmd` if it is certain to change nothing (then it is computed here, by the
    /// same code that applies it); None if it must go through the log.
    pub fn answer_locally(&mut self, cmd: &MetaCommand) -> Option<Result<MetaOutcome, AmqpError>> {
        if !self.changes_nothing(cmd) {
            return None;
        }
        let generation = self.generation;
        let answer = self.apply(cmd.clone());
        debug_assert_eq!(self.generation, generation, "{cmd:?} changed the state");
        Some(answer)
    }

    fn changes_nothing(&self, cmd: &MetaCommand) -> bool {
        match cmd {
            MetaCommand::DeclareExchange {
                vhost,
                def,
                passive,
            } => *passive || def.name.is_empty() || self.exchange(vhost, &def.name).is_some(),
            MetaCommand::DeclareQueue {
                vhost,
                def,
                passive,
                ..
            } => *passive || def.name.is_empty() || self.queue(vhost, &def.name).is_some(),
            MetaCommand::DeleteExchange { vhost, name, .. } => {
                name.is_empty() || name.starts_with("amq.") || self.exchange(vhost, name).is_none()
            }
            MetaCommand::DeleteQueue { vhost, name } => self.queue(vhost, name).is_none(),
            MetaCommand::Bind { vhost, binding } => self.has_binding(vhost, binding),
            MetaCommand::Unbind { vhost, binding } => {
                self.vhost_exists(vhost) && !self.has_binding(vhost, binding)
            }
            MetaCommand::AddVhost { name } => self.vhost_exists(name),
            MetaCommand::DeleteVhost { name } => !self.vhost_exists(name),
            MetaCommand::DropTransient
            | MetaCommand::DropNodeTransient { .. }
            | MetaCommand::ForgetNode { .. }
            | MetaCommand::Batch(_) => false,
            MetaCommand::Access(AccessCommand::Bootstrap { .. }) => self.access().bootstrapped(),
            MetaCommand::Access(_) => false,
        }
    }

    /// Whether this exact binding (arguments in any order) exists.
    fn has_binding(&self, vhost: &VhostName, binding: &Binding) -> bool {
        let Some(vh) = self.vhosts.get(vhost) else {
            return false;
        };
        let wanted = Binding {
            arguments: sorted(&binding.arguments),
            ..binding.clone()
        };
        vh.has_binding(&wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bind, declare_q, declare_x, ok, qdef, to_q, unbind, vh, xdef};
    use super::*;
    use crate::routing::ExchangeKind;

    #[test]
    fn what_changes_nothing_is_answered_locally_and_the_rest_is_not() {
        let mut meta = Metadata::new();
        let x = declare_x(xdef("x", ExchangeKind::Direct));
        assert!(
            meta.answer_locally(&x).is_none(),
            "a new exchange goes to the log"
        );
        ok(&mut meta, x.clone());
        assert_eq!(
            meta.answer_locally(&x),
            Some(Ok(MetaOutcome::ExchangeDeclared { created: false }))
        );
        let mut other_kind = xdef("x", ExchangeKind::Fanout);
        other_kind.durable = true;
        let refused = meta
            .answer_locally(&declare_x(other_kind))
            .expect("answered");
        assert!(refused.is_err(), "406 without a log write");
        let q = declare_q(qdef("q"), 1);
        assert!(meta.answer_locally(&q).is_none());
        ok(&mut meta, q.clone());
        assert!(matches!(
            meta.answer_locally(&q),
            Some(Ok(MetaOutcome::QueueDeclared { created: false, .. }))
        ));
        let b = bind("x", to_q("q"), "k");
        assert!(meta.answer_locally(&b).is_none());
        ok(&mut meta, b.clone());
        assert_eq!(
            meta.answer_locally(&b),
            Some(Ok(MetaOutcome::Bound { created: false }))
        );
        assert!(meta.answer_locally(&unbind("x", to_q("q"), "k")).is_none());
        assert!(meta
            .answer_locally(&unbind("x", to_q("q"), "other"))
            .is_some());
        let gone = MetaCommand::DeleteQueue {
            vhost: vh(),
            name: "missing".into(),
        };
        assert!(matches!(
            meta.answer_locally(&gone),
            Some(Ok(MetaOutcome::QueueDeleted { existed: false, .. }))
        ));
        assert!(meta.answer_locally(&MetaCommand::DropTransient).is_none());
    }
}
