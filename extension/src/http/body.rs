//! The wiping body buffer every response is written into, and the response type: every
//! answer is one whole body, so it is `Full<Bytes>`, sent without boxing.

use std::fmt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use zeroize::Zeroizing;

/// What the API answers with.
pub type Response = hyper::Response<Full<Bytes>>;

/// A 200 answer of `body`, of `content_type`.
pub fn response(body: Bytes, content_type: &'static str) -> Response {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A response body being written: a value passes through it on its way to function code,
/// so every buffer it ever used is wiped. Growing allocates a new buffer and wipes the old
/// one (a plain `Vec` would leave the old copy in freed memory), and the finished body is
/// wiped when hyper has sent it and drops the last reference.
#[derive(Default)]
pub struct WipingBuffer(Zeroizing<Vec<u8>>);

impl WipingBuffer {
    /// A buffer that holds `capacity` bytes before it first grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// The body, sent without another copy.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self.0)
    }

    /// What has been written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Appends `data`. serde_json writes a response in dozens of small pieces, so the
    /// common case (room left, the buffer is sized for the value) is a plain copy, and
    /// growing is out of line.
    #[inline]
    fn append(&mut self, data: &[u8]) {
        if self.0.capacity() - self.0.len() < data.len() {
            self.grow(data.len());
        }
        self.0.extend_from_slice(data);
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, more: usize) {
        let needed = self.0.len() + more;
        let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2));
        bigger.extend_from_slice(&self.0);
        // The old buffer is wiped as the old `Zeroizing` drops here.
        self.0 = Zeroizing::new(bigger);
    }
}

impl std::io::Write for WipingBuffer {
    #[inline]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.append(data);
        Ok(data.len())
    }

    // What serde_json calls: one copy, without the default's retry loop.
    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.append(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for WipingBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<body, {} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiping_buffer_keeps_every_byte_across_growth() {
        use std::io::Write as _;
        let mut buffer = WipingBuffer::with_capacity(4);
        for chunk in ["ab", "cdef", &"g".repeat(100), "h"] {
            buffer.write_all(chunk.as_bytes()).unwrap();
        }
        let expected = format!("abcdef{}h", "g".repeat(100));
        assert_eq!(buffer.as_slice(), expected.as_bytes());
        assert_eq!(&buffer.into_bytes()[..], expected.as_bytes());
        assert_eq!(format!("{:?}", WipingBuffer::default()), "<body, 0 bytes>");
    }
}
