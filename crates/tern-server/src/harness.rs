//! A broker without a listener, for driving one connection's state machine from raw bytes:
//! the fuzz target `connection` (see `fuzz/`) and tests. Each [`Harness::run`] opens a
//! connection over an in-memory duplex pipe, logs in as guest with a well-formed handshake,
//! sends the given bytes, closes its side and waits for the connection to end. A panic in
//! the connection's task is re-raised, so the fuzzer sees it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use crate::broker::Broker;
use crate::config::Config;
use crate::connection::{self, Accepted};

/// How long one input may keep its connection alive after its bytes are in.
const RUN_LIMIT: Duration = Duration::from_secs(2);

pub struct Harness {
    runtime: Runtime,
    broker: Arc<Broker>,
    data_dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl Harness {
    /// A broker on a fresh data directory under `base` (a tmpfs such as /dev/shm keeps the
    /// metadata log's fsyncs cheap).
    pub fn new(base: &std::path::Path) -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let data_dir = base.join(format!("tern-harness-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let config = Config {
            data_dir: data_dir.clone(),
            handshake_timeout: Duration::from_secs(1),
            heartbeat_secs: 0,
            ..Config::for_tests()
        };
        let broker = Broker::new(config, Arc::new(tern_store::OsFs));
        runtime
            .block_on(broker.open(None))
            .expect("the harness broker opens");
        Harness {
            runtime,
            broker,
            data_dir,
        }
    }

    /// Whether the queue exists in `/` (for tests of the harness itself).
    pub fn has_queue(&self, name: &str) -> bool {
        let vhost = tern_core::names::VhostName::from("/");
        self.broker.queue(&vhost, &name.into()).is_some()
    }

    /// The bytes a client sends to log in as guest on `/` (heartbeats off).
    pub fn login() -> Vec<u8> {
        use bytes::BytesMut;
        use tern_amqp::frame::{encode_method, PROTOCOL_HEADER};
        use tern_amqp::*;
        let mut out = BytesMut::from(&PROTOCOL_HEADER[..]);
        let start_ok = ConnectionStartOk {
            client_properties: FieldTable::new(),
            mechanism: ShortStr::from("PLAIN"),
            response: bytes::Bytes::from_static(b"\0guest\0guest"),
            locale: ShortStr::from("en_US"),
        };
        encode_method(0, &Method::ConnectionStartOk(start_ok), &mut out);
        let tune_ok = ConnectionTuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        };
        encode_method(0, &Method::ConnectionTuneOk(tune_ok), &mut out);
        let open = ConnectionOpen {
            virtual_host: ShortStr::from("/"),
        };
        encode_method(0, &Method::ConnectionOpen(open), &mut out);
        out.to_vec()
    }

    /// One connection: `prefix` (e.g. [`Harness::login`]), then `bytes`, then the client hangs
    /// up. Whether the connection then ended within `RUN_LIMIT`, as it must.
    pub fn run(&self, prefix: &[u8], bytes: &[u8]) -> bool {
        let broker = self.broker.clone();
        self.runtime.block_on(async move {
            let (client, server) = tokio::io::duplex(256 * 1024);
            let accepted = Accepted {
                peer: SocketAddr::from(([127, 0, 0, 1], 1)),
                local: SocketAddr::from(([127, 0, 0, 1], 5672)),
                deadline: tokio::time::Instant::now() + Duration::from_secs(1),
                cert_user: None,
                tls_session: None,
            };
            let served = tokio::spawn(connection::serve(broker, server, accepted));
            let (mut read, mut write) = tokio::io::split(client);
            let drain = tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
            });
            let _ = write.write_all(prefix).await;
            let _ = write.write_all(bytes).await;
            let _ = write.shutdown().await;
            let ended = match tokio::time::timeout(RUN_LIMIT, served).await {
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(_) => true,
                Err(_) => false,
            };
            drain.abort();
            ended
        })
    }
}
