//! Raw HTTP: requests no client library would send, and answers read byte by byte.

use std::time::Duration;

use anyhow::{bail, Context};
use lockbox_tests::client::{connect_and_write, ExtClient, TOKEN_HEADER};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a raw exchange waits for the server's answer.
pub(super) const RAW_WAIT: Duration = Duration::from_secs(5);

/// One HTTP answer as it came off the wire.
#[derive(Debug)]
pub(super) struct RawAnswer {
    pub(super) status: u16,
    pub(super) head: String,
    pub(super) body: Vec<u8>,
}

impl RawAnswer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    pub(super) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `__type` of a JSON error body that also has a string `message`.
    pub(super) fn error_type(&self) -> Option<String> {
        let body = self.json()?;
        body["message"].as_str()?;
        body["__type"].as_str().map(str::to_owned)
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{}\n{}",
            self.head.trim_end(),
            String::from_utf8_lossy(&self.body)
        )
    }
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one complete answer (status line, headers, `Content-Length` body) from `stream`.
/// A connection closed or reset before a whole status line and head arrived is an error:
/// the server dropped the request without answering.
pub(super) async fn read_answer(stream: &mut TcpStream) -> anyhow::Result<RawAnswer> {
    let deadline = Instant::now() + RAW_WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .context("no answer within the deadline")?
                .context("connection failed before an answer")?;
            if n == 0 {
                bail!(
                    "connection closed without an answer; got {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("not an HTTP/1.1 status line: {head:?}"))?;
        let mut answer = RawAnswer {
            status,
            head,
            body: Vec::new(),
        };
        let length: usize = answer
            .header("content-length")
            .map(str::parse)
            .transpose()?
            .unwrap_or(0);
        let mut rest = buf.split_off(head_end);
        while rest.len() < length {
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .context("body not complete within the deadline")??;
            if n == 0 {
                bail!("connection closed in the middle of the body");
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        // An interim 1xx answer is followed by the real one.
        if (100..200).contains(&status) {
            buf = rest.split_off(length.min(rest.len()));
            continue;
        }
        rest.truncate(length);
        answer.body = rest;
        return Ok(answer);
    }
}

/// Sends `bytes` on a fresh connection and reads one answer.
pub(super) async fn exchange(port: u16, bytes: &[u8]) -> anyhow::Result<RawAnswer> {
    let mut stream = connect_and_write(port, bytes).await?;
    read_answer(&mut stream).await
}

/// Reads until the server closes the connection (or resets it); returns what arrived.
pub(super) async fn read_until_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => bail!("the connection was still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(all),
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A minimal well-formed GET with the token and `Connection: close`.
pub(super) fn raw_get(client: &ExtClient, target: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\n{TOKEN_HEADER}: {}\r\n{extra_headers}\
         Connection: close\r\n\r\n",
        client.token()
    )
    .into_bytes()
}
