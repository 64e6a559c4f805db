//! The handshake that opens every link between two nodes: it checks that the peer speaks our
//! protocol version and belongs to our cluster, and that each side knows the cluster secret,
//! without either sending it.
//!
//! ```text
//! dialer                                  acceptor
//!   preamble, Hello(nonce_d)  ──────────▶
//!                             ◀──────────   preamble
//!                                           version and cluster name checked
//!                             ◀──────────   Hello(nonce_a)             (or Refused: why)
//!   Proof(mac_d)              ──────────▶   mac_d checked
//!   mac_a checked             ◀──────────   Proof(mac_a)               (or Refused: why)
//! ```
//!
//! A proof is HMAC-SHA256, keyed with the secret, over a transcript of the handshake: a label,
//! the prover's role, the verifier's nonce (the challenge, fresh from the verifier), the
//! prover's own nonce, the cluster name and both node names. The role keeps a proof from being
//! reflected back to its maker; the verifier's fresh nonce keeps it from being replayed. Every
//! step is bounded by a deadline and by the frame limit.

use std::time::Duration;

use bytes::BytesMut;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{self, Hello, Message, WireError, NONCE_LEN, VERSION};

/// Who we are to the peers.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster_name: String,
    /// `name@host`.
    pub node_name: String,
    /// Where we listen for nodes (`host:port`).
    pub listen: String,
}

/// The cluster secret, as a key (the bytes of the secret file, surrounding white space
/// trimmed, as RabbitMQ treats its Erlang cookie).
pub struct Secret(hmac::Key);

impl Secret {
    /// A secret from the file's bytes; `None` if it is empty.
    pub fn from_bytes(bytes: &[u8]) -> Option<Secret> {
        let trimmed = bytes.trim_ascii();
        (!trimmed.is_empty()).then(|| Secret(hmac::Key::new(hmac::HMAC_SHA256, trimmed)))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

/// The peer, as its handshake introduced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub node_name: String,
    pub listen: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the peer refused us: {0}")]
    Refused(String),
    #[error("the peer speaks node protocol version {theirs}, this node {ours}")]
    Version { ours: u16, theirs: u16 },
    #[error("the peer belongs to cluster '{theirs}', this node to '{ours}'")]
    ClusterName { ours: String, theirs: String },
    #[error("the peer does not know the cluster secret")]
    BadProof,
    #[error("the peer sent {0} during the handshake")]
    Unexpected(&'static str),
    #[error("no randomness for a handshake nonce")]
    Random,
    #[error("the handshake took longer than {0:?}")]
    Timeout(Duration),
}

/// The bytes read past the handshake (frames the peer sent right after it), to decode next.
pub type Leftover = BytesMut;

/// Run the handshake as `role` over `stream`, within `deadline`; the peer and what was read past
/// the handshake. On a refusal of ours, the peer is told why before the error returns.
pub async fn handshake<S>(
    stream: &mut S,
    role: Role,
    me: &Identity,
    secret: &Secret,
    frame_max_bytes: u32,
    deadline: Duration,
) -> Result<(Peer, Leftover), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(1024),
        limit: frame_max_bytes,
    };
    let run = async {
        match role {
            Role::Dialer => dial(&mut conn, me, secret).await,
            Role::Acceptor => accept(&mut conn, me, secret).await,
        }
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(Ok(peer)) => Ok((peer, conn.buf)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HandshakeError::Timeout(deadline)),
    }
}

async fn dial<S>(
    c: &mut Conn<'_, S>,
    me: &Identity,
    secret: &Secret,
) -> Result<Peer, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mine = hello(me)?;
    let mut out = BytesMut::new();
    wire::encode_preamble(&mut out);
    wire::encode(&Message::Hello(mine.clone()), &mut out);
    c.send(&out).await?;
    c.check_version().await?;
    let theirs = c.hello().await?;
    c.check_cluster(me, &theirs).await?;
    let proof = proof(secret, Role::Dialer, &mine, &theirs);
    c.send_message(&Message::Proof(proof)).await?;
    c.verify(secret, Role::Acceptor, &theirs, &mine).await?;
    Ok(peer(theirs))
}

async fn accept<S>(
    c: &mut Conn<'_, S>,
    me: &Identity,
    secret: &Secret,
) -> Result<Peer, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    wire::encode_preamble(&mut out);
    c.send(&out).await?;
    c.check_version().await?;
    let theirs = c.hello().await?;
    c.check_cluster(me, &theirs).await?;
    let mine = hello(me)?;
    c.send_message(&Message::Hello(mine.clone())).await?;
    c.verify(secret, Role::Dialer, &theirs, &mine).await?;
    let proof = proof(secret, Role::Acceptor, &mine, &theirs);
    c.send_message(&Message::Proof(proof)).await?;
    Ok(peer(theirs))
}

