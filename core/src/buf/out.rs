//! The per-connection output queue: pooled chunks, flushed with one `sendmsg` per batch.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use super::BufferPool;

/// Most chunks handed to one `sendmsg` (well under `IOV_MAX`).
const MAX_IOV: usize = 64;
/// Owned writes smaller than this are copied into the tail chunk instead of queued as a chunk.
const COPY_OWNED_BELOW: usize = 1024;
/// Entries of the chunk list an empty queue keeps room for, once a burst grew it past
/// `SHRINK_CHUNK_SLOTS_ABOVE` (a smaller list keeps its room: bursts reuse it).
const KEEP_CHUNK_SLOTS: usize = 8;
const SHRINK_CHUNK_SLOTS_ABOVE: usize = 64;

/// Lets `f` write up to `max` bytes in place at the end of `v` and keeps what it says it
/// wrote (at most `max`); returns that count. Only the bytes `f` may write are zero-filled
/// first, so `f` gets an initialized slice and no unsafe length juggling is needed.
/// If `f` panics, `v` goes back to its length before the call: no zero-fill or half-written
/// bytes stay queued (a handler's panic may be answered, as HTTP answers 500, and that answer
/// must not follow garbage).
pub(crate) fn fill_in_place(
    v: &mut Vec<u8>,
    max: usize,
    f: impl FnOnce(&mut [u8]) -> usize,
) -> usize {
    let start = v.len();
    v.resize(start + max, 0);
    let mut keep = TruncateOnDrop { v, to: start };
    let n = f(&mut keep.v[start..]).min(max);
    keep.to = start + n;
    n
}

/// Truncates a vector to `to` when dropped, on return or during unwinding alike.
struct TruncateOnDrop<'a> {
    v: &'a mut Vec<u8>,
    to: usize,
}

impl Drop for TruncateOnDrop<'_> {
    fn drop(&mut self) {
        self.v.truncate(self.to);
    }
}

/// Queued, unsent output of one connection.
///
/// Small writes are copied into the tail chunk (a pooled buffer), so many small responses leave
/// in one system call; owned buffers given by value are queued without a copy, unless small
/// (then copied too). The first chunk
/// lives inline so a connection with one pending chunk allocates nothing besides the pooled
/// buffer, and an empty queue holds no memory at all.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    head: Vec<u8>,
    pos: usize,
    rest: VecDeque<Vec<u8>>,
    len: usize,
}

