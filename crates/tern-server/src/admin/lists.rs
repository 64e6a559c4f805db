//! rabbitmqctl's `list_*` commands for queues, exchanges, bindings, connections, channels and
//! consumers. The objects are rendered by the management API's code; a column is rabbitmqctl's
//! name for a field of that JSON (a JSON pointer), so the two never disagree.
//!
//! Columns are chosen as rabbitmqctl takes them: `list_queues name messages consumers` (or
//! `name,messages`); none given: rabbitmqctl's default columns. A column that is not known is
//! an error naming it and the valid ones.

use std::sync::Arc;

use serde_json::{json, Value};
use tern_core::names::VhostName;

use super::commands::Outcome;
use super::AdminReply;
use crate::broker::Broker;
use crate::management::{bindings, channels, connections, objects};

/// A column: rabbitmqctl's name, and where its value is in the rendered JSON.
type Column = (&'static str, &'static str);

/// What one `list_*` command shows: its columns (all it knows) and the default ones.
struct Listing {
    what: &'static str,
    columns: &'static [Column],
    default: &'static [&'static str],
}

const QUEUES: Listing = Listing {
    what: "queues",
    columns: &[
        ("name", "/name"),
        ("vhost", "/vhost"),
        ("durable", "/durable"),
        ("auto_delete", "/auto_delete"),
        ("exclusive", "/exclusive"),
        ("arguments", "/arguments"),
        ("type", "/type"),
        ("state", "/state"),
        ("node", "/node"),
        ("messages", "/messages"),
        ("messages_ready", "/messages_ready"),
        ("messages_unacknowledged", "/messages_unacknowledged"),
        ("consumers", "/consumers"),
    ],
    default: &["name", "messages"],
};

const EXCHANGES: Listing = Listing {
    what: "exchanges",
    columns: &[
        ("name", "/name"),
        ("vhost", "/vhost"),
        ("type", "/type"),
        ("durable", "/durable"),
        ("auto_delete", "/auto_delete"),
        ("internal", "/internal"),
        ("arguments", "/arguments"),
    ],
    default: &["name", "type"],
};

const BINDINGS: Listing = Listing {
    what: "bindings",
    columns: &[
        ("source_name", "/source"),
        ("source_kind", "/source_kind"),
        ("destination_name", "/destination"),
        ("destination_kind", "/destination_type"),
        ("routing_key", "/routing_key"),
        ("arguments", "/arguments"),
        ("vhost", "/vhost"),
    ],
    default: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
};

const CONNECTIONS: Listing = Listing {
    what: "connections",
    columns: &[
        ("pid", "/name"),
        ("name", "/name"),
        ("user", "/user"),
        ("vhost", "/vhost"),
        ("peer_host", "/peer_host"),
        ("peer_port", "/peer_port"),
        ("host", "/host"),
        ("port", "/port"),
        ("state", "/state"),
        ("ssl", "/ssl"),
        ("channels", "/channels"),
        ("protocol", "/protocol"),
        ("type", "/type"),
        ("node", "/node"),
        ("timeout", "/timeout"),
        ("frame_max", "/frame_max"),
        ("channel_max", "/channel_max"),
        ("connected_at", "/connected_at"),
        ("client_properties", "/client_properties"),
    ],
    default: &["user", "peer_host", "peer_port", "state"],
};

const CHANNELS: Listing = Listing {
    what: "channels",
    columns: &[
        ("pid", "/name"),
        ("name", "/name"),
        ("connection", "/connection_details/name"),
        ("number", "/number"),
        ("user", "/user"),
        ("vhost", "/vhost"),
        ("state", "/state"),
        ("consumer_count", "/consumer_count"),
        ("messages_unacknowledged", "/messages_unacknowledged"),
        ("messages_unconfirmed", "/messages_unconfirmed"),
        ("messages_uncommitted", "/messages_uncommitted"),
        ("acks_uncommitted", "/acks_uncommitted"),
        ("prefetch_count", "/prefetch_count"),
        ("global_prefetch_count", "/global_prefetch_count"),
        ("confirm", "/confirm"),
        ("transactional", "/transactional"),
    ],
    default: &["pid", "user", "consumer_count", "messages_unacknowledged"],
};

const CONSUMERS: Listing = Listing {
    what: "consumers",
    columns: &[
        ("queue_name", "/queue/name"),
        ("channel_pid", "/channel_details/name"),
        ("connection_name", "/channel_details/connection_name"),
        ("consumer_tag", "/consumer_tag"),
        ("ack_required", "/ack_required"),
        ("prefetch_count", "/prefetch_count"),
        ("active", "/active"),
        ("activity_status", "/activity_status"),
        ("exclusive", "/exclusive"),
        ("arguments", "/arguments"),
        ("vhost", "/queue/vhost"),
    ],
    default: &[
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "arguments",
    ],
};

