//! The admin socket: `<data_dir>/ctl.sock`, a Unix socket only the node's own user can open
//! (mode 0600, and each peer's uid is checked with SO_PEERCRED: the node's uid or root).
//! One JSON [`AdminRequest`] per line in, one JSON [`AdminReply`] per line out, any number of
//! them on one connection (ctl sends a definitions import as several). A line longer than
//! `admin_max_request_bytes` is answered with an error naming that limit, and the connection
//! is closed (what follows could not be read as a request).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::{execute, AdminReply, AdminRequest};
use crate::broker::Broker;

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
    let limit = broker.config.admin_max_request_bytes;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let (reply, more) = match read_request(&mut read, limit).await {
            Request::Line(line) => (answer(&broker, &line).await, true),
            Request::TooLarge => {
                let why =
                    format!("request larger than admin_max_request_bytes ({limit} bytes): refused");
                (AdminReply::failed(why), false)
            }
            Request::End => return,
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() || !more {
            return;
        }
    }
}

async fn answer(broker: &Arc<Broker>, line: &[u8]) -> AdminReply {
    match serde_json::from_slice::<AdminRequest>(line) {
        Ok(req) => {
            let command = req.args.first().cloned().unwrap_or_default();
            let reply = execute(broker, req).await;
            tracing::info!(command, ok = reply.ok, "admin command");
            reply
        }
        Err(e) => AdminReply::failed(format!("malformed request: {e}")),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Request {
    Line(Vec<u8>),
    TooLarge,
    /// The peer closed (or the socket failed) between requests.
    End,
}

/// The next request line, reading at most `limit` bytes of it (and its newline).
async fn read_request<R: AsyncBufRead + Unpin>(read: &mut R, limit: usize) -> Request {
    let mut line = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    match (&mut *read).take(cap).read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => Request::End,
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            Request::Line(line)
        }
        Ok(n) if n as u64 >= cap => Request::TooLarge,
        // The peer closed without a newline: take what it sent as the last request.
        Ok(_) => Request::Line(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request `input` holds, as `serve` would read them (it stops at TooLarge).
    async fn read_all(input: &[u8], limit: usize) -> Vec<Request> {
        let mut read = BufReader::new(input);
        let mut out = Vec::new();
        loop {
            match read_request(&mut read, limit).await {
                Request::End => return out,
                Request::TooLarge => {
                    out.push(Request::TooLarge);
                    return out;
                }
                line => out.push(line),
            }
        }
    }

    #[tokio::test]
    async fn admin_requests_are_read_one_line_at_a_time() {
        let got = read_all(b"{\"a\":1}\n{\"b\":2}\n", 16).await;
        let lines = vec![
            Request::Line(b"{\"a\":1}".to_vec()),
            Request::Line(b"{\"b\":2}".to_vec()),
        ];
        assert_eq!(got, lines);
    }

    #[tokio::test]
    async fn an_admin_request_over_the_limit_is_refused_but_one_at_it_is_not() {
        let at_limit = [b'x'; 16];
        let mut input = at_limit.to_vec();
        input.push(b'\n');
        assert_eq!(
            read_all(&input, 16).await,
            vec![Request::Line(at_limit.to_vec())]
        );
        let over = [b'x'; 17];
        assert_eq!(read_all(&over, 16).await, vec![Request::TooLarge]);
        let mut two = at_limit.to_vec();
        two.extend_from_slice(b"\n");
        two.extend_from_slice(&[b'y'; 40]);
        let got = read_all(&two, 16).await;
        assert_eq!(
            got,
            vec![Request::Line(at_limit.to_vec()), Request::TooLarge]
        );
    }
}
