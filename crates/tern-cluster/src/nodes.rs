//! A node's links to its peers: it accepts on the cluster port, dials each peer address it is
//! given (again and again, with backoff, for as long as it runs), and keeps one [`Link`] per
//! peer node, by name.
//!
//! Two nodes that dial each other at once end up with two connections; both keep the one that
//! the node with the smaller name dialed, so they agree without talking about it. A call made
//! on the other one in the meantime fails with `CallError::LinkDown`, as on any link that
//! goes down: callers call again on [`Nodes::link`]'s current one. A dialer
//! whose peer is already linked waits for that link to go down before it dials again. An
//! address that turns out to be this node itself (a peer list may name every node, this one
//! included) is dialed no more.
//!
//! With [`NodeTls`], every link runs over mutual TLS: the listener asks each peer for a
//! certificate its CA signed, and a dialer checks the peer's against the same CA, by the host
//! it dialed. The secret's handshake runs inside.
//!
//! Bounds: handshakes in progress on the listener (`handshakes_max`; more connections wait in
//! the kernel's backlog), each within `handshake_timeout`; everything a link bounds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::handshake::{self, HandshakeError, Identity, Peer, Role, Secret};
use crate::link::{Handler, Link, LinkLimits};

/// How a node links to its peers.
pub struct NodesConfig {
    pub identity: Identity,
    pub secret: Secret,
    pub limits: LinkLimits,
    pub handshake_timeout: Duration,
    pub handshakes_max: usize,
    /// A dialer waits this long after a failed attempt, doubling up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Mutual TLS on every link, or none.
    pub tls: Option<NodeTls>,
}

