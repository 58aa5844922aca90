//! A free list of equally sized byte buffers, one per reactor (no locking).
//!
//! Connections borrow a buffer only while they hold unconsumed input or unsent output and give
//! it back as soon as it empties, so an idle connection holds no userland buffer and a busy
//! reactor reuses the same few buffers instead of calling the allocator per message.

/// The pool. Buffers whose capacity drifted far from the standard size are not kept.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    buf_size: usize,
    max_free: usize,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl BufferPool {
    pub(crate) fn new(buf_size: usize, max_free: usize) -> Self {
        BufferPool {
            free: Vec::with_capacity(max_free.min(4096)),
            buf_size,
            max_free,
            hits: 0,
            misses: 0,
        }
    }

    /// An empty buffer with at least `buf_size` capacity.
    pub(crate) fn get(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(b) => {
                self.hits += 1;
                b
            }
            None => {
                self.misses += 1;
                Vec::with_capacity(self.buf_size)
            }
        }
    }

    /// Returns a buffer. Keeps it if it has a standard capacity and the free list has room.
    pub(crate) fn put(&mut self, mut b: Vec<u8>) {
        let cap = b.capacity();
        if cap >= self.buf_size && cap <= 2 * self.buf_size && self.free.len() < self.max_free {
            b.clear();
            self.free.push(b);
        }
    }

    /// `input` after part of it was consumed: kept as it is, or, when it holds little in a
    /// buffer grown large (a read appended to a leftover), copied into a standard one, so a
    /// few bytes of a partial message do not pin a large buffer.
    pub(crate) fn settle(&mut self, input: Vec<u8>) -> Vec<u8> {
        if input.capacity() <= 2 * self.buf_size || input.len() > self.buf_size / 2 {
            return input;
        }
        let mut fresh = self.get();
        fresh.extend_from_slice(&input);
        fresh
    }

    #[cfg(test)]
    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_standard_buffers_only() {
        let mut p = BufferPool::new(1024, 2);
        let a = p.get();
        assert_eq!((p.hits, p.misses), (0, 1));
        p.put(a);
        let b = p.get();
        assert_eq!((p.hits, p.misses), (1, 1));
        p.put(Vec::with_capacity(1 << 20));
        assert_eq!(p.free_len(), 0, "oversized buffers are dropped");
        p.put(b);
        p.put(Vec::with_capacity(1024));
        p.put(Vec::with_capacity(1024));
        assert_eq!(p.free_len(), 2, "free list is bounded");
    }

    #[test]
    fn a_little_left_in_a_large_buffer_moves_to_a_standard_one() {
        let mut pool = BufferPool::new(1024, 4);
        let mut grown = vec![7u8; 10_000];
        grown.drain(..9_990);
        let settled = pool.settle(grown);
        assert_eq!(settled, vec![7u8; 10]);
        assert!(settled.capacity() <= 2 * 1024, "{}", settled.capacity());
        // Much left, or a standard buffer: kept as it is.
        let kept = pool.settle(vec![1u8; 5000]);
        assert_eq!(kept.len(), 5000);
        let standard = Vec::with_capacity(1024);
        assert_eq!(pool.settle(standard).capacity(), 1024);
    }
}
