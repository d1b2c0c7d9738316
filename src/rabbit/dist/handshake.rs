//! Finding the node (epmd's `PORT_PLEASE2`) and proving the cookie: the
//! distribution handshake of protocol version 6 (Erlang/OTP 23 and later),
//! as the tool's side, a hidden node, speaks it.
//!
//! Every message is a 2-byte length and a tag: we send our name (`N`), the
//! node says whether it will talk (`s`), challenges us (`N`), we answer
//! with the digest of its challenge and our own challenge (`r`), and it
//! answers ours (`a`). A digest is MD5 of the cookie followed by the
//! challenge in decimal.

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Cookie;

/// epmd's well-known port.
pub(super) const EPMD_PORT: u16 = 4369;
/// The protocol version spoken (OTP 23+).
const VERSION: u16 = 6;

/// Capabilities we announce: what OTP 25+ requires of every peer, and
/// spawn requests and monitors for calls. `PUBLISHED` stays unset: a
/// hidden node joins no one's cluster view.
pub(super) const FLAGS: u64 = {
    const EXTENDED_REFERENCES: u64 = 0x04;
    const DIST_MONITOR: u64 = 0x08;
    const FUN_TAGS: u64 = 0x10;
    const DIST_MONITOR_NAME: u64 = 0x20;
    const NEW_FUN_TAGS: u64 = 0x80;
    const EXTENDED_PIDS_PORTS: u64 = 0x100;
    const EXPORT_PTR_TAG: u64 = 0x200;
    const BIT_BINARIES: u64 = 0x400;
    const NEW_FLOATS: u64 = 0x800;
    const UTF8_ATOMS: u64 = 0x10000;
    const MAP_TAGS: u64 = 0x20000;
    const BIG_CREATION: u64 = 0x40000;
    const HANDSHAKE_23: u64 = 0x100_0000;
    const UNLINK_ID: u64 = 0x200_0000;
    const SPAWN: u64 = 1 << 32;
    const V4_NC: u64 = 1 << 34;
    const MANDATORY_25_DIGEST: u64 = 1 << 36;
    EXTENDED_REFERENCES
        | DIST_MONITOR
        | FUN_TAGS
        | DIST_MONITOR_NAME
        | NEW_FUN_TAGS
        | EXTENDED_PIDS_PORTS
        | EXPORT_PTR_TAG
        | BIT_BINARIES
        | NEW_FLOATS
        | UTF8_ATOMS
        | MAP_TAGS
        | BIG_CREATION
        | HANDSHAKE_23
        | UNLINK_ID
        | SPAWN
        | V4_NC
        | MANDATORY_25_DIGEST
};

/// Asks epmd on `host` for the distribution port of the node named
/// `alive` (the part before `@`).
pub(super) async fn port_please(host: &str, alive: &str) -> anyhow::Result<u16> {
    let mut epmd = TcpStream::connect((host, EPMD_PORT))
        .await
        .map_err(|e| anyhow::anyhow!("epmd does not answer on {host}:{EPMD_PORT}: {e}"))?;
    let mut request = Vec::with_capacity(3 + alive.len());
    request.extend_from_slice(&(1 + alive.len() as u16).to_be_bytes());
    request.push(122);
    request.extend_from_slice(alive.as_bytes());
    epmd.write_all(&request).await?;
    let eof = |e: std::io::Error| anyhow::anyhow!("epmd on {host} closed the connection: {e}");
    let tag = epmd.read_u8().await.map_err(eof)?;
    if tag != 119 {
        anyhow::bail!("epmd on {host} answered with tag {tag}, not a port (119)");
    }
    if epmd.read_u8().await.map_err(eof)? != 0 {
        anyhow::bail!("epmd on {host} knows no node named {alive:?}");
    }
    let port = epmd.read_u16().await.map_err(eof)?;
    let _node_type = epmd.read_u8().await.map_err(eof)?;
    let _protocol = epmd.read_u8().await.map_err(eof)?;
    let highest = epmd.read_u16().await.map_err(eof)?;
    if highest < VERSION {
        anyhow::bail!(
            "the node speaks only distribution protocol version {highest} (Erlang/OTP 22 or older)"
        );
    }
    Ok(port)
}