/// Run one `list_*` command.
pub async fn list(
    broker: &Arc<Broker>,
    vhost: &VhostName,
    command: &str,
    args: &[&str],
) -> Outcome {
    let listing = match command {
        "list_queues" => &QUEUES,
        "list_exchanges" => &EXCHANGES,
        "list_bindings" => &BINDINGS,
        "list_connections" => &CONNECTIONS,
        "list_channels" => &CHANNELS,
        _ => &CONSUMERS,
    };
    let columns = listing.chosen(command, args)?;
    let per_vhost = !matches!(command, "list_connections" | "list_channels");
    if per_vhost && !broker.vhost_exists(vhost) {
        return Err(format!("Virtual host '{vhost}' does not exist"));
    }
    let objects = objects_of(broker, vhost, command).await;
    let rows = objects.iter().map(|o| listing.row(&columns, o)).collect();
    let message = if per_vhost {
        format!("Listing {} for vhost {vhost} ...", listing.what)
    } else {
        format!("Listing {} ...", listing.what)
    };
    Ok(AdminReply::values(message, &columns, rows))
}

impl Listing {
    /// The columns asked for (comma- or space-separated), or the default ones.
    fn chosen(&self, command: &str, args: &[&str]) -> Result<Vec<&'static str>, String> {
        let asked: Vec<&str> = args
            .iter()
            .flat_map(|a| a.split(','))
            .filter(|c| !c.is_empty())
            .collect();
        if asked.is_empty() {
            return Ok(self.default.to_vec());
        }
        let known = |c: &str| self.columns.iter().find(|(n, _)| *n == c).map(|(n, _)| *n);
        let unknown: Vec<&str> = asked
            .iter()
            .copied()
            .filter(|c| known(c).is_none())
            .collect();
        if !unknown.is_empty() {
            let valid: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "Info key(s) {} are not supported by {command}. Valid keys are: {}",
                unknown.join(", "),
                valid.join(", ")
            ));
        }
        Ok(asked.into_iter().filter_map(known).collect())
    }

    fn row(&self, columns: &[&str], object: &Value) -> Vec<Value> {
        let pointer = |c: &str| self.columns.iter().find(|(n, _)| *n == c).map(|(_, p)| *p);
        let cell = |c: &&str| pointer(c).and_then(|p| object.pointer(p)).cloned();
        columns
            .iter()
            .map(|c| cell(c).unwrap_or(Value::Null))
            .collect()
    }
}

/// The objects a command lists, as the management API renders them. Connections and
/// channels are node-wide (as in rabbitmqctl); the rest are of one vhost.
async fn objects_of(broker: &Arc<Broker>, vhost: &VhostName, command: &str) -> Vec<Value> {
    let vhosts = std::slice::from_ref(vhost);
    match command {
        "list_queues" => objects::queues_of(broker, vhosts).await,
        "list_exchanges" => objects::exchanges_of(broker, vhosts),
        "list_bindings" => {
            let mut all = bindings::bindings_of(broker, vhosts);
            for o in all.iter_mut().filter_map(Value::as_object_mut) {
                o.insert("source_kind".into(), json!("exchange"));
            }
            all
        }
        "list_connections" => {
            let infos = broker.connection_infos();
            infos
                .iter()
                .map(|c| connections::connection_json(c, broker.node_name()))
                .collect()
        }
        "list_channels" => {
            channels::channels_of(&broker.describe_connections().await, broker.node_name())
        }
        _ => {
            let mut conns = broker.describe_connections().await;
            conns.retain(|(c, _)| c.vhost == vhost.as_str());
            channels::consumers_of(&conns, broker.node_name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_columns_asked_means_rabbitmqctls_default_ones() {
        assert_eq!(
            QUEUES.chosen("list_queues", &[]),
            Ok(vec!["name", "messages"])
        );
        assert_eq!(
            CHANNELS.chosen("list_channels", &[]).map(|c| c[0]),
            Ok("pid")
        );
    }

    #[test]
    fn columns_are_taken_in_the_order_asked_space_or_comma_separated() {
        let asked = QUEUES.chosen("list_queues", &["consumers,name", "messages_ready"]);
        assert_eq!(asked, Ok(vec!["consumers", "name", "messages_ready"]));
    }

    #[test]
    fn an_unknown_column_is_an_error_naming_it_and_the_valid_ones() {
        let err = QUEUES.chosen("list_queues", &["name", "colour"]);
        let err = err.expect_err("colour is not a queue column");
        assert!(
            err.starts_with("Info key(s) colour are not supported by list_queues"),
            "{err}"
        );
        assert!(err.contains("messages_unacknowledged"), "{err}");
    }

    #[test]
    fn a_cell_is_the_field_its_column_points_at() {
        let consumer = json!({"queue": {"name": "q1"}, "consumer_tag": "c", "active": true});
        let row = CONSUMERS.row(&["queue_name", "active", "exclusive"], &consumer);
        assert_eq!(row, vec![json!("q1"), json!(true), Value::Null]);
    }
}