/// A node's TLS for its links: as a server (it requires a client certificate) and as a
/// client (it presents its own).
#[derive(Clone)]
pub struct NodeTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl NodesConfig {
    pub fn new(identity: Identity, secret: Secret) -> Self {
        NodesConfig {
            identity,
            secret,
            limits: LinkLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            handshakes_max: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// The running set of links; cheap to clone.
#[derive(Clone)]
pub struct Nodes(Arc<Inner>);

struct Inner {
    config: NodesConfig,
    handler: Arc<dyn Handler>,
    links: Mutex<HashMap<String, Held>>,
    /// Which node each dialed address turned out to be (this node's own name included).
    resolved: Mutex<HashMap<String, String>>,
    /// Bumped whenever a link comes up or an address is resolved, for waiters.
    changed: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    established: AtomicU64,
    /// The accept loop, awaited by [`Nodes::stop`] so that the port is free when it returns.
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A link and which end dialed it.
struct Held {
    link: Link,
    dialed_by: String,
}

impl Nodes {
    /// Accept peers on `listener` and answer their calls with `handler`.
    pub fn start(config: NodesConfig, handler: Arc<dyn Handler>, listener: TcpListener) -> Nodes {
        let nodes = Nodes(Arc::new(Inner {
            config,
            handler,
            links: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            stop: watch::Sender::new(false),
            established: AtomicU64::new(0),
            accepting: Mutex::new(None),
        }));
        let accepting = tokio::spawn(nodes.clone().accept_loop(listener));
        *nodes.0.accepting.lock().unwrap_or_else(|p| p.into_inner()) = Some(accepting);
        nodes
    }

    pub fn identity(&self) -> &Identity {
        &self.0.config.identity
    }

    /// Keep a link to whatever node listens at `addr` (`host:port`), for as long as we run.
    pub fn dial(&self, addr: String) {
        tokio::spawn(self.clone().dial_loop(addr));
    }

    /// The live link to `node`, if there is one.
    pub fn link(&self, node: &str) -> Option<Link> {
        let links = self.lock();
        links
            .get(node)
            .map(|h| h.link.clone())
            .filter(|l| !l.is_down())
    }

    /// The link to `node`, waiting up to `timeout` for it to come up.
    pub async fn link_within(&self, node: &str, timeout: Duration) -> Option<Link> {
        let mut changed = self.0.changed.subscribe();
        let wait = async {
            loop {
                if let Some(link) = self.link(node) {
                    return link;
                }
                if changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// The peers linked now, by node name, sorted.
    pub fn linked(&self) -> Vec<String> {
        let links = self.lock();
        let mut names: Vec<String> = links
            .iter()
            .filter(|(_, h)| !h.link.is_down())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// The node name each of `addrs` turned out to be (ours for an address of this node),
    /// once every one has answered a handshake; waits for that as long as it takes.
    pub async fn resolve_all(&self, addrs: &[String]) -> Vec<String> {
        let mut changed = self.0.changed.subscribe();
        loop {
            let names: Option<Vec<String>> = {
                let resolved = self.0.resolved.lock().unwrap_or_else(|p| p.into_inner());
                addrs.iter().map(|a| resolved.get(a).cloned()).collect()
            };
            if let Some(names) = names {
                return names;
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Links that came up since the start (churn, for operators and tests).
    pub fn links_established(&self) -> u64 {
        self.0.established.load(Ordering::Relaxed)
    }

    /// Stop accepting (the listener is closed on return) and dialing, and close every link.
    pub async fn stop(&self) {
        self.0.stop.send_replace(true);
        for held in self.lock().drain() {
            held.1.link.close();
        }
        let accepting = self
            .0
            .accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = accepting {
            let _ = task.await;
        }
    }

    /// Whether [`Nodes::stop`] was called.
    pub fn stopped(&self) -> bool {
        *self.0.stop.borrow()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.0.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn accept_loop(self, listener: TcpListener) {
        let handshakes = Arc::new(Semaphore::new(self.0.config.handshakes_max.max(1)));
        let mut stop = self.0.stop.subscribe();
        loop {
            let (slot, accepted) = tokio::select! {
                a = async {
                    let slot = handshakes.clone().acquire_owned().await;
                    (slot, listener.accept().await)
                } => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(slot) = slot else {
                return;
            };
            let (stream, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let nodes = self.clone();
            tokio::spawn(async move {
                if let Err(e) = nodes.accept(stream).await {
                    tracing::warn!(%from, error = %e, "node connection refused");
                }
                drop(slot);
            });
        }
    }

    async fn dial_loop(self, addr: String) {
        let config = &self.0.config;
        let mut backoff = config.backoff_min;
        let mut known: Option<String> = None;
        while !self.stopped() {
            if let Some(link) = known.as_deref().and_then(|n| self.link(n)) {
                link.down().await;
                continue;
            }
            match self.dial_once(&addr).await {
                Ok(peer) if peer.node_name == config.identity.node_name => {
                    self.resolved(addr, peer.node_name);
                    return;
                }
                Ok(peer) => {
                    self.resolved(addr.clone(), peer.node_name.clone());
                    known = Some(peer.node_name);
                    backoff = config.backoff_min;
                    continue;
                }
                Err(e) => tracing::debug!(%addr, error = %e, "dialing a node failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.backoff_max);
        }
    }

    fn resolved(&self, addr: String, name: String) {
        let mut resolved = self.0.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if resolved.insert(addr, name).is_none() {
            self.0.changed.send_modify(|n| *n += 1);
        }
    }

    async fn dial_once(&self, addr: &str) -> Result<Peer, HandshakeError> {
        let wait = self.0.config.handshake_timeout;
        let connect = TcpStream::connect(addr);
        let stream = match tokio::time::timeout(wait, connect).await {
            Ok(stream) => stream?,
            Err(_) => return Err(HandshakeError::Timeout(wait)),
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.0.config.tls else {
            return self.open(stream, Role::Dialer).await;
        };
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| HandshakeError::Io(std::io::Error::other(e)))?;
        let secured = tokio::time::timeout(wait, tls.connector.connect(name, stream)).await;
        let stream = secured.map_err(|_| HandshakeError::Timeout(wait))??;
        self.open(stream, Role::Dialer).await
    }

    /// A connection on the cluster port: TLS first if the node has it.
    async fn accept(&self, stream: TcpStream) -> Result<Peer, HandshakeError> {
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.0.config.tls else {
            return self.open(stream, Role::Acceptor).await;
        };
        let wait = self.0.config.handshake_timeout;
        let secured = tokio::time::timeout(wait, tls.acceptor.accept(stream)).await;
        let stream = secured.map_err(|_| HandshakeError::Timeout(wait))??;
        self.open(stream, Role::Acceptor).await
    }

    /// Handshake on `stream`, then keep the link unless we already have a better one.
    async fn open<S>(&self, mut stream: S, role: Role) -> Result<Peer, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &self.0.config;
        let me = &config.identity;
        let frame_max = config.limits.frame_max_bytes;
        let (peer, leftover) = handshake::handshake(
            &mut stream,
            role,
            me,
            &config.secret,
            frame_max,
            config.handshake_timeout,
        )
        .await?;
        if peer.node_name == me.node_name {
            return Ok(peer);
        }
        let dialed_by = match role {
            Role::Dialer => me.node_name.clone(),
            Role::Acceptor => peer.node_name.clone(),
        };
        let handler = self.0.handler.clone();
        let (link, task) = Link::spawn(stream, leftover, peer.clone(), handler, config.limits);
        self.keep(link, dialed_by);
        drop(task);
        Ok(peer)
    }

    /// Keep `link` as the link to its peer, or close it if the one we have is preferred: the
    /// live one dialed by the node with the smaller name.
    fn keep(&self, link: Link, dialed_by: String) {
        let name = link.peer().node_name.clone();
        let me = &self.0.config.identity.node_name;
        let preferred = me.min(&name).clone();
        let mut links = self.lock();
        if self.stopped() {
            link.close();
            return;
        }
        if let Some(old) = links.get(&name) {
            let old_wins = old.dialed_by == preferred && dialed_by != preferred;
            if !old.link.is_down() && old_wins {
                link.close();
                return;
            }
            old.link.close();
        }
        tracing::info!(peer = %name, %dialed_by, "node link up");
        links.insert(name, Held { link, dialed_by });
        self.0.established.fetch_add(1, Ordering::Relaxed);
        self.0.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests;