/// `MD5(cookie ++ decimal(challenge))`.
fn digest(cookie: &str, challenge: u32) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(cookie.as_bytes());
    md5.update(challenge.to_string().as_bytes());
    md5.finalize().into()
}

async fn send(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(2 + body.len());
    message.extend_from_slice(&(body.len() as u16).to_be_bytes());
    message.extend_from_slice(body);
    stream.write_all(&message).await
}

async fn receive(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut body = vec![0; usize::from(len)];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads big-endian fields off a handshake message.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| anyhow::anyhow!("the node's challenge is cut short"))?;
        self.0 = rest;
        Ok(*head)
    }
}

/// Shakes hands as `name` (`alive@host`) with `creation`; returns the
/// node's own name.
pub(super) async fn shake(
    stream: &mut TcpStream,
    name: &str,
    creation: u32,
    cookie: &Cookie,
) -> anyhow::Result<String> {
    let mut hello = vec![b'N'];
    hello.extend_from_slice(&FLAGS.to_be_bytes());
    hello.extend_from_slice(&creation.to_be_bytes());
    hello.extend_from_slice(&(name.len() as u16).to_be_bytes());
    hello.extend_from_slice(name.as_bytes());
    send(stream, &hello).await?;

    let closed = |step: &str, e: std::io::Error| {
        anyhow::anyhow!("the node closed the connection {step} ({e})")
    };
    let status = receive(stream)
        .await
        .map_err(|e| closed("instead of answering our name", e))?;
    match status.split_first() {
        Some((b's', b"ok" | b"ok_simultaneous")) => {}
        Some((b's', other)) => anyhow::bail!(
            "the node refused the connection ({})",
            String::from_utf8_lossy(other)
        ),
        _ => anyhow::bail!("the node answered our name with something other than a status"),
    }

    let challenge = receive(stream)
        .await
        .map_err(|e| closed("instead of challenging us", e))?;
    let Some((b'N', rest)) = challenge.split_first() else {
        anyhow::bail!("the node's challenge is not of protocol version {VERSION}");
    };
    let mut fields = Fields(rest);
    let _flags = u64::from_be_bytes(fields.take()?);
    let theirs = u32::from_be_bytes(fields.take()?);
    let _creation = u32::from_be_bytes(fields.take()?);
    let len = usize::from(u16::from_be_bytes(fields.take()?));
    let peer = fields
        .0
        .get(..len)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .ok_or_else(|| anyhow::anyhow!("the node's challenge is cut short"))?;

    let ours: u32 = rand::random();
    let secret = cookie.value.expose();
    let mut reply = vec![b'r'];
    reply.extend_from_slice(&ours.to_be_bytes());
    reply.extend_from_slice(&digest(secret, theirs));
    send(stream, &reply).await?;

    // A node that rejects our digest just closes the connection.
    let ack = receive(stream).await.map_err(|e| {
        anyhow::anyhow!(
            "the node closed the connection during the handshake ({e}): the Erlang cookie from {} is probably not the node's",
            cookie.source
        )
    })?;
    match ack.split_first() {
        Some((b'a', answer)) if answer == digest(secret, ours) => Ok(peer),
        Some((b'a', _)) => anyhow::bail!(
            "the node's answer does not match the Erlang cookie from {}",
            cookie.source
        ),
        _ => anyhow::bail!("the node did not acknowledge the handshake"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_md5_of_the_cookie_and_the_decimal_challenge() {
        // erlang:md5("COOKIE" ++ integer_to_list(12345)), printed by Erlang/OTP 25.
        assert_eq!(
            digest("COOKIE", 12345),
            [
                232, 50, 107, 173, 137, 103, 108, 218, 223, 41, 251, 83, 140, 143, 43, 12
            ]
        );
        assert_ne!(digest("COOKIE", 12345), digest("COOKIE", 12346));
    }

    #[test]
    fn short_challenges_are_errors_not_panics() {
        let mut f = Fields(&[1, 2, 3]);
        assert!(f.take::<8>().is_err());
        assert_eq!(f.take::<2>().unwrap(), [1, 2]);
    }
}
