//! The commands themselves. Changes go through `Broker::apply` (the metadata log), lists read
//! the metadata.

use std::sync::Arc;

use tern_amqp::ShortStr;
use tern_core::meta::access::{AccessCommand, UserDef};
use tern_core::meta::{MetaCommand, MetaOutcome, Metadata};
use tern_core::names::{UserName, VhostName};

use super::{lists, node, AdminReply, AdminRequest};
use crate::auth;
use crate::broker::Broker;

pub(super) type Outcome = Result<AdminReply, String>;

/// Run one command.
pub async fn execute(broker: &Arc<Broker>, req: AdminRequest) -> AdminReply {
    let vhost = VhostName::from(req.vhost.as_deref().unwrap_or("/"));
    let args: Vec<&str> = req.args.iter().map(String::as_str).collect();
    let Some((name, rest)) = args.split_first() else {
        return AdminReply::failed("no command given");
    };
    let result = match *name {
        "add_user" | "delete_user" | "change_password" | "clear_password" | "set_user_tags"
        | "authenticate_user" => users(broker, name, rest).await,
        "add_vhost" | "delete_vhost" => vhosts(broker, name, rest).await,
        "set_permissions"
        | "clear_permissions"
        | "set_topic_permissions"
        | "clear_topic_permissions" => permissions(broker, &vhost, name, rest).await,
        "list_users"
        | "list_vhosts"
        | "list_permissions"
        | "list_user_permissions"
        | "list_topic_permissions" => broker.with_meta(|m| list(m, &vhost, name, rest)),
        "list_queues" | "list_exchanges" | "list_bindings" | "list_connections"
        | "list_channels" | "list_consumers" => lists::list(broker, &vhost, name, rest).await,
        "status"
        | "cluster_status"
        | "purge_queue"
        | "delete_queue"
        | "close_connection"
        | "export_definitions"
        | "import_definitions"
        | "forget_cluster_node"
        | "join_cluster" => node::execute(broker, &vhost, name, rest, req.body).await,
        other => Err(format!("unknown command '{other}'")),
    };
    result.unwrap_or_else(AdminReply::failed)
}

pub(super) fn usage(command: &str, expected: &str) -> String {
    format!("usage: {command} {expected}")
}

async fn change(broker: &Arc<Broker>, cmd: MetaCommand, done: String) -> Outcome {
    match broker.apply(cmd).await {
        Ok(MetaOutcome::VhostDeleted { existed: false, .. }) => {
            Err("virtual host does not exist".into())
        }
        Ok(_) => Ok(AdminReply::done(done)),
        Err(e) => Err(e.message),
    }
}

async fn access(broker: &Arc<Broker>, cmd: AccessCommand, done: String) -> Outcome {
    change(broker, MetaCommand::Access(cmd), done).await
}

fn hash(password: &str) -> Result<tern_core::meta::access::PasswordHash, String> {
    auth::hash_password(password).map_err(|_| "no randomness for a password salt".to_string())
}

async fn users(broker: &Arc<Broker>, command: &str, args: &[&str]) -> Outcome {
    let name = |n: &str| UserName::from(n);
    match (command, args) {
        ("add_user", [user, password]) => {
            let def = UserDef {
                name: name(user),
                password: Some(hash(password)?),
                tags: Vec::new(),
            };
            let done = format!("Adding user \"{user}\" ...");
            access(broker, AccessCommand::AddUser { user: def }, done).await
        }
        ("delete_user", [user]) => {
            let cmd = AccessCommand::DeleteUser { name: name(user) };
            access(broker, cmd, format!("Deleting user \"{user}\" ...")).await
        }
        ("change_password", [user, password]) => {
            let cmd = AccessCommand::SetPassword {
                name: name(user),
                password: Some(hash(password)?),
            };
            access(
                broker,
                cmd,
                format!("Changing password for user \"{user}\" ..."),
            )
            .await
        }
        ("clear_password", [user]) => {
            let cmd = AccessCommand::SetPassword {
                name: name(user),
                password: None,
            };
            access(
                broker,
                cmd,
                format!("Clearing password for user \"{user}\" ..."),
            )
            .await
        }
        ("set_user_tags", [user, tags @ ..]) => {
            let cmd = AccessCommand::SetTags {
                name: name(user),
                tags: tags.iter().map(|t| ShortStr::from(*t)).collect(),
            };
            let done = format!(
                "Setting tags for user \"{user}\" to [{}] ...",
                tags.join(", ")
            );
            access(broker, cmd, done).await
        }
        ("authenticate_user", [user, password]) => match broker.check_password(user, password) {
            Ok(()) => Ok(AdminReply::done(format!(
                "Authenticating user \"{user}\" ...\nSuccess"
            ))),
            Err(why) => Err(format!(
                "Error: failed to authenticate user \"{user}\": {why}"
            )),
        },
        ("add_user" | "change_password" | "authenticate_user", _) => {
            Err(usage(command, "<username> <password>"))
        }
        _ => Err(usage(command, "<username>")),
    }
}

