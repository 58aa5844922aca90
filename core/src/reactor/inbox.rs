//! A reactor's inbox: how other threads reach it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::conn::{ConnId, SlotTable};

/// Work sent to a reactor from another thread (or from a callback for another reactor).
#[derive(Debug)]
pub(crate) enum Command {
    Write {
        id: ConnId,
        data: Vec<u8>,
    },
    /// A write whose writer paces itself (`Pacer`): counted taken, and the pacer is told the
    /// connection's output queue from now on.
    WritePaced {
        id: ConnId,
        data: Vec<u8>,
        pacer: std::sync::Arc<super::Pacer>,
    },
    Close {
        id: ConnId,
        mode: super::CloseMode,
    },
    /// A write too large ever to be queued was refused: close with `WriteOverflow`.
    Overflow {
        id: ConnId,
    },
    /// `resume_input` from another thread.
    Resume {
        id: ConnId,
    },
    SetTimer {
        id: ConnId,
        after: std::time::Duration,
        tag: u64,
    },
    CancelTimer {
        id: ConnId,
        tag: u64,
    },
    /// An outbound socket whose non-blocking connect is in progress; `id` is already issued.
    Connect {
        id: ConnId,
        stream: mio::net::TcpStream,
    },
    /// An accepted socket handed over by the accepting reactor (`reuse_port = false`). Its
    /// place under `max_connections` is already reserved.
    Adopt {
        stream: mio::net::TcpStream,
    },
    /// `max_connections` has room again.
    ResumeAccept,
}

/// The sending side of a reactor's inbox plus its slot table, shared by every handle.
#[derive(Debug)]
pub(crate) struct Remote {
    tx: Sender<Command>,
    waker: Waker,
    /// Set by senders; a sender that flips it from false issues the one wake-up, so a burst of
    /// commands costs one `eventfd` write, not one per command.
    notified: AtomicBool,
    pub(crate) slots: SlotTable,
    /// Set (under the lock) once the reactor took its last command; `Connect` is sent under
    /// the same lock, so an issued id is either refused or certain to get its `on_close`.
    exited: Mutex<bool>,
}

/// The reactor's side.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: Receiver<Command>,
}

pub(crate) fn channel(waker: Waker) -> (Remote, Inbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        Remote {
            tx,
            waker,
            notified: AtomicBool::new(false),
            slots: SlotTable::default(),
            exited: Mutex::new(false),
        },
        Inbox { rx },
    )
}

impl Remote {
    /// Queues a command and wakes the reactor if it may be sleeping. Gives the command back if
    /// the reactor has exited.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Command> {
        self.tx.send(cmd).map_err(|e| e.0)?;
        self.wake();
        Ok(())
    }

    /// Sends a command that must not be lost once accepted (an outbound connect, whose id
    /// was already handed out): refused once the reactor has exited.
    pub(crate) fn send_guarded(&self, cmd: Command) -> Result<(), Command> {
        let exited = self.exited.lock().unwrap_or_else(|e| e.into_inner());
        if *exited {
            return Err(cmd);
        }
        self.send(cmd)
    }

    /// Refuses further guarded commands (the reactor's final drain follows).
    pub(crate) fn close_inbox(&self) {
        *self.exited.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Wakes the reactor without a command (results from workers, queue space, stop).
    /// Async-signal-safe: an atomic swap and an `eventfd` write, nothing else. (A failing
    /// `eventfd` write leaves the counter full, which still wakes the reactor.)
    pub(crate) fn wake(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    /// Whether commands may be waiting; clears the flag (call before draining).
    pub(crate) fn take_notified(&self) -> bool {
        self.notified.load(Ordering::SeqCst) && self.notified.swap(false, Ordering::SeqCst)
    }

    /// Leaves the flag set so the reactor comes back to a partially drained inbox (its next
    /// `poll` does not block while the flag is set).
    pub(crate) fn renotify(&self) {
        self.notified.store(true, Ordering::SeqCst);
    }

    /// Whether a wake-up is pending.
    pub(crate) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::SeqCst)
    }
}

impl Inbox {
    pub(crate) fn try_recv(&self) -> Option<Command> {
        self.rx.try_recv().ok()
    }
}
