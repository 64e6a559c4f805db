//! The management web UI: its assets and their security headers over plain HTTP, and the UI
//! itself in a real browser (headless chromium, see `browser`): log in, find a queue an AMQP
//! client made, whose name is HTML, shown as text and never parsed; publish to it and get its
//! messages back (payloads and headers HTML too, shown as text), and purge it.
//!
//! Needs chromium 112 or later (`scripts/test.sh` installs it): without it the browser test
//! fails naming the binary it tried and why.

mod browser;
mod common;

use std::path::PathBuf;

use browser::{Chromium, Page};
use common::lapin_support as lp;
use common::{within, TestBroker};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:";

fn base_url(broker: &TestBroker) -> String {
    format!(
        "http://127.0.0.1:{}",
        broker.handle().management_addr().port()
    )
}

/// A path segment as the UI encodes it (JavaScript's encodeURIComponent: `/` is `%2F`).
fn encode_component(s: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
    s.bytes()
        .map(|b| {
            if keep(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn get(url: &str) -> reqwest::Response {
    within("http", Client::new().get(url).send())
        .await
        .expect("http request")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header on {}", resp.url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_assets_are_served_without_auth_under_a_strict_content_security_policy() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let base = base_url(&broker);
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "application/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let resp = get(&format!("{base}{path}")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(header(&resp, "content-type").starts_with(kind), "{path}");
        assert_eq!(header(&resp, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{path}");
    }
    let page = within("body", get(&format!("{base}/")).await.text())
        .await
        .expect("index body");
    assert!(page.contains(r#"<script src="ui/app.js" defer></script>"#));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline script or style"
    );
    let script = within("body", get(&format!("{base}/ui/app.js")).await.text())
        .await
        .expect("app.js body");
    assert!(
        !script.contains("innerHTML"),
        "the UI builds its DOM from text only"
    );
    // The API keeps its own answers: 401 without credentials, 404 JSON for unknown paths.
    let resp = get(&format!("{base}/api/queues")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let unknown = Client::new()
        .get(format!("{base}/api/no-such-route"))
        .basic_auth("guest", Some("guest"))
        .send();
    let unknown = within("http", unknown).await.expect("http request");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = within("json", unknown.json()).await.expect("json body");
    assert_eq!(body["error"], "Object Not Found");
}

/// `document.querySelector(...)` for a queue row's cells, by the name in its first cell.
fn queue_row_js(name_js: &str) -> String {
    format!(
        "[...document.querySelectorAll('#queues-table tbody tr')]\
         .find(tr => tr.cells[0].textContent === {name_js})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_a_queue_with_an_html_name_as_text_publishes_gets_and_purges() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let queue = common::unique("ui-<img src=x onerror=alert(1)>-q");
    let conn = lp::connect(&broker).await;
    let ch = lp::confirmed_channel(&conn).await;
    lp::declare_queue(&ch, &queue).await;
    for i in 0..3 {
        let body = format!("<script>alert({i})</script>");
        lp::publish(&ch, "", &queue, body.as_bytes()).await;
    }
    let base = base_url(&broker);
    let chromium = Chromium::launch().await;
    let mut page = Page::open(&chromium.ws_url).await;
    let name_js = serde_json::to_string(&queue).expect("queue name as a JS string");

    log_in_as_guest(&mut page, &base).await;
    page.eval("document.querySelector('#tabs a[data-tab=queues]').click()")
        .await;
    find_queue_in_list(&mut page, &name_js, "3").await;
    open_queue(&mut page, &name_js).await;
    publish_in_the_ui(&mut page).await;
    get_in_the_ui(&mut page).await;
    save_artifact("web-ui-messages.png", &page.screenshot().await);
    assert_eq!(
        messages_in(&base, &queue).await,
        4,
        "got with requeue: all stay"
    );
    purge_in_the_ui(&mut page, &queue).await;
    assert_eq!(messages_in(&base, &queue).await, 0, "purged through the UI");

    page.eval("document.querySelector('#tabs a[data-tab=queues]').click()")
        .await;
    find_queue_in_list(&mut page, &name_js, "0").await;
    save_artifact("web-ui-queues.png", &page.screenshot().await);
    assert_eq!(page.troubles(), Vec::<String>::new(), "trouble in the page");
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tab_and_the_detail_pages_render_without_an_error() {
    let Some(broker) = TestBroker::start_own().await else {
        return;
    };
    let _conn = lp::connect(&broker).await;
    let base = base_url(&broker);
    let chromium = Chromium::launch().await;
    let mut page = Page::open(&chromium.ws_url).await;
    log_in_as_guest(&mut page, &base).await;
    let overview = "document.querySelectorAll('canvas.chart').length === 2 \
                    && document.getElementById('view').textContent.includes('Connections1') \
                    && document.querySelector('table.nodes td')?.textContent === 'tern@localhost' \
                    && document.querySelector('table.nodes').textContent.includes('running')";
    page.wait_for("the overview's totals and charts", overview)
        .await;
    save_artifact("web-ui-overview.png", &page.screenshot().await);
    visit_every_tab(&mut page).await;
    visit_a_connection_and_an_exchange(&mut page).await;
    assert_eq!(page.troubles(), Vec::<String>::new(), "trouble in the page");
    drop(chromium);
}

async fn visit_every_tab(page: &mut Page) {
    for (tab, shows) in [
        ("connections", "#connections-table"),
        ("channels", "#channels-table, #view .empty"),
        ("exchanges", "#exchanges-table"),
        ("queues", "#queues-table, #view .empty"),
        ("admin", "#permissions table"),
        ("definitions", "#view .box button"),
    ] {
        page.eval(&format!("location.hash = '#/{tab}'")).await;
        let shown = format!("!!document.querySelector('{shows}')");
        page.wait_for(&format!("the {tab} tab"), &shown).await;
        assert_no_error_shown(page, tab).await;
    }
}

async fn visit_a_connection_and_an_exchange(page: &mut Page) {
    page.eval("location.hash = '#/connections'").await;
    page.wait_for(
        "a connection",
        "!!document.querySelector('#connections-table a')",
    )
    .await;
    page.eval("document.querySelector('#connections-table a').click()")
        .await;
    page.wait_for(
        "the connection's page",
        "document.querySelector('#view pre')?.textContent.includes('product')",
    )
    .await;
    assert_no_error_shown(page, "the connection's page").await;
    page.eval("location.hash = '#/exchanges/%2F/amq.direct'")
        .await;
    page.wait_for(
        "the exchange's page",
        "document.querySelector('#view .facts')?.textContent.includes('Typedirect')",
    )
    .await;
    assert_no_error_shown(page, "the exchange's page").await;
}

async fn assert_no_error_shown(page: &mut Page, what: &str) {
    let flash = page
        .eval("document.getElementById('flash').className === 'error' && document.getElementById('flash').textContent")
        .await;
    assert_eq!(flash, false, "{what} shows an error");
}

async fn log_in_as_guest(page: &mut Page, base: &str) {
    page.navigate(&format!("{base}/")).await;
    page.wait_for(
        "the login form",
        "document.getElementById('login')?.hidden === false",
    )
    .await;
    page.eval(
        "document.getElementById('login-user').value = 'guest';\
         document.getElementById('login-password').value = 'guest';\
         document.getElementById('login-form').requestSubmit()",
    )
    .await;
    page.wait_for(
        "the overview",
        "document.querySelector('#view h2')?.textContent === 'Overview'",
    )
    .await;
}

/// The queue's row shows its name as text (no element was made of it) and `total` messages.
async fn find_queue_in_list(page: &mut Page, name_js: &str, total: &str) {
    let row = queue_row_js(name_js);
    let total_js = serde_json::to_string(total).expect("JS string");
    page.wait_for(
        &format!("the queue's row with {total} messages"),
        &format!("{row}?.cells[6].textContent === {total_js}"),
    )
    .await;
    let images = page.eval("document.querySelectorAll('img').length").await;
    assert_eq!(images, 0, "an <img> was made from the queue name");
}

async fn open_queue(page: &mut Page, name_js: &str) {
    let row = queue_row_js(name_js);
    page.eval(&format!("{row}.cells[0].querySelector('a').click()"))
        .await;
    page.wait_for(
        "the queue's page with 3 ready messages",
        &format!(
            "document.querySelector('#queue-detail h2')?.textContent === 'Queue ' + {name_js} \
             && document.getElementById('queue-info').textContent.includes('Ready3')"
        ),
    )
    .await;
}

/// The form of the queue page's box titled `title`.
fn form_js(title: &str) -> String {
    format!(
        "[...document.querySelectorAll('#queue-detail .box')]\
         .find(b => b.querySelector('h3').textContent === '{title}').querySelector('form')"
    )
}

const UI_PAYLOAD: &str = "<b>from the UI</b>";

/// Publish a persistent message with an HTML payload and header through the queue page.
async fn publish_in_the_ui(page: &mut Page) {
    let form = form_js("Publish message");
    let payload = serde_json::to_string(UI_PAYLOAD).expect("JS string");
    page.eval(&format!(
        "{{ const f = {form}; f.elements.payload.value = {payload};\
         f.elements.headers.value = '{{\"x-ui\": \"<i>header</i>\"}}';\
         f.elements.mode.value = '2'; f.requestSubmit(); }}"
    ))
    .await;
    page.wait_for(
        "the publish to be reported",
        "document.getElementById('flash').textContent === 'Message published.'",
    )
    .await;
    page.wait_for(
        "the queue to show 4 ready messages",
        "document.getElementById('queue-info').textContent.includes('Ready4')",
    )
    .await;
}

/// Get the four messages back (requeued): the last is the one published, its payload and
/// header shown as text.
async fn get_in_the_ui(page: &mut Page) {
    let form = form_js("Get messages");
    page.eval(&format!(
        "{{ const f = {form}; f.elements.count.value = '4'; f.requestSubmit(); }}"
    ))
    .await;
    page.wait_for(
        "four messages shown",
        "document.querySelectorAll('#messages .message').length === 4",
    )
    .await;
    let last = "[...document.querySelectorAll('#messages .message')][3].textContent";
    let shown = page.eval(last).await;
    let shown = shown.as_str().unwrap_or_default();
    assert!(shown.contains(UI_PAYLOAD), "the payload as text: {shown}");
    assert!(
        shown.contains("<i>header</i>"),
        "the header as text: {shown}"
    );
    assert!(shown.contains("delivery_mode"), "the properties: {shown}");
    let first = page
        .eval("[...document.querySelectorAll('#messages .message')][0].textContent")
        .await;
    let first = first.as_str().unwrap_or_default();
    assert!(first.contains("<script>alert(0)</script>"), "{first}");
    let made = "document.querySelectorAll('#messages b, #messages i, #messages script').length";
    assert_eq!(
        page.eval(made).await,
        0,
        "an element was made from a message"
    );
}

async fn purge_in_the_ui(page: &mut Page, queue: &str) {
    // Clicked from a timer: confirm() blocks the page, and with it an evaluation that clicks.
    page.eval("setTimeout(() => document.getElementById('purge').click(), 0)")
        .await;
    let dialog = page.event("Page.javascriptDialogOpening").await;
    assert_eq!(dialog["type"], "confirm");
    let question = dialog["message"].as_str().unwrap_or_default();
    assert!(
        question.contains(queue),
        "the confirm names the queue: {question}"
    );
    page.call(
        "Page.handleJavaScriptDialog",
        serde_json::json!({"accept": true}),
    )
    .await;
    page.wait_for(
        "the purge to be reported",
        "document.getElementById('flash').textContent === 'Queue purged.'",
    )
    .await;
}

async fn messages_in(base: &str, queue: &str) -> u64 {
    let url = format!("{base}/api/queues/%2F/{}", encode_component(queue));
    let req = Client::new()
        .get(url)
        .basic_auth("guest", Some("guest"))
        .send();
    let resp = within("http", req).await.expect("http request");
    assert_eq!(resp.status(), StatusCode::OK);
    let q: Value = within("json", resp.json()).await.expect("queue json");
    q["messages"].as_u64().expect("messages")
}

/// Save under `target/test-artifacts/` and say where.
fn save_artifact(name: &str, bytes: &[u8]) {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(&tmp).join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create test-artifacts");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write artifact");
    println!("screenshot: {}", path.display());
}
