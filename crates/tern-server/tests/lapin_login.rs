//! Logins Tern-specific configuration decides, over AMQP and the management API:
//! `loopback_users` (guest from loopback only)
//! and the budget of failed logins per source address. The client connects from this
//! machine's non-loopback address to reach the broker as a remote client would.

mod common;

use std::net::Ipv4Addr;

use common::lapin_support::{self as lp, closed_of};
use common::{within, TestBroker};
use lapin::{Connection, ConnectionProperties};

/// An IPv4 address of this machine that is not loopback (192.0.2.2 on eth0 here).
fn non_loopback_ipv4() -> Ipv4Addr {
    let mut found = None;
    // SAFETY: getifaddrs fills a list we walk read-only and free with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        assert_eq!(libc::getifaddrs(&mut list), 0, "getifaddrs");
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found = Some(ip);
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.expect("this test needs a non-loopback IPv4 address on the machine")
}

async fn remote_broker(
    tweak: impl FnOnce(&mut tern_server::Config),
) -> Option<(TestBroker, String)> {
    let broker = TestBroker::start_with(|c| {
        c.bind = [0, 0, 0, 0].into();
        tweak(c);
    })
    .await?;
    let remote = format!("{}:{}", non_loopback_ipv4(), broker.port());
    Some((broker, remote))
}

async fn login(addr: &str, user: &str, password: &str) -> Result<Connection, u16> {
    let uri = format!("amqp://{user}:{password}@{addr}/%2f");
    let result = within(
        "connect",
        Connection::connect(&uri, ConnectionProperties::default()),
    )
    .await;
    result.map_err(|e| closed_of(&e).map_or(0, |c| c.code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_is_refused_from_a_remote_address_and_other_users_are_not() {
    let Some((broker, remote)) = remote_broker(|_| {}).await else {
        return;
    };
    assert_eq!(login(&remote, "guest", "guest").await.err(), Some(403));
    let local = broker.addr.to_string();
    login(&local, "guest", "guest")
        .await
        .expect("guest from loopback");
    broker.ctl_ok(None, &["add_user", "bob", "b0b"]).await;
    broker
        .ctl_ok(Some("/"), &["set_permissions", "bob", ".*", ".*", ".*"])
        .await;
    let conn = login(&remote, "bob", "b0b")
        .await
        .expect("bob from anywhere");
    lp::temp_queue(&lp::channel(&conn).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_loopback_users_lets_guest_in_from_anywhere() {
    let Some((_broker, remote)) = remote_broker(|c| c.loopback_users.clear()).await else {
        return;
    };
    login(&remote, "guest", "guest")
        .await
        .expect("guest from a remote address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_failed_login_budget_an_address_is_refused_even_with_the_right_password() {
    let Some((broker, remote)) = remote_broker(|c| c.login_failure_limit = 3).await else {
        return;
    };
    let local = broker.addr.to_string();
    for _ in 0..3 {
        assert_eq!(login(&local, "guest", "wrong").await.err(), Some(403));
    }
    assert_eq!(
        login(&local, "guest", "guest").await.err(),
        Some(403),
        "the budget of 127.0.0.1 is spent"
    );
    broker.ctl_ok(None, &["add_user", "bob", "b0b"]).await;
    broker
        .ctl_ok(Some("/"), &["set_permissions", "bob", ".*", ".*", ".*"])
        .await;
    login(&remote, "bob", "b0b")
        .await
        .expect("another address keeps its budget");
}

/// GET /api/whoami as `user` at `addr` (host:port of the management listener): the status,
/// and the reason of a refusal.
async fn api_login(addr: &str, user: &str, password: &str) -> (u16, String) {
    let req = reqwest::Client::new()
        .get(format!("http://{addr}/api/whoami"))
        .basic_auth(user, Some(password));
    let resp = within("management login", req.send()).await.expect("http");
    let status = resp.status().as_u16();
    let body: serde_json::Value = within("body", resp.json()).await.expect("json");
    (status, body["reason"].as_str().unwrap_or("").to_string())
}

fn management_at(broker: &TestBroker, ip: impl std::fmt::Display) -> String {
    format!("{ip}:{}", broker.handle().management_addr().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_takes_guest_from_loopback_only_as_rabbitmq_does() {
    let Some((broker, _)) = remote_broker(|_| {}).await else {
        return;
    };
    let remote = management_at(&broker, non_loopback_ipv4());
    let (status, reason) = api_login(&remote, "guest", "guest").await;
    assert_eq!(
        (status, reason.as_str()),
        (401, "User can only log in via localhost")
    );
    let local = management_at(&broker, "127.0.0.1");
    assert_eq!(api_login(&local, "guest", "guest").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_management_logins_spend_the_same_budget_as_amqp_ones() {
    let Some((broker, remote)) = remote_broker(|c| {
        c.login_failure_limit = 3;
        c.loopback_users.clear();
    })
    .await
    else {
        return;
    };
    let local = management_at(&broker, "127.0.0.1");
    for _ in 0..3 {
        let (status, reason) = api_login(&local, "guest", "wrong").await;
        assert_eq!((status, reason.as_str()), (401, "Not_Authorized"));
    }
    assert_eq!(
        api_login(&local, "guest", "guest").await.0,
        401,
        "the budget of 127.0.0.1 is spent, for the API"
    );
    let amqp = broker.addr.to_string();
    assert_eq!(
        login(&amqp, "guest", "guest").await.err(),
        Some(403),
        "and for AMQP"
    );
    let api_remote = management_at(&broker, non_loopback_ipv4());
    assert_eq!(
        api_login(&api_remote, "guest", "guest").await.0,
        200,
        "another address keeps its budget"
    );
    login(&remote, "guest", "guest")
        .await
        .expect("over AMQP too");
}