fn hello(me: &Identity) -> Result<Hello, HandshakeError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| HandshakeError::Random)?;
    Ok(Hello {
        cluster_name: me.cluster_name.clone(),
        node_name: me.node_name.clone(),
        listen: me.listen.clone(),
        nonce,
    })
}

fn peer(hello: Hello) -> Peer {
    Peer {
        node_name: hello.node_name,
        listen: hello.listen,
    }
}

/// What `prover` sends to show it knows the secret, answering `verifier`'s nonce.
fn proof(secret: &Secret, role: Role, prover: &Hello, verifier: &Hello) -> [u8; NONCE_LEN] {
    let tag = hmac::sign(&secret.0, &transcript(role, prover, verifier));
    let mut out = [0u8; NONCE_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn transcript(role: Role, prover: &Hello, verifier: &Hello) -> Vec<u8> {
    let mut t = b"tern node handshake v1".to_vec();
    t.push(match role {
        Role::Dialer => 1,
        Role::Acceptor => 2,
    });
    t.extend_from_slice(&verifier.nonce);
    t.extend_from_slice(&prover.nonce);
    for text in [&prover.cluster_name, &prover.node_name, &verifier.node_name] {
        t.extend_from_slice(&(text.len() as u32).to_be_bytes());
        t.extend_from_slice(text.as_bytes());
    }
    t
}

/// The stream with what has been read from it and not yet decoded.
struct Conn<'a, S> {
    stream: &'a mut S,
    buf: BytesMut,
    limit: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), HandshakeError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn send_message(&mut self, message: &Message) -> Result<(), HandshakeError> {
        let mut out = BytesMut::new();
        wire::encode(message, &mut out);
        self.send(&out).await
    }

    async fn refuse(&mut self, e: HandshakeError) -> HandshakeError {
        let _ = self.send_message(&Message::Refused(e.to_string())).await;
        e
    }

    async fn read_more(&mut self) -> Result<(), HandshakeError> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            let eof = std::io::ErrorKind::UnexpectedEof;
            return Err(std::io::Error::new(eof, "the peer closed the connection").into());
        }
        Ok(())
    }

    /// Read the peer's preamble; another version than ours is refused (and the peer told).
    async fn check_version(&mut self) -> Result<(), HandshakeError> {
        let theirs = loop {
            if let Some(version) = wire::decode_preamble(&mut self.buf)? {
                break version;
            }
            self.read_more().await?;
        };
        if theirs == VERSION {
            return Ok(());
        }
        let e = HandshakeError::Version {
            ours: VERSION,
            theirs,
        };
        Err(self.refuse(e).await)
    }

    /// The next frame; a refusal from the peer is an error carrying its reason.
    async fn next(&mut self) -> Result<Message, HandshakeError> {
        loop {
            match wire::decode(&mut self.buf, self.limit)? {
                Some(Message::Refused(why)) => return Err(HandshakeError::Refused(why)),
                Some(m) => return Ok(m),
                None => self.read_more().await?,
            }
        }
    }

    async fn hello(&mut self) -> Result<Hello, HandshakeError> {
        match self.next().await? {
            Message::Hello(h) => Ok(h),
            _ => Err(HandshakeError::Unexpected("another frame than hello")),
        }
    }

    async fn check_cluster(&mut self, me: &Identity, theirs: &Hello) -> Result<(), HandshakeError> {
        if theirs.cluster_name == me.cluster_name {
            return Ok(());
        }
        let e = HandshakeError::ClusterName {
            ours: me.cluster_name.clone(),
            theirs: theirs.cluster_name.clone(),
        };
        Err(self.refuse(e).await)
    }

    /// Read the peer's proof and check it, telling the peer if it is wrong.
    async fn verify(
        &mut self,
        secret: &Secret,
        prover_role: Role,
        prover: &Hello,
        verifier: &Hello,
    ) -> Result<(), HandshakeError> {
        let Message::Proof(mac) = self.next().await? else {
            return Err(HandshakeError::Unexpected("another frame than proof"));
        };
        let transcript = transcript(prover_role, prover, verifier);
        if hmac::verify(&secret.0, &transcript, &mac).is_err() {
            return Err(self.refuse(HandshakeError::BadProof).await);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
