//! The accept loops: one per listener (amqp, and amqps when TLS is configured). Each accepted
//! socket is admitted against `max_connections`, given its handshake deadline, and, for
//! amqps, taken through the TLS handshake before AMQP starts.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::broker::Broker;
use crate::connection::{self, Accepted};
use crate::tls;

pub async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut stopped: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: log, breathe, go on.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !broker.try_admit_connection() {
            tracing::warn!(%peer, limit = broker.config.max_connections, "connection refused: max_connections reached");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let broker = broker.clone();
        let tls = tls.clone();
        // Every line about this connection carries its name (RabbitMQ's `peer -> local`);
        // `user` and `vhost` are filled in once the handshake knows them. No parent: the
        // accept loop's context is not the connection's. At ERROR level so that a filter such
        // as `warn` keeps it: a span below the filter is disabled and its warnings lose it.
        let span = tracing::error_span!(
            parent: None,
            "connection",
            conn = %format_args!("{peer} -> {local}"),
            user = tracing::field::Empty,
            vhost = tracing::field::Empty,
        );
        let task = async move {
            let deadline = tokio::time::Instant::now() + broker.config.handshake_timeout;
            let accepted = Accepted {
                peer,
                local,
                deadline,
                cert_user: None,
                tls_session: None,
            };
            match tls {
                None => connection::serve(broker.clone(), stream, accepted).await,
                Some(acceptor) => serve_tls(&broker, acceptor, stream, accepted).await,
            }
            broker.release_connection();
        };
        tokio::spawn(task.instrument(span));
    }
}

/// The TLS handshake (within the connection's handshake deadline), then AMQP over it.
async fn serve_tls(
    broker: &Arc<Broker>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    mut accepted: Accepted,
) {
    let stream = match tokio::time::timeout_at(accepted.deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!("TLS handshake timed out");
            return;
        }
    };
    let from = broker.config.tls.as_ref().map(|t| t.cert_login);
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first());
    accepted.cert_user = match (cert, from) {
        (Some(cert), Some(from)) => tls::cert_user(cert, from),
        _ => None,
    };
    accepted.tls_session = Some(tls::session(stream.get_ref().1));
    connection::serve(broker.clone(), stream, accepted).await;
}
