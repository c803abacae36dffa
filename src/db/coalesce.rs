//! A socket for COPY readers that merges the server's consecutive CopyData
//! messages into one before tokio-postgres sees them.
//!
//! `COPY ... TO STDOUT` sends one CopyData message per row. tokio-postgres
//! parses, queues and hands out each message on its own, which cost about a
//! fifth of the engine's client CPU at 100M rows (~55 ns a row). The payload
//! of a binary COPY is one byte stream whatever its message boundaries, and
//! the reader's decoder already carries rows across chunks, so re-framing
//! runs of CopyData as single messages changes nothing but the cost. Every
//! other message passes through unchanged, so connecting, authentication
//! and errors stay tokio-postgres's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much to ask the socket for at a time.
const READ_CHUNK: usize = 256 * 1024;

/// The server's messages all start with a type byte and a 4-byte length.
const HEADER: usize = 5;

pub struct Coalescing<S> {
    inner: S,
    /// Bytes from the socket not yet framed (`raw[start..]`).
    raw: Vec<u8>,
    start: usize,
    /// Re-framed bytes not yet handed to the reader (`out[pos..]`).
    out: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl<S> Coalescing<S> {
    pub fn new(inner: S) -> Self {
        Coalescing {
            inner,
            raw: Vec::with_capacity(READ_CHUNK),
            start: 0,
            out: Vec::with_capacity(READ_CHUNK + HEADER),
            pos: 0,
            eof: false,
        }
    }

    /// Moves every complete message from `raw` to `out`, merging runs of
    /// CopyData ('d') into one message.
    fn frame(&mut self) {
        let mut open: Option<usize> = None;
        loop {
            let b = &self.raw[self.start..];
            if b.len() < HEADER {
                break;
            }
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            // A length below 4 is a protocol error; pass it through whole
            // (header only) and let tokio-postgres report it.
            let total = 1 + len.max(4);
            if b.len() < total {
                break;
            }
            if b[0] == b'd' {
                if open.is_none() {
                    open = Some(self.out.len());
                    self.out.extend_from_slice(&[b'd', 0, 0, 0, 0]);
                }
                self.out.extend_from_slice(&b[HEADER..total]);
            } else {
                close(&mut self.out, open.take());
                self.out.extend_from_slice(&b[..total]);
            }
            self.start += total;
        }
        close(&mut self.out, open);
        if self.start == self.raw.len() {
            self.raw.clear();
            self.start = 0;
        }
    }
}

/// Writes the length of the merged CopyData message that starts at `open`.
fn close(out: &mut [u8], open: Option<usize>) {
    if let Some(at) = open {
        let len = (out.len() - at - 1) as u32;
        out[at + 1..at + HEADER].copy_from_slice(&len.to_be_bytes());
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalescing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.pos);
                buf.put_slice(&this.out[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.out.len() {
                    this.out.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever partial message is left goes through as it is,
                // so that the reader sees the truncation and reports it.
                if this.start < this.raw.len() {
                    this.out.extend_from_slice(&this.raw[this.start..]);
                    this.raw.clear();
                    this.start = 0;
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if this.start > 0 {
                this.raw.drain(..this.start);
                this.start = 0;
            }
            this.raw.reserve(READ_CHUNK);
            let filled = this.raw.len();
            let spare = this.raw.spare_capacity_mut();
            let mut rb = ReadBuf::uninit(spare);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    // SAFETY: `poll_read` initialised the first `n` bytes of
                    // the spare capacity.
                    unsafe { this.raw.set_len(filled + n) };
                    if n == 0 {
                        this.eof = true;
                    } else {
                        this.frame();
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalescing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A Unix or TCP connection to the server.
pub enum Socket {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Splits the (type, body) messages of a byte stream.
    fn messages(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            out.push((b[0], b[5..1 + len].to_vec()));
            b = &b[1 + len..];
        }
        out
    }

    /// Whatever the read sizes, the re-framed stream carries the same
    /// non-CopyData messages in the same order, the same CopyData bytes
    /// between them, and fewer CopyData messages.
    #[test]
    fn merges_copy_data_and_passes_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut input = Vec::new();
        input.extend(msg(b'H', &[0, 0, 0]));
        let mut rows = 0u8;
        for i in 0..2000u32 {
            if i % 700 == 0 {
                input.extend(msg(b'N', b"a notice in the middle"));
            }
            let body: Vec<u8> = (0..(i % 90) as u8).map(|k| k ^ rows).collect();
            rows = rows.wrapping_add(1);
            input.extend(msg(b'd', &body));
        }
        input.extend(msg(b'c', &[]));
        input.extend(msg(b'C', b"COPY 2000\0"));
        input.extend(msg(b'Z', b"I"));

        let summarise = |ms: Vec<(u8, Vec<u8>)>| {
            let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
            for (t, body) in ms {
                match out.last_mut() {
                    Some((b'd', acc)) if t == b'd' => acc.extend(body),
                    _ => out.push((t, body)),
                }
            }
            out
        };
        let expect = summarise(messages(&input));
        for piece in [1usize, 3, 7, 64, 1000, 1 << 20] {
            // A reader fed in small pieces, as a socket might deliver them.
            let (mut tx, rx) = tokio::io::duplex(piece.max(64));
            let data = input.clone();
            let got = rt.block_on(async move {
                let writer = tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    for c in data.chunks(piece) {
                        tx.write_all(c).await.expect("write");
                    }
                });
                let mut r = Coalescing::new(rx);
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.expect("read");
                writer.await.expect("writer");
                got
            });
            let got_msgs = messages(&got);
            let copy_msgs = got_msgs.iter().filter(|m| m.0 == b'd').count();
            assert!(
                copy_msgs < 2000,
                "{copy_msgs} CopyData messages for piece {piece}"
            );
            assert_eq!(summarise(got_msgs), expect, "piece {piece}");
        }
    }

    /// A stream cut inside a message still hands the partial message on.
    #[test]
    fn a_truncated_message_is_passed_on() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut input = msg(b'd', b"abc");
        input.extend(&msg(b'd', b"defgh")[..6]);
        let got = rt.block_on(async {
            let mut r = Coalescing::new(&input[..]);
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.expect("read");
            got
        });
        let mut expect = msg(b'd', b"abc");
        expect.extend(&msg(b'd', b"defgh")[..6]);
        assert_eq!(got, expect);
    }
}
