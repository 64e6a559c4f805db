//! Serving the HTTP listeners (the management API and UI, Prometheus' `/metrics`), over plain
//! TCP or over TLS (HTTPS, RabbitMQ's `management.ssl.port` and `prometheus.ssl.port`), with
//! the caller's address for the handlers ([`Peer`]: failed-login budgets, loopback users).
//!
//! TLS handshakes run off the accept loop, each in its own task bounded by
//! `handshake_timeout`, at most [`HANDSHAKES`] at once: a slow or silent client holds one
//! place, never the listener. The HTTPS listeners use `[tls]`'s certificate and key and never
//! ask for a client certificate (the login is HTTP basic auth).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;

/// TLS handshakes in progress at once on one HTTPS listener; more connections wait in the
/// kernel's accept backlog.
pub const HANDSHAKES: usize = 64;

/// The caller's address, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A service's listeners: its plain port under `names.0`, and when `tls_port` and `https` are
/// both given, the same `app` over HTTPS under `names.1`; the plain listener's address.
pub async fn serve_plain_and_tls(
    broker: &Arc<Broker>,
    names: (&'static str, &'static str),
    (port, tls_port): (u16, Option<u16>),
    https: Option<TlsAcceptor>,
    app: Router,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let addr = serve(broker, names.0, port, None, app.clone(), stopped.clone()).await?;
    if let (Some(port), Some(tls)) = (tls_port, https) {
        serve(broker, names.1, port, Some(tls), app, stopped).await?;
    }
    Ok(addr)
}

/// Bind `port` on the configured address and serve `app` there (over TLS with `tls`) until
/// `stopped`; the bound address is recorded as the broker's `protocol` listener.
async fn serve(
    broker: &Arc<Broker>,
    protocol: &'static str,
    port: u16,
    tls: Option<TlsAcceptor>,
    app: Router,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((broker.config.bind, port)).await?;
    let local = listener.local_addr()?;
    broker.listening(protocol, local);
    let app = app.into_make_service_with_connect_info::<Peer>();
    let wait = broker.config.handshake_timeout;
    tokio::spawn(async move {
        let stop = until(stopped);
        let served = match tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(acceptor) => {
                let listener = TlsListener::new(listener, acceptor, wait, local);
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::warn!(error = %e, protocol, "HTTP listener failed");
        }
    });
    Ok(local)
}

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.changed().await;
}

/// A listener that hands axum connections whose TLS handshake has finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        wait: Duration,
        local: SocketAddr,
    ) -> Self {
        let (done, ready) = mpsc::channel(HANDSHAKES);
        tokio::spawn(handshakes(listener, acceptor, wait, done));
        TlsListener { ready, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The handshake task has gone (it never does while this listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accept TCP connections and run each one's handshake in its own task, until the listener
/// that takes the finished ones is dropped.
async fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    wait: Duration,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let places = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let place = tokio::select! {
            _ = done.closed() => return,
            place = places.clone().acquire_owned() => place,
        };
        let Ok(place) = place else { return };
        let accepted = tokio::select! {
            _ = done.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, done) = (acceptor.clone(), done.clone());
        tokio::spawn(async move {
            let _place = place;
            match tokio::time::timeout(wait, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
            }
        });
    }
}
