//! The data channel to the capture server on the node: a TCP connection
//! to 127.0.0.1 that the server opened for this run only. The tool proves
//! itself with the token the start call answered (it never appears on a
//! command line), then asks for one queue at a time and reads that queue's
//! frames (`server.erl` describes them).

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Kind;

/// Largest frame accepted: a message term (RabbitMQ's largest message is
/// 512 MiB; its term adds properties and routing data).
pub const MAX_FRAME: u32 = (1 << 30) + (1 << 20);
/// How long the server may stay silent while it streams a queue.
const SILENCE: Duration = Duration::from_secs(1800);

/// Where the server listens, as its start call answers.
#[derive(Debug, Deserialize)]
pub struct Endpoint {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Base64 of the secret the server expects first.
    pub token: String,
}

/// What the server says after a queue's messages.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Messages in the queue when the capture started.
    #[serde(default)]
    pub listed: u64,
    /// Messages sent.
    #[serde(default)]
    pub sent: u64,
    /// Messages listed but gone when their body was read (consumed,
    /// expired or dropped meanwhile).
    #[serde(default)]
    pub missing: u64,
    /// Stream entries only stream-protocol clients can read (compressed
    /// sub-batches), not sent.
    #[serde(default)]
    pub skipped: u64,
    /// Messages the node turned into AMQP 0-9-1 (stream entries; quorum
    /// messages published over AMQP 1.0, MQTT or STOMP).
    #[serde(default)]
    pub converted: u64,
    /// How the bodies were read (`read_entries`, `sparse_read`, `osiris`…).
    #[serde(default)]
    pub method: String,
    /// The queue no longer exists.
    #[serde(default)]
    pub not_found: bool,
    /// The queue's leader is another node (its backup captures it).
    #[serde(default)]
    pub not_leader: Option<String>,
}

/// One frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message term (`term_to_binary` of `#basic_message{}` or `#mc{}`).
    Message {
        /// The node converted it to AMQP 0-9-1.
        converted: bool,
        /// The term's bytes.
        term: Vec<u8>,
    },
    /// The queue is done.
    Summary(Summary),
    /// The queue's capture failed on the node (the server goes on).
    Failed(String),
}

/// An open data channel.
pub struct Channel {
    stream: BufReader<TcpStream>,
}

impl Channel {
    /// Connects to the server and proves the token.
    pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Channel> {
        let token = base64::engine::general_purpose::STANDARD
            .decode(&endpoint.token)
            .context("the capture server's token is not base64")?;
        let stream = TcpStream::connect(("127.0.0.1", endpoint.port))
            .await
            .with_context(|| {
                format!(
                    "cannot connect to the capture server the node opened on 127.0.0.1:{} (the tool must run on the broker's host, in its network namespace)",
                    endpoint.port
                )
            })?;
        stream.set_nodelay(true)?;
        let mut channel = Channel {
            stream: BufReader::with_capacity(1 << 20, stream),
        };
        channel.send(&token).await?;
        Ok(channel)
    }

    async fn send(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let len = u32::try_from(frame.len()).context("frame too large")?;
        let stream = self.stream.get_mut();
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(frame).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Asks for the messages of one queue.
    pub async fn request(&mut self, kind: Kind, vhost: &str, name: &str) -> anyhow::Result<()> {
        self.send(&request_frame(kind, vhost, name)?).await
    }

    /// The next frame.
    pub async fn next(&mut self) -> anyhow::Result<Frame> {
        tokio::time::timeout(SILENCE, read_frame(&mut self.stream))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the capture server sent nothing for {} s",
                    SILENCE.as_secs()
                )
            })?
    }

    /// Tells the server to stop.
    pub async fn close(mut self) {
        let _ = self.send(b"x").await;
    }
}

