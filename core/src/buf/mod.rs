//! Buffers: the per-reactor pool and the per-connection output queue.

mod out;
mod pool;

pub(crate) use out::OutQueue;
pub(crate) use pool::BufferPool;
