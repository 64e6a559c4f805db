//! Users, their tags and passwords, and what each may do in each vhost: RabbitMQ's internal
//! authentication and authorization backend, as part of the metadata state machine.
//!
//! Permissions are three regular expressions per user and vhost (configure, write, read),
//! matched unanchored against a resource's name, as RabbitMQ matches them (`re:run`): `.*`
//! allows everything, `^amq\.gen-` a prefix, and the empty pattern means `^$` (nothing). The
//! default exchange is matched as `amq.default`. A user with no permissions in a vhost may not
//! open it. Topic permissions narrow publishing to (write) and binding from (read) one topic
//! exchange by routing key; a user with none for an exchange is not narrowed. `{username}` and
//! `{vhost}` in a topic pattern are expanded when it is set.
//!
//! Passwords are kept as RabbitMQ keeps them (a 4-byte salt, then SHA-256 or SHA-512 of salt
//! and password), so definitions exported from RabbitMQ import as they are. Hashing and
//! verifying live in the server, which has the randomness: commands carry hashes, and `apply`
//! stays deterministic.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use regex::Regex;
use tern_amqp::{AmqpError, ReplyCode, ShortStr};

use crate::names::{ExchangeName, UserName, VhostName};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    /// The name RabbitMQ's definitions use (`hashing_algorithm`).
    pub fn rabbit_name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    pub fn from_rabbit_name(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" => Some(HashAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }
}

/// A stored password: the salt followed by the digest of salt ++ password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub algorithm: HashAlgorithm,
    pub salted: Bytes,
}

impl fmt::Debug for PasswordHash {
    /// Never the hash itself: it is as good as a password against a weak one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({:?}, ..)", self.algorithm)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserDef {
    pub name: UserName,
    /// None: the user cannot log in with a password (EXTERNAL only).
    pub password: Option<PasswordHash>,
    /// administrator, monitoring, management, policymaker, impersonator, or any other word.
    pub tags: Vec<ShortStr>,
}

