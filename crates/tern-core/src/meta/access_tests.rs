//! Users and permissions: the commands, the checks RabbitMQ's access-control table makes, and
//! their survival through a snapshot.

use bytes::Bytes;
use tern_amqp::ReplyCode;

use super::access::{AccessCommand, HashAlgorithm, Op, PasswordHash, Resource, UserDef};
use super::tests::{ok, vh};
use super::*;

fn user(name: &str) -> UserDef {
    UserDef {
        name: name.into(),
        password: Some(PasswordHash {
            algorithm: HashAlgorithm::Sha256,
            salted: Bytes::from_static(b"salt-and-digest"),
        }),
        tags: vec!["management".into()],
    }
}

fn access(cmd: AccessCommand) -> MetaCommand {
    MetaCommand::Access(cmd)
}

fn permit(user: &str, configure: &str, write: &str, read: &str) -> MetaCommand {
    access(AccessCommand::SetPermissions {
        vhost: vh(),
        user: user.into(),
        configure: configure.into(),
        write: write.into(),
        read: read.into(),
    })
}

fn refused(meta: &mut Metadata, cmd: MetaCommand) -> AmqpError {
    let generation = meta.access_generation();
    let err = meta.apply(cmd).expect_err("refused");
    assert_eq!(meta.access_generation(), generation, "nothing changed");
    err
}

fn with_user(name: &str) -> Metadata {
    let mut meta = Metadata::new();
    ok(
        &mut meta,
        access(AccessCommand::AddUser { user: user(name) }),
    );
    meta
}

#[test]
fn bootstrap_creates_the_default_user_once_and_never_again() {
    let mut meta = Metadata::new();
    let boot = access(AccessCommand::Bootstrap {
        user: Some(user("guest")),
    });
    ok(&mut meta, boot.clone());
    let guest = meta.vhost_access(&vh(), &"guest".into()).expect("on /");
    for op in [Op::Configure, Op::Write, Op::Read] {
        assert!(guest.check(Resource::Queue, "anything", op).is_ok());
    }
    let delete = access(AccessCommand::DeleteUser {
        name: "guest".into(),
    });
    ok(&mut meta, delete);
    assert!(meta.answer_locally(&boot).is_some(), "a no-op once done");
    ok(&mut meta, boot);
    assert!(meta.access().user("guest").is_none(), "stays deleted");
}

#[test]
fn patterns_match_unanchored_and_the_empty_one_allows_no_name() {
    let mut meta = with_user("u");
    ok(&mut meta, permit("u", "^app-", "", "log"));
    let a = meta.vhost_access(&vh(), &"u".into()).expect("permitted");
    assert!(a.check(Resource::Queue, "app-1", Op::Configure).is_ok());
    assert!(a.check(Resource::Queue, "my-app-1", Op::Configure).is_err());
    assert!(a.check(Resource::Exchange, "", Op::Write).is_err());
    assert!(
        a.check(Resource::Queue, "q", Op::Write).is_err(),
        "'' is ^$"
    );
    assert!(
        a.check(Resource::Queue, "catalog", Op::Read).is_ok(),
        "unanchored"
    );
    let err = a
        .check(Resource::Queue, "q", Op::Read)
        .expect_err("refused");
    assert_eq!(err.code, ReplyCode::AccessRefused);
    assert_eq!(
        err.message.as_str(),
        "access to queue 'q' in vhost '/' refused for user 'u'"
    );
}

#[test]
fn the_default_exchange_is_matched_as_amq_default() {
    let mut meta = with_user("u");
    ok(&mut meta, permit("u", "", "^amq\\.default$", ""));
    let a = meta.vhost_access(&vh(), &"u".into()).expect("permitted");
    assert!(a.check(Resource::Exchange, "", Op::Write).is_ok());
    let mut meta = with_user("v");
    ok(&mut meta, permit("v", "", "", ""));
    let v = meta.vhost_access(&vh(), &"v".into()).expect("permitted");
    let err = v.check(Resource::Exchange, "", Op::Write).expect_err("no");
    assert_eq!(
        err.message.as_str(),
        "access to exchange 'amq.default' in vhost '/' refused for user 'v'"
    );
    let err = a.check(Resource::Exchange, "x", Op::Write).expect_err("no");
    assert_eq!(
        err.message.as_str(),
        "access to exchange 'x' in vhost '/' refused for user 'u'"
    );
}

