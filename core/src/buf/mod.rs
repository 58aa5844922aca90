//! Buffers: the per-reactor pool and the per-connection output queue.

mod out;
mod pool;

pub(crate) use out::{OutQueue, fill_in_place};
pub(crate) use pool::BufferPool;