/// A permission pattern as set, and compiled.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Pattern {
    /// Compile `text` as RabbitMQ would match it; the empty pattern is `^$`.
    pub fn new(text: &str) -> Result<Self, AmqpError> {
        Self::expanded(text, text)
    }

    /// `text` as set, matched as `source` (topic patterns, after variable expansion).
    fn expanded(text: &str, source: &str) -> Result<Self, AmqpError> {
        let source = if source.is_empty() { "^$" } else { source };
        let regex = Regex::new(source).map_err(|e| {
            let text = format!("invalid regular expression '{text}': {e}");
            AmqpError::new(ReplyCode::PreconditionFailed, text)
        })?;
        Ok(Pattern {
            text: text.to_owned(),
            regex,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Permissions {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TopicPermissions {
    pub exchange: ExchangeName,
    pub write: Pattern,
    pub read: Pattern,
}

/// A change to users or permissions: one metadata command.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessCommand {
    AddUser {
        user: UserDef,
    },
    DeleteUser {
        name: UserName,
    },
    /// change_password (Some) and clear_password (None).
    SetPassword {
        name: UserName,
        password: Option<PasswordHash>,
    },
    SetTags {
        name: UserName,
        tags: Vec<ShortStr>,
    },
    SetPermissions {
        vhost: VhostName,
        user: UserName,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        vhost: VhostName,
        user: UserName,
    },
    SetTopicPermissions {
        vhost: VhostName,
        user: UserName,
        exchange: ExchangeName,
        write: String,
        read: String,
    },
    /// One exchange's, or (None) all of the user's topic permissions in the vhost.
    ClearTopicPermissions {
        vhost: VhostName,
        user: UserName,
        exchange: Option<ExchangeName>,
    },
    /// The node's first start: create the default user (if any, and if absent) with every
    /// permission on `/`, as RabbitMQ does for `guest`. Does nothing once done, so a deleted
    /// default user stays deleted.
    Bootstrap {
        user: Option<UserDef>,
    },
}

/// What an operation needs on a resource (RabbitMQ's configure / write / read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Configure,
    Write,
    Read,
}

/// Users and permissions of every vhost.
#[derive(Debug, Default)]
pub struct AccessState {
    users: BTreeMap<UserName, UserDef>,
    permissions: BTreeMap<(VhostName, UserName), Permissions>,
    topics: BTreeMap<(VhostName, UserName, ExchangeName), TopicPermissions>,
    bootstrapped: bool,
}

fn no_user(name: &UserName) -> AmqpError {
    AmqpError::new(
        ReplyCode::NotFound,
        format!("User \"{name}\" does not exist"),
    )
}

fn no_vhost(vhost: &VhostName) -> AmqpError {
    AmqpError::new(
        ReplyCode::NotFound,
        format!("Virtual host '{vhost}' does not exist"),
    )
}

impl AccessState {
    /// Apply one command; `vhost_exists` answers for the vhosts permissions name.
    pub fn apply(
        &mut self,
        cmd: AccessCommand,
        vhost_exists: impl Fn(&VhostName) -> bool,
    ) -> Result<bool, AmqpError> {
        match cmd {
            AccessCommand::AddUser { user } => self.add_user(user),
            AccessCommand::DeleteUser { name } => self.delete_user(&name),
            AccessCommand::SetPassword { name, password } => {
                self.user_mut(&name)?.password = password;
                Ok(true)
            }
            AccessCommand::SetTags { name, tags } => {
                self.user_mut(&name)?.tags = tags;
                Ok(true)
            }
            AccessCommand::SetPermissions {
                vhost,
                user,
                configure,
                write,
                read,
            } => {
                self.known(&vhost, &user, vhost_exists)?;
                let perms = Permissions {
                    configure: Pattern::new(&configure)?,
                    write: Pattern::new(&write)?,
                    read: Pattern::new(&read)?,
                };
                self.permissions.insert((vhost, user), perms);
                Ok(true)
            }
            AccessCommand::ClearPermissions { vhost, user } => {
                self.known(&vhost, &user, vhost_exists)?;
                Ok(self.permissions.remove(&(vhost, user)).is_some())
            }
            AccessCommand::SetTopicPermissions {
                vhost,
                user,
                exchange,
                write,
                read,
            } => {
                self.known(&vhost, &user, vhost_exists)?;
                self.set_topic(vhost, user, exchange, &write, &read)
            }
            AccessCommand::ClearTopicPermissions {
                vhost,
                user,
                exchange,
            } => {
                self.known(&vhost, &user, vhost_exists)?;
                Ok(self.clear_topic(&vhost, &user, exchange.as_ref()))
            }
            AccessCommand::Bootstrap { user } => Ok(self.bootstrap(user, vhost_exists)),
        }
    }

    fn add_user(&mut self, user: UserDef) -> Result<bool, AmqpError> {
        if self.users.contains_key(&user.name) {
            let text = format!("User \"{}\" already exists", user.name);
            return Err(AmqpError::new(ReplyCode::PreconditionFailed, text));
        }
        self.users.insert(user.name.clone(), user);
        Ok(true)
    }

    fn delete_user(&mut self, name: &UserName) -> Result<bool, AmqpError> {
        self.users.remove(name).ok_or_else(|| no_user(name))?;
        self.permissions.retain(|(_, user), _| user != name);
        self.topics.retain(|(_, user, _), _| user != name);
        Ok(true)
    }

    fn user_mut(&mut self, name: &UserName) -> Result<&mut UserDef, AmqpError> {
        self.users.get_mut(name).ok_or_else(|| no_user(name))
    }

    fn known(
        &self,
        vhost: &VhostName,
        user: &UserName,
        vhost_exists: impl Fn(&VhostName) -> bool,
    ) -> Result<(), AmqpError> {
        if !self.users.contains_key(user) {
            return Err(no_user(user));
        }
        if !vhost_exists(vhost) {
            return Err(no_vhost(vhost));
        }
        Ok(())
    }

    fn set_topic(
        &mut self,
        vhost: VhostName,
        user: UserName,
        exchange: ExchangeName,
        write: &str,
        read: &str,
    ) -> Result<bool, AmqpError> {
        let expand = |text: &str| {
            let source = text
                .replace("{username}", user.as_str())
                .replace("{vhost}", vhost.as_str());
            Pattern::expanded(text, &source)
        };
        let perms = TopicPermissions {
            exchange: exchange.clone(),
            write: expand(write)?,
            read: expand(read)?,
        };
        self.topics.insert((vhost, user, exchange), perms);
        Ok(true)
    }

    fn clear_topic(
        &mut self,
        vhost: &VhostName,
        user: &UserName,
        exchange: Option<&ExchangeName>,
    ) -> bool {
        let before = self.topics.len();
        self.topics
            .retain(|(v, u, x), _| !(v == vhost && u == user && exchange.is_none_or(|e| e == x)));
        self.topics.len() != before
    }

    fn bootstrap(
        &mut self,
        user: Option<UserDef>,
        vhost_exists: impl Fn(&VhostName) -> bool,
    ) -> bool {
        if std::mem::replace(&mut self.bootstrapped, true) {
            return false;
        }
        let Some(user) = user else { return true };
        let name = user.name.clone();
        self.users.entry(name.clone()).or_insert(user);
        let root = VhostName::from("/");
        if vhost_exists(&root) {
            let all = Pattern::new(".*").expect("a valid pattern");
            let perms = Permissions {
                configure: all.clone(),
                write: all.clone(),
                read: all,
            };
            self.permissions.entry((root, name)).or_insert(perms);
        }
        true
    }

    /// The vhost went: so do the permissions on it.
    pub fn forget_vhost(&mut self, vhost: &VhostName) -> bool {
        let before = self.permissions.len() + self.topics.len();
        self.permissions.retain(|(v, _), _| v != vhost);
        self.topics.retain(|(v, _, _), _| v != vhost);
        self.permissions.len() + self.topics.len() != before
    }

    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    pub fn user(&self, name: &str) -> Option<&UserDef> {
        self.users.get(&UserName::from(name))
    }

    pub fn users(&self) -> impl Iterator<Item = &UserDef> + '_ {
        self.users.values()
    }

    /// Every (vhost, user, permissions), by vhost then user.
    pub fn permissions(&self) -> impl Iterator<Item = (&VhostName, &UserName, &Permissions)> + '_ {
        self.permissions.iter().map(|((v, u), p)| (v, u, p))
    }

    /// Every (vhost, user, topic permissions), by vhost, user, exchange.
    pub fn topic_permissions(
        &self,
    ) -> impl Iterator<Item = (&VhostName, &UserName, &TopicPermissions)> + '_ {
        self.topics.iter().map(|((v, u, _), p)| (v, u, p))
    }

    /// Commands that rebuild this state on an empty one (a snapshot's part).
    pub fn snapshot_commands(&self) -> Vec<AccessCommand> {
        let mut out = Vec::new();
        if self.bootstrapped {
            out.push(AccessCommand::Bootstrap { user: None });
        }
        for user in self.users.values() {
            out.push(AccessCommand::AddUser { user: user.clone() });
        }
        for ((vhost, user), p) in &self.permissions {
            out.push(AccessCommand::SetPermissions {
                vhost: vhost.clone(),
                user: user.clone(),
                configure: p.configure.text().to_owned(),
                write: p.write.text().to_owned(),
                read: p.read.text().to_owned(),
            });
        }
        for ((vhost, user, exchange), t) in &self.topics {
            out.push(AccessCommand::SetTopicPermissions {
                vhost: vhost.clone(),
                user: user.clone(),
                exchange: exchange.clone(),
                write: t.write.text().to_owned(),
                read: t.read.text().to_owned(),
            });
        }
        out
    }

    /// What `user` may do in `vhost`; None if the user may not open it.
    pub fn vhost_access(&self, vhost: &VhostName, user: &UserName) -> Option<VhostAccess> {
        let perms = self.permissions.get(&(vhost.clone(), user.clone()))?;
        let topics = self
            .topics
            .range((vhost.clone(), user.clone(), ExchangeName::default())..)
            .take_while(|((v, u, _), _)| v == vhost && u == user)
            .map(|(_, t)| t.clone())
            .collect();
        Some(VhostAccess {
            user: user.clone(),
            vhost: vhost.clone(),
            perms: perms.clone(),
            topics,
        })
    }
}