#[test]
fn topic_permissions_narrow_one_exchange_with_variables_expanded() {
    let mut meta = with_user("alice");
    ok(&mut meta, permit("alice", ".*", ".*", ".*"));
    let topic = access(AccessCommand::SetTopicPermissions {
        vhost: vh(),
        user: "alice".into(),
        exchange: "amq.topic".into(),
        write: "^{username}\\.".into(),
        read: "".into(),
    });
    ok(&mut meta, topic);
    let a = meta
        .vhost_access(&vh(), &"alice".into())
        .expect("permitted");
    let x = ExchangeName::from("amq.topic");
    assert!(a.check_topic(&x, "alice.orders", Op::Write).is_ok());
    let err = a.check_topic(&x, "bob.orders", Op::Write).expect_err("no");
    assert_eq!(
        err.message.as_str(),
        "access to topic 'bob.orders' in exchange 'amq.topic' in vhost '/' refused for user 'alice'"
    );
    assert!(a.check_topic(&x, "x", Op::Read).is_err(), "empty is ^$");
    let other = ExchangeName::from("other");
    assert!(a.check_topic(&other, "bob.orders", Op::Write).is_ok());
    assert!(a.narrows_topic(&x) && !a.narrows_topic(&other));
}

#[test]
fn unknown_users_vhosts_and_bad_patterns_are_refused_and_change_nothing() {
    let mut meta = with_user("u");
    let err = refused(&mut meta, permit("nobody", ".*", ".*", ".*"));
    assert_eq!(err.code, ReplyCode::NotFound);
    assert_eq!(err.message.as_str(), "User \"nobody\" does not exist");
    let elsewhere = access(AccessCommand::SetPermissions {
        vhost: "nowhere".into(),
        user: "u".into(),
        configure: String::new(),
        write: String::new(),
        read: String::new(),
    });
    let err = refused(&mut meta, elsewhere);
    assert_eq!(
        err.message.as_str(),
        "Virtual host 'nowhere' does not exist"
    );
    let err = refused(&mut meta, permit("u", "(", ".*", ".*"));
    assert_eq!(err.code, ReplyCode::PreconditionFailed);
    assert!(meta.vhost_access(&vh(), &"u".into()).is_none());
    let again = access(AccessCommand::AddUser { user: user("u") });
    assert_eq!(
        refused(&mut meta, again).message.as_str(),
        "User \"u\" already exists"
    );
}

#[test]
fn deleting_a_vhost_or_a_user_takes_their_permissions_along() {
    let mut meta = with_user("u");
    ok(&mut meta, MetaCommand::AddVhost { name: "v".into() });
    for vhost in ["/", "v"] {
        let cmd = access(AccessCommand::SetPermissions {
            vhost: vhost.into(),
            user: "u".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        });
        ok(&mut meta, cmd);
    }
    ok(&mut meta, MetaCommand::DeleteVhost { name: "v".into() });
    ok(&mut meta, MetaCommand::AddVhost { name: "v".into() });
    assert!(meta.vhost_access(&"v".into(), &"u".into()).is_none());
    assert!(meta.vhost_access(&vh(), &"u".into()).is_some());
    ok(
        &mut meta,
        access(AccessCommand::DeleteUser { name: "u".into() }),
    );
    ok(
        &mut meta,
        access(AccessCommand::AddUser { user: user("u") }),
    );
    assert!(meta.vhost_access(&vh(), &"u".into()).is_none());
}

#[test]
fn users_and_permissions_survive_a_snapshot() {
    let mut meta = with_user("alice");
    let boot = access(AccessCommand::Bootstrap {
        user: Some(user("guest")),
    });
    ok(&mut meta, boot.clone());
    ok(&mut meta, permit("alice", "^a", "^b", "^c"));
    let topic = access(AccessCommand::SetTopicPermissions {
        vhost: vh(),
        user: "alice".into(),
        exchange: "amq.topic".into(),
        write: "^{username}$".into(),
        read: ".*".into(),
    });
    ok(&mut meta, topic);
    let mut rebuilt = Metadata::new();
    for cmd in meta.snapshot_commands() {
        ok(&mut rebuilt, cmd);
    }
    let users = |m: &Metadata| m.access().users().cloned().collect::<Vec<_>>();
    assert_eq!(users(&rebuilt), users(&meta));
    let perms = |m: &Metadata| {
        let p = m
            .access()
            .permissions()
            .map(|(v, u, p)| (v.clone(), u.clone(), p.clone()));
        let t = m
            .access()
            .topic_permissions()
            .map(|(v, u, t)| (v.clone(), u.clone(), t.clone()));
        (p.collect::<Vec<_>>(), t.collect::<Vec<_>>())
    };
    assert_eq!(perms(&rebuilt), perms(&meta));
    let alice = rebuilt.vhost_access(&vh(), &"alice".into()).expect("kept");
    assert!(alice
        .check_topic(&"amq.topic".into(), "alice", Op::Write)
        .is_ok());
    assert!(
        rebuilt.answer_locally(&boot).is_some(),
        "still bootstrapped"
    );
}