/// `<<Kind, VhostLen:16, Vhost, Name>>`.
fn request_frame(kind: Kind, vhost: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    let vlen = u16::try_from(vhost.len()).context("vhost name too long")?;
    let mut frame = vec![match kind {
        Kind::Quorum => b'q',
        Kind::Stream => b's',
    }];
    frame.extend_from_slice(&vlen.to_be_bytes());
    frame.extend_from_slice(vhost.as_bytes());
    frame.extend_from_slice(name.as_bytes());
    Ok(frame)
}

/// Reads one length-prefixed frame; the buffer grows with the bytes that
/// arrive, never with the length the peer claims.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(input: &mut R) -> anyhow::Result<Frame> {
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .await
        .context("the capture server closed the connection")?;
    let len = u32::from_be_bytes(len);
    if len == 0 || len > MAX_FRAME {
        anyhow::bail!("the capture server sent a frame of {len} bytes");
    }
    let mut body = Vec::with_capacity(len.min(1 << 20) as usize);
    let got = input.take(u64::from(len)).read_to_end(&mut body).await?;
    if got != len as usize {
        anyhow::bail!("the capture server's connection ended inside a frame");
    }
    parse_frame(body)
}

fn parse_frame(mut body: Vec<u8>) -> anyhow::Result<Frame> {
    match body.first() {
        Some(b'M') if body.len() >= 2 => {
            let converted = body[1] & 1 == 1;
            body.drain(..2);
            Ok(Frame::Message {
                converted,
                term: body,
            })
        }
        Some(b'S') => {
            let summary = serde_json::from_slice(&body[1..]).with_context(|| {
                format!(
                    "unexpected summary from the capture server: {}",
                    String::from_utf8_lossy(&body[1..])
                )
            })?;
            Ok(Frame::Summary(summary))
        }
        Some(b'F') => Ok(Frame::Failed(
            String::from_utf8_lossy(&body[1..]).into_owned(),
        )),
        _ => anyhow::bail!(
            "the capture server sent an unknown frame ({} bytes)",
            body.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    async fn read(bytes: &[u8]) -> anyhow::Result<Frame> {
        let mut input = bytes;
        read_frame(&mut input).await
    }

    #[tokio::test]
    async fn frames_parse() {
        assert_eq!(
            read(&framed(b"M\x01\x83abc")).await.unwrap(),
            Frame::Message {
                converted: true,
                term: b"\x83abc".to_vec()
            }
        );
        let summary = read(&framed(
            br#"S{"listed":3,"sent":2,"missing":1,"method":"osiris"}"#,
        ))
        .await
        .unwrap();
        assert_eq!(
            summary,
            Frame::Summary(Summary {
                listed: 3,
                sent: 2,
                missing: 1,
                method: "osiris".into(),
                ..Default::default()
            })
        );
        assert_eq!(
            read(&framed(br#"S{"not_leader":"rabbit@b"}"#))
                .await
                .unwrap(),
            Frame::Summary(Summary {
                not_leader: Some("rabbit@b".into()),
                ..Default::default()
            })
        );
        assert_eq!(
            read(&framed(b"Fboom")).await.unwrap(),
            Frame::Failed("boom".into())
        );
    }

    #[tokio::test]
    async fn bad_frames_are_errors() {
        for bad in [
            framed(b"Z"),
            framed(b"S{"),
            framed(b"M"),
            vec![0, 0, 0, 0],
            vec![0xff, 0xff, 0xff, 0xff],
            vec![0, 0, 0, 9, b'M', 0],
            vec![0, 0],
        ] {
            assert!(read(&bad).await.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_carry_kind_vhost_and_name() {
        assert_eq!(
            request_frame(Kind::Stream, "/", "st").unwrap(),
            b"s\x00\x01/st".to_vec()
        );
        assert!(request_frame(Kind::Quorum, &"v".repeat(70_000), "q").is_err());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            // A claimed length far beyond the input only reads what is there.
            let _ = rt.block_on(read(&bytes));
        }
    }
}