/// A resource's kind, as permission texts name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Queue,
    Exchange,
}

/// One user's permissions in one vhost, as a connection checks them.
#[derive(Clone, Debug)]
pub struct VhostAccess {
    pub user: UserName,
    pub vhost: VhostName,
    perms: Permissions,
    topics: Vec<TopicPermissions>,
}

impl VhostAccess {
    /// 403 ACCESS_REFUSED unless `op` on the named resource is allowed. The default exchange
    /// is `amq.default` here, in the match and in the text, as in RabbitMQ.
    pub fn check(&self, kind: Resource, name: &str, op: Op) -> Result<(), AmqpError> {
        let pattern = match op {
            Op::Configure => &self.perms.configure,
            Op::Write => &self.perms.write,
            Op::Read => &self.perms.read,
        };
        if pattern.matches(matched_name(kind, name)) {
            return Ok(());
        }
        Err(refused(kind, name, &self.vhost, &self.user))
    }

    /// Whether any topic permission narrows this exchange (so publishers need to check keys).
    pub fn narrows_topic(&self, exchange: &ExchangeName) -> bool {
        self.topics.iter().any(|t| &t.exchange == exchange)
    }

    /// 403 unless the routing key may be published (Write) or bound (Read) on this topic
    /// exchange.
    pub fn check_topic(&self, exchange: &ExchangeName, key: &str, op: Op) -> Result<(), AmqpError> {
        let Some(t) = self.topics.iter().find(|t| &t.exchange == exchange) else {
            return Ok(());
        };
        let pattern = if op == Op::Write { &t.write } else { &t.read };
        if pattern.matches(key) {
            return Ok(());
        }
        Err(topic_refused(exchange, key, &self.vhost, &self.user))
    }
}

/// The name a permission pattern is matched against: the default exchange is `amq.default`.
fn matched_name(kind: Resource, name: &str) -> &str {
    match (kind, name) {
        (Resource::Exchange, "") => "amq.default",
        _ => name,
    }
}

/// 403 for `kind` `name`, in RabbitMQ's words (the default exchange named `amq.default`).
pub fn refused(kind: Resource, name: &str, vhost: &VhostName, user: &UserName) -> AmqpError {
    let (kind_text, name) = match kind {
        Resource::Queue => ("queue", name),
        Resource::Exchange => ("exchange", matched_name(kind, name)),
    };
    let text =
        format!("access to {kind_text} '{name}' in vhost '{vhost}' refused for user '{user}'");
    AmqpError::new(ReplyCode::AccessRefused, text)
}

/// 403 for a routing key a topic permission does not allow.
pub fn topic_refused(
    exchange: &ExchangeName,
    key: &str,
    vhost: &VhostName,
    user: &UserName,
) -> AmqpError {
    let text = format!(
        "access to topic '{key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
    );
    AmqpError::new(ReplyCode::AccessRefused, text)
}