async fn vhosts(broker: &Arc<Broker>, command: &str, args: &[&str]) -> Outcome {
    let [vhost] = args else {
        return Err(usage(command, "<vhost>"));
    };
    let name = VhostName::from(*vhost);
    if command == "add_vhost" {
        let done = format!("Adding vhost \"{vhost}\" ...");
        return change(broker, MetaCommand::AddVhost { name }, done).await;
    }
    let done = format!("Deleting vhost \"{vhost}\" ...");
    change(broker, MetaCommand::DeleteVhost { name }, done)
        .await
        .map_err(|_| format!("Virtual host '{vhost}' does not exist"))
}

async fn permissions(
    broker: &Arc<Broker>,
    vhost: &VhostName,
    command: &str,
    args: &[&str],
) -> Outcome {
    let (v, u) = (vhost.clone(), |n: &str| UserName::from(n));
    let (cmd, done) = match (command, args) {
        ("set_permissions", [user, configure, write, read]) => (
            AccessCommand::SetPermissions {
                vhost: v,
                user: u(user),
                configure: configure.to_string(),
                write: write.to_string(),
                read: read.to_string(),
            },
            format!("Setting permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
        ),
        ("clear_permissions", [user]) => (
            AccessCommand::ClearPermissions { vhost: v, user: u(user) },
            format!("Clearing permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
        ),
        ("set_topic_permissions", [user, exchange, write, read]) => (
            AccessCommand::SetTopicPermissions {
                vhost: v,
                user: u(user),
                exchange: (*exchange).into(),
                write: write.to_string(),
                read: read.to_string(),
            },
            format!("Setting topic permissions on \"{exchange}\" for user \"{user}\" in vhost \"{vhost}\" ..."),
        ),
        ("clear_topic_permissions", [user, rest @ ..]) if rest.len() <= 1 => (
            AccessCommand::ClearTopicPermissions {
                vhost: v,
                user: u(user),
                exchange: rest.first().map(|x| (*x).into()),
            },
            format!("Clearing topic permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
        ),
        ("set_permissions", _) => return Err(usage(command, "[-p <vhost>] <username> <conf> <write> <read>")),
        ("set_topic_permissions", _) => return Err(usage(command, "[-p <vhost>] <username> <exchange> <write> <read>")),
        _ => return Err(usage(command, "[-p <vhost>] <username>")),
    };
    access(broker, cmd, done).await
}

fn list(meta: &Metadata, vhost: &VhostName, command: &str, args: &[&str]) -> Outcome {
    let a = meta.access();
    let s = |x: &str| x.to_string();
    match (command, args) {
        ("list_users", []) => {
            let rows = a.users().map(|u| vec![s(&u.name), tags(&u.tags)]).collect();
            Ok(AdminReply::table(
                "Listing users ...",
                &["user", "tags"],
                rows,
            ))
        }
        ("list_vhosts", []) => {
            let rows = meta.vhosts().map(|v| vec![s(v)]).collect();
            Ok(AdminReply::table("Listing vhosts ...", &["name"], rows))
        }
        ("list_permissions", []) => {
            let rows = a
                .permissions()
                .filter(|(v, _, _)| *v == vhost)
                .map(|(_, u, p)| {
                    vec![
                        s(u),
                        s(p.configure.text()),
                        s(p.write.text()),
                        s(p.read.text()),
                    ]
                })
                .collect();
            let message = format!("Listing permissions for vhost \"{vhost}\" ...");
            Ok(AdminReply::table(
                message,
                &["user", "configure", "write", "read"],
                rows,
            ))
        }
        ("list_user_permissions", [user]) => {
            if a.user(user).is_none() {
                return Err(format!("User \"{user}\" does not exist"));
            }
            let rows = a
                .permissions()
                .filter(|(_, u, _)| u.as_str() == *user)
                .map(|(v, _, p)| {
                    vec![
                        s(v),
                        s(p.configure.text()),
                        s(p.write.text()),
                        s(p.read.text()),
                    ]
                })
                .collect();
            let message = format!("Listing permissions for user \"{user}\" ...");
            Ok(AdminReply::table(
                message,
                &["vhost", "configure", "write", "read"],
                rows,
            ))
        }
        ("list_topic_permissions", []) => {
            let rows = a
                .topic_permissions()
                .filter(|(v, _, _)| *v == vhost)
                .map(|(_, u, t)| vec![s(u), s(&t.exchange), s(t.write.text()), s(t.read.text())])
                .collect();
            let message = format!("Listing topic permissions for vhost \"{vhost}\" ...");
            Ok(AdminReply::table(
                message,
                &["user", "exchange", "write", "read"],
                rows,
            ))
        }
        ("list_user_permissions", _) => Err(usage(command, "<username>")),
        _ => Err(usage(command, "[-p <vhost>]")),
    }
}

/// rabbitmqctl's form: `[administrator, monitoring]`.
fn tags(tags: &[ShortStr]) -> String {
    let names: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
    format!("[{}]", names.join(", "))
}