impl OutQueue {
    /// Bytes queued and not yet written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tail(&mut self) -> &mut Vec<u8> {
        match self.rest.back_mut() {
            Some(t) => t,
            None => &mut self.head,
        }
    }

    fn push_chunk(&mut self, chunk: Vec<u8>) {
        if self.head.is_empty() && self.rest.is_empty() {
            self.head = chunk;
            self.pos = 0;
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// Copies `data` to the end of the queue, filling pooled chunks.
    pub(crate) fn push_copy(&mut self, mut data: &[u8], pool: &mut BufferPool) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if self.head.capacity() == 0 && self.rest.is_empty() {
            self.head = pool.get();
            self.pos = 0;
        }
        loop {
            let tail = self.tail();
            let room = tail.capacity() - tail.len();
            let n = room.min(data.len());
            tail.extend_from_slice(&data[..n]);
            data = &data[n..];
            if data.is_empty() {
                return;
            }
            let chunk = pool.get();
            self.push_chunk(chunk);
        }
    }

    /// Appends through `f`, which gets the tail chunk with room for at least `max` more bytes
    /// (a fresh pooled chunk when the tail has less) and appends to it; returns how many it
    /// appended. Nothing is zero-filled first: `f` extends the vector, which initializes
    /// what it writes.
    pub(crate) fn append_vec(
        &mut self,
        max: usize,
        pool: &mut BufferPool,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> usize {
        if self.head.capacity() == 0 && self.rest.is_empty() {
            self.head = pool.get();
            self.pos = 0;
        }
        let room = {
            let t = self.tail();
            t.capacity() - t.len()
        };
        if room < max {
            let mut chunk = pool.get();
            chunk.reserve(max);
            self.push_chunk(chunk);
        }
        let tail = self.tail();
        let start = tail.len();
        // `f` only appends (the crate's own serializers, which do not panic, or a handler's
        // closure inside `fill_in_place`, which takes back what it lent if the closure
        // panics); a shorter vector would mean it removed queued bytes.
        f(tail);
        debug_assert!(tail.len() >= start && tail.len() - start <= max);
        let n = tail.len().saturating_sub(start);
        self.len += n;
        n
    }

    /// Queues an owned buffer: it becomes the head of an empty queue as it is, a small one is
    /// copied (into the tail chunk, or a pooled one), a large one is queued as a chunk.
    pub(crate) fn push_owned(&mut self, data: Vec<u8>, pool: &mut BufferPool) {
        if data.is_empty() {
            pool.put(data);
            return;
        }
        if self.is_empty_storage() {
            pool.put(std::mem::replace(&mut self.head, data));
            self.pos = 0;
            self.len += self.head.len();
            return;
        }
        // A small one is copied, into a pooled chunk when the tail is full: many small writes
        // from other threads share chunks instead of costing an allocation (and an iovec)
        // each.
        if data.len() < COPY_OWNED_BELOW {
            self.push_copy(&data, pool);
            pool.put(data);
            return;
        }
        self.len += data.len();
        self.rest.push_back(data);
    }

    fn is_empty_storage(&self) -> bool {
        self.head.is_empty() && self.rest.is_empty()
    }

    /// Drops everything queued (an abort), returning chunks to the pool.
    pub(crate) fn clear(&mut self, pool: &mut BufferPool) {
        pool.put(std::mem::take(&mut self.head));
        for c in self.rest.drain(..) {
            pool.put(c);
        }
        if self.rest.capacity() > SHRINK_CHUNK_SLOTS_ABOVE {
            self.rest.shrink_to(KEEP_CHUNK_SLOTS);
        }
        self.pos = 0;
        self.len = 0;
    }

    /// Marks `n` bytes as written, returning emptied chunks to the pool.
    fn consume(&mut self, mut n: usize, pool: &mut BufferPool) {
        self.len -= n;
        while n > 0 {
            let avail = self.head.len() - self.pos;
            if n < avail {
                self.pos += n;
                return;
            }
            n -= avail;
            let next = self.rest.pop_front().unwrap_or_default();
            pool.put(std::mem::replace(&mut self.head, next));
            self.pos = 0;
        }
        if self.len == 0 {
            // Keep little while idle: the last chunk goes back to the pool, and a chunk list
            // that a burst of writes grew large gives most of its room back.
            pool.put(std::mem::take(&mut self.head));
            self.pos = 0;
            if self.rest.capacity() > SHRINK_CHUNK_SLOTS_ABOVE {
                self.rest.shrink_to(KEEP_CHUNK_SLOTS);
            }
        }
    }

    /// Writes as much as the socket takes with `send` (one chunk) or `sendmsg` (several),
    /// always with `MSG_NOSIGNAL` so a reset peer never raises `SIGPIPE` in the host process.
    /// Returns the bytes written and how the attempt ended: `WouldBlock` ends it without
    /// error; an error comes with the bytes written before it (they left, and are counted).
    pub(crate) fn flush(
        &mut self,
        sock: &socket2::SockRef<'_>,
        pool: &mut BufferPool,
    ) -> (usize, io::Result<()>) {
        let mut total = 0;
        while self.len > 0 {
            let res = if self.rest.is_empty() {
                sock.send_with_flags(&self.head[self.pos..], libc::MSG_NOSIGNAL)
            } else {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                iov[0] = IoSlice::new(&self.head[self.pos..]);
                let mut n = 1;
                for c in self.rest.iter().take(MAX_IOV - 1) {
                    iov[n] = IoSlice::new(c);
                    n += 1;
                }
                sock.send_vectored_with_flags(&iov[..n], libc::MSG_NOSIGNAL)
            };
            match res {
                Ok(0) => return (total, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    total += n;
                    self.consume(n, pool);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, Err(e)),
            }
        }
        (total, Ok(()))
    }

    /// The queued bytes in order (tests and the worker pool hand-off).
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head[self.pos..].to_vec();
        for c in &self.rest {
            v.extend_from_slice(c);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_owned_chunks_keep_order() {
        let mut pool = BufferPool::new(256, 8);
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..50u8 {
            let piece: Vec<u8> = std::iter::repeat_n(i, (i as usize * 37) % 700 + 1).collect();
            expect.extend_from_slice(&piece);
            if i % 3 == 0 {
                q.push_owned(piece, &mut pool);
            } else {
                q.push_copy(&piece, &mut pool);
            }
        }
        assert_eq!(q.len(), expect.len());
        assert_eq!(q.to_vec(), expect);
    }

    #[test]
    fn flush_through_a_socket_pair_returns_chunks() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut pool = BufferPool::new(256, 8);
        let mut q = OutQueue::default();
        let data: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        q.push_copy(&data, &mut pool);
        q.push_owned(vec![9; 5000], &mut pool);
        let sock = socket2::SockRef::from(&a);
        let (n, r) = q.flush(&sock, &mut pool);
        r.unwrap();
        assert_eq!(n, 7000);
        assert!(q.is_empty());
        assert!(pool.free_len() >= 7, "pooled chunks came back");
        assert_eq!(q.head.capacity(), 0, "an empty queue keeps no chunk");
        let mut got = vec![0; 7000];
        std::io::Read::read_exact(&mut &b, &mut got).unwrap();
        assert_eq!(&got[..2000], &data[..]);
        assert!(got[2000..].iter().all(|&x| x == 9));
        // A burst of many chunks gives back the room it took in the chunk list.
        for _ in 0..100 {
            q.push_owned(vec![1; 2000], &mut pool);
        }
        assert!(q.rest.capacity() >= 99);
        let mut sink = vec![0; 200_000];
        let mut sent = 0;
        while !q.is_empty() {
            let (n, r) = q.flush(&sock, &mut pool);
            r.unwrap();
            sent += n;
            let k = std::io::Read::read(&mut &b, &mut sink).unwrap();
            assert!(k > 0);
        }
        assert_eq!(sent, 200_000);
        assert!(q.rest.capacity() <= 8, "{}", q.rest.capacity());
    }

    #[test]
    fn many_small_owned_writes_share_pooled_chunks() {
        let mut pool = BufferPool::new(16 << 10, 8);
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..2000u32 {
            let msg = format!("message {i};").into_bytes();
            expect.extend_from_slice(&msg);
            q.push_owned(msg, &mut pool);
        }
        assert_eq!(q.to_vec(), expect);
        // About 27 KB: the first message as it came, then two pooled chunks, not 2000.
        assert!(q.rest.len() <= 3, "{} chunks", q.rest.len());
    }

    #[test]
    fn a_failing_flush_reports_the_bytes_it_sent_before_the_error() {
        // A peer that closed: a `sendmsg` is taken, and the reset it draws makes a later one
        // fail (on loopback usually the next one, in the same flush). Every flush reports
        // exactly what left the queue, the failing one too.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        drop(l.accept().unwrap().0);
        std::thread::sleep(std::time::Duration::from_millis(50));
        a.set_nonblocking(true).unwrap();
        let sock = socket2::SockRef::from(&a);
        let mut pool = BufferPool::new(256, 8);
        let mut q = OutQueue::default();
        for attempt in 0.. {
            assert!(attempt < 500, "the reset never came back");
            for _ in 0..2 * MAX_IOV {
                q.push_owned(vec![7; 100], &mut pool);
            }
            let before = q.len();
            let (n, r) = q.flush(&sock, &mut pool);
            assert_eq!(n, before - q.len(), "attempt {attempt}");
            if r.is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
