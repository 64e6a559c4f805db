//! The management HTTP API through a real HTTP client (reqwest, plain HTTP).

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

use super::{within, TestBroker};

pub struct Api {
    pub base: String,
    pub http: Client,
}

impl Api {
    pub fn of(broker: &TestBroker) -> Api {
        let addr = broker.handle().management_addr();
        Api {
            base: format!("http://127.0.0.1:{}", addr.port()),
            http: Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = within("http", req.send()).await.expect("http request");
        let status = resp.status();
        let text = within("http body", resp.text()).await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn guest(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(("guest", "guest")), body)
            .await
    }
}
