//! amqps: TLS with and without client certificates, SASL EXTERNAL, and the TLS handshake
//! under the handshake timeout, driven by amqprs over rustls. Certificates (a CA, a server
//! certificate for localhost / 127.0.0.1, client certificates) are made for each test with
//! rcgen.

mod common;

use std::path::Path;
use std::time::Duration;

use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use amqprs::BasicProperties;
use common::amqprs_support as rs;
use common::pki::Pki;
use common::{within, TestBroker, STEP};
use tern_server::tls::{CertLogin, TlsConfig};
use tokio::io::AsyncReadExt;

/// The amqps listener's TLS from the test PKI's server certificate.
trait PkiConfig {
    fn config(&self, verify_clients: bool, require: bool, login: CertLogin) -> TlsConfig;
}

impl PkiConfig for Pki {
    fn config(&self, verify_clients: bool, require: bool, login: CertLogin) -> TlsConfig {
        TlsConfig {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            ca_file: verify_clients.then(|| self.path("ca.pem")),
            require_client_cert: require,
            cert_login: login,
        }
    }
}

async fn tls_broker(tls: TlsConfig) -> Option<TestBroker> {
    TestBroker::start_with(|c| {
        c.tls = Some(tls);
        c.handshake_timeout = Duration::from_millis(500);
    })
    .await
}

fn amqps_args(
    broker: &TestBroker,
    adaptor: TlsAdaptor,
    creds: SecurityCredentials,
) -> OpenConnectionArguments {
    let port = broker
        .handle()
        .amqps_addr()
        .expect("an amqps listener")
        .port();
    let mut args = OpenConnectionArguments::new("localhost", port, "", "");
    args.credentials(creds).tls_adaptor(adaptor);
    args
}

fn with_cert(pki: &Pki, name: &str) -> TlsAdaptor {
    let (cert, key) = (
        pki.path(&format!("{name}.pem")),
        pki.path(&format!("{name}.key")),
    );
    TlsAdaptor::with_client_auth(Some(&pki.path("ca.pem")), &cert, &key, "localhost".into())
        .expect("client TLS config")
}

fn without_cert(pki: &Pki) -> TlsAdaptor {
    TlsAdaptor::without_client_auth(Some(&pki.path("ca.pem")), "localhost".into())
        .expect("client TLS config")
}

