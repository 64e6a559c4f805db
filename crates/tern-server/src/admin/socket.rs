//! The admin socket: `<data_dir>/ctl.sock`, a Unix socket only the node's own user can open
//! (mode 0600, and each peer's uid is checked with SO_PEERCRED: the node's uid or root).
//! One JSON [`AdminRequest`] per line in, one JSON [`AdminReply`] per line out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::{execute, AdminReply, AdminRequest};
use crate::broker::Broker;

/// Most bytes one admin connection may send (command lines, passwords and patterns included).
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("ctl.sock")
}

/// Bind the socket (replacing a stale one: the data directory lock says no other node runs
/// here) and serve it until `stopped`.
pub fn spawn(broker: Arc<Broker>, mut stopped: watch::Receiver<bool>) -> std::io::Result<()> {
    let path = path(&broker.config.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(path = %path.display(), "admin socket listening");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped.changed() => break,
            };
            match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(broker.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

fn peer_allowed(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == me || c.uid() == 0)
}

async fn serve(broker: Arc<Broker>, stream: UnixStream) {
    if !peer_allowed(&stream) {
        tracing::warn!("admin socket: refused a peer running as another user");
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST_BYTES)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(req) => {
                let command = req.args.first().cloned().unwrap_or_default();
                let reply = execute(&broker, req).await;
                tracing::info!(command, ok = reply.ok, "admin command");
                reply
            }
            Err(e) => AdminReply::failed(format!("malformed request: {e}")),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}