/// Declare a server-named queue, publish to it, read it back: the connection works.
async fn round_trip(conn: &Connection) {
    let (ch, mut events) = rs::open_confirmed_channel(conn).await;
    let (q, _, _) = rs::declare(&ch, QueueDeclareArguments::new("").exclusive(true).finish()).await;
    let args = BasicPublishArguments::new("", &q);
    within(
        "publish",
        ch.basic_publish(BasicProperties::default(), b"over tls".to_vec(), args),
    )
    .await
    .expect("publish");
    events.await_acks_through(1).await;
    assert_eq!(rs::drain(&ch, &q).await, ["over tls"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_login_over_tls_without_a_client_certificate() {
    let pki = Pki::new();
    let Some(broker) = tls_broker(pki.config(false, false, CertLogin::CommonName)).await else {
        return;
    };
    let creds = SecurityCredentials::new_plain("guest", "guest");
    let (conn, _) = rs::connect_with(&amqps_args(&broker, without_cert(&pki), creds)).await;
    round_trip(&conn).await;
    // The plain listener keeps working beside it.
    let (plain, _) = rs::connect(&broker).await;
    round_trip(&plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_logs_in_the_user_the_client_certificate_names() {
    let pki = Pki::new();
    pki.client("alice", "alice", None);
    pki.client("mallory", "mallory", None);
    let Some(broker) = tls_broker(pki.config(true, false, CertLogin::CommonName)).await else {
        return;
    };
    broker.ctl_ok(None, &["add_user", "alice", "unused"]).await;
    broker.ctl_ok(None, &["clear_password", "alice"]).await;
    broker
        .ctl_ok(Some("/"), &["set_permissions", "alice", ".*", ".*", ".*"])
        .await;
    let args = amqps_args(
        &broker,
        with_cert(&pki, "alice"),
        SecurityCredentials::new_external(),
    );
    let (conn, _) = rs::connect_with(&args).await;
    round_trip(&conn).await;
    connection_shows_its_tls_session(&broker).await;
    let args = amqps_args(
        &broker,
        with_cert(&pki, "mallory"),
        SecurityCredentials::new_external(),
    );
    let refused = within("connect", Connection::open(&args)).await;
    assert!(refused.is_err(), "no user mallory: the login is refused");
    // With a certificate, a password login still works too.
    let creds = SecurityCredentials::new_plain("guest", "guest");
    let (conn, _) = rs::connect_with(&amqps_args(&broker, with_cert(&pki, "mallory"), creds)).await;
    round_trip(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_can_take_the_user_from_the_subject_alternative_name() {
    let pki = Pki::new();
    pki.client("bob", "not-the-user", Some("bob@example.com"));
    let Some(broker) = tls_broker(pki.config(true, true, CertLogin::SanEmail)).await else {
        return;
    };
    broker
        .ctl_ok(None, &["add_user", "bob@example.com", "unused"])
        .await;
    broker
        .ctl_ok(
            Some("/"),
            &["set_permissions", "bob@example.com", ".*", ".*", ".*"],
        )
        .await;
    let args = amqps_args(
        &broker,
        with_cert(&pki, "bob"),
        SecurityCredentials::new_external(),
    );
    let (conn, _) = rs::connect_with(&args).await;
    round_trip(&conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_client_certificate_refuses_clients_without_one() {
    let pki = Pki::new();
    let Some(broker) = tls_broker(pki.config(true, true, CertLogin::CommonName)).await else {
        return;
    };
    let creds = SecurityCredentials::new_plain("guest", "guest");
    let refused = within(
        "connect",
        Connection::open(&amqps_args(&broker, without_cert(&pki), creds)),
    )
    .await;
    assert!(
        refused.is_err(),
        "the TLS handshake fails without a client certificate"
    );
    let (conn, _) = rs::connect(&broker).await;
    round_trip(&conn).await;
}

/// A socket that connects and sends nothing: `handshake_timeout` closes it, TLS or not.
async fn closed_when_silent(addr: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("closed before STEP");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a word: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_handshake_timeout_on_both_listeners() {
    let pki = Pki::new();
    let Some(broker) = tls_broker(pki.config(false, false, CertLogin::CommonName)).await else {
        return;
    };
    let amqps = broker.handle().amqps_addr().expect("amqps");
    closed_when_silent(amqps).await;
    closed_when_silent(broker.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_file_stops_the_start_with_its_name() {
    let pki = Pki::new();
    let mut tls = pki.config(false, false, CertLogin::CommonName);
    tls.cert_file = Path::new("/nonexistent/server.pem").to_owned();
    let mut config = tern_server::Config::for_tests();
    config.tls = Some(tls);
    let err = tern_server::start(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/nonexistent/server.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&config.data_dir);
}

/// The management API lists alice's connection with its TLS protocol, suite and certificate.
async fn connection_shows_its_tls_session(broker: &TestBroker) {
    let api = common::api::Api::of(broker);
    let (_, conns) = api
        .guest(reqwest::Method::GET, "/api/connections", None)
        .await;
    let alice = conns
        .as_array()
        .and_then(|c| c.iter().find(|c| c["user"] == "alice"));
    let alice = alice.unwrap_or_else(|| panic!("alice's connection in {conns}"));
    assert_eq!(alice["ssl"], true);
    assert_eq!(alice["auth_mechanism"], "EXTERNAL");
    assert_eq!(alice["ssl_protocol"], "tlsv1.3", "{alice}");
    assert!(
        alice["ssl_cipher"].as_str().is_some_and(|c| !c.is_empty()),
        "{alice}"
    );
    assert!(
        alice["ssl_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha")),
        "{alice}"
    );
    let subject = alice["peer_cert_subject"].as_str().unwrap_or_default();
    assert!(subject.contains("CN=alice"), "{alice}");
    let issuer = alice["peer_cert_issuer"].as_str().unwrap_or_default();
    assert!(issuer.contains("CN=Tern test CA"), "{alice}");
}

/// A reqwest client that trusts only the test CA.
fn https_client(pki: &Pki) -> reqwest::Client {
    let ca = std::fs::read(pki.path("ca.pem")).expect("read CA");
    let ca = reqwest::Certificate::from_pem(&ca).expect("CA pem");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .expect("https client")
}

fn port_of(broker: &TestBroker, protocol: &str) -> u16 {
    let listeners = broker.handle().listeners();
    let found = listeners.iter().find(|(p, _)| *p == protocol);
    found
        .unwrap_or_else(|| panic!("no {protocol} listener in {listeners:?}"))
        .1
        .port()
}

async fn https_broker(pki: &Pki) -> Option<TestBroker> {
    TestBroker::start_with(|c| {
        c.tls = Some(pki.config(false, false, CertLogin::CommonName));
        c.handshake_timeout = Duration::from_millis(500);
        c.management_tls_port = Some(0);
        c.prometheus_tls_port = Some(0);
    })
    .await
}

async fn get(client: &reqwest::Client, url: &str, auth: bool) -> (u16, String) {
    let mut req = client.get(url);
    if auth {
        req = req.basic_auth("guest", Some("guest"));
    }
    let resp = within("https request", req.send()).await.expect("https");
    let status = resp.status().as_u16();
    (status, within("body", resp.text()).await.expect("body"))
}

#[tokio::test]
async fn the_management_api_and_metrics_are_served_over_https_too() {
    let pki = Pki::new();
    let Some(broker) = https_broker(&pki).await else {
        return;
    };
    let (api, metrics) = (
        port_of(&broker, "https"),
        port_of(&broker, "https/prometheus"),
    );
    let client = https_client(&pki);
    let base = format!("https://localhost:{api}");
    let (status, body) = get(&client, &format!("{base}/api/overview"), true).await;
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).expect("json");
    let https = overview["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["protocol"] == "https");
    assert_eq!(
        https.map(|l| l["port"].clone()),
        Some(api.into()),
        "the bound port is listed"
    );
    assert_eq!(
        get(&client, &format!("{base}/api/queues"), false).await.0,
        401
    );
    let (status, page) = get(&client, &format!("{base}/"), false).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the UI over HTTPS too");
    let (status, text) = get(
        &client,
        &format!("https://localhost:{metrics}/metrics"),
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("rabbitmq_connections "), "{text}");
    let plain = broker.handle().management_addr().port();
    let resp = within(
        "plain http",
        reqwest::get(format!("http://127.0.0.1:{plain}/")),
    )
    .await;
    assert_eq!(
        resp.expect("plain").status(),
        200,
        "the plain listener stays"
    );
}

#[tokio::test]
async fn an_https_client_that_does_not_trust_the_certificate_is_refused() {
    let pki = Pki::new();
    let Some(broker) = https_broker(&pki).await else {
        return;
    };
    let port = port_of(&broker, "https");
    let other = Pki::new();
    let url = format!("https://localhost:{port}/api/overview");
    let refused = within("untrusted", https_client(&other).get(url).send()).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA is not accepted"
    );
}

/// Handshakes run off the accept loop: a client that connects and says nothing holds only
/// its own place, and is dropped at the handshake timeout.
#[tokio::test]
async fn a_silent_client_on_the_https_port_blocks_no_one() {
    let pki = Pki::new();
    let Some(broker) = https_broker(&pki).await else {
        return;
    };
    let port = port_of(&broker, "https");
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let client = https_client(&pki);
    let (status, _) = get(
        &client,
        &format!("https://localhost:{port}/api/whoami"),
        true,
    )
    .await;
    assert_eq!(status, 200, "served while the silent client waits");
    let mut buf = [0u8; 16];
    let read = within("the silent client is dropped", silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a word: {read:?}"
    );
}

#[tokio::test]
async fn an_https_port_without_a_certificate_stops_the_start() {
    let mut config = tern_server::Config::for_tests();
    config.management_tls_port = Some(0);
    let err = tern_server::start(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("need a TLS certificate and key"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&config.data_dir);
}
