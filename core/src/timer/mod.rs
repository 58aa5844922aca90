//! A hierarchical hashed timing wheel: O(1) insert and cancel, no syscall per timer.
//!
//! Time is counted in ticks of one millisecond since the reactor started. Six levels of 64
//! slots cover 2^36 ms (about two years); a timer lives in the level whose span contains the
//! highest bit in which its deadline differs from the current time, so every timer in level
//! `n` expires before every timer in level `n + 1`. Finding the next deadline is a bitmap scan
//! per level, which lets the reactor sleep until exactly the next due timer instead of ticking.
//! When time reaches a slot of a higher level its timers drop to lower levels (each timer moves
//! at most five times in its life). Entries sit in a slab and form intrusive doubly-linked
//! lists per slot, so cancelling never searches.

use slab::Slab;

const LEVELS: usize = 6;
const SLOT_BITS: usize = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Longest delay the wheel represents; longer ones are clamped to it.
pub(crate) const MAX_TICKS: u64 = (1 << (SLOT_BITS * LEVELS)) - 1;
const NIL: u32 = u32::MAX;

/// Names one timer in a wheel; stale keys (the timer fired or was cancelled) are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerId {
    key: u32,
    seq: u32,
}

#[derive(Debug)]
struct Entry<T> {
    when: u64,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
    seq: u32,
    value: T,
}

/// The wheel. `T` is the payload handed back when a timer fires.
#[derive(Debug)]
pub(crate) struct TimerWheel<T> {
    entries: Slab<Entry<T>>,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    elapsed: u64,
    next_seq: u32,
}

fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    (significant / SLOT_BITS).min(LEVELS - 1)
}

fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (level * SLOT_BITS)) as usize) & (SLOTS - 1)
}

impl<T> TimerWheel<T> {
    pub(crate) fn new() -> Self {
        TimerWheel {
            entries: Slab::new(),
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            elapsed: 0,
            next_seq: 0,
        }
    }

    /// Timers currently scheduled.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Schedules `value` to fire at tick `when`. A deadline not after the current time fires
    /// at the next [`TimerWheel::advance`] that moves time forward.
    pub(crate) fn insert(&mut self, when: u64, value: T) -> TimerId {
        let when = when.clamp(self.elapsed + 1, self.elapsed + MAX_TICKS);
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        let key = self.entries.insert(Entry {
            when,
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
            seq,
            value,
        });
        let key = u32::try_from(key).expect("timer slab exceeds u32 keys");
        self.link(key);
        TimerId { key, seq }
    }

    /// Cancels a timer; `None` if it already fired or was cancelled.
    pub(crate) fn cancel(&mut self, k: TimerId) -> Option<T> {
        match self.entries.get(k.key as usize) {
            Some(e) if e.seq == k.seq => {
                self.unlink(k.key);
                Some(self.entries.remove(k.key as usize).value)
            }
            _ => None,
        }
    }

    #[cfg(test)]
    /// The deadline (tick) of the timer scheduled as `k`, if it is still pending.
    pub(crate) fn deadline(&self, k: TimerId) -> Option<u64> {
        match self.entries.get(k.key as usize) {
            Some(e) if e.seq == k.seq => Some(e.when),
            _ => None,
        }
    }

    fn link(&mut self, key: u32) {
        let when = self.entries[key as usize].when;
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when, level);
        let head = self.heads[level][slot];
        {
            let e = &mut self.entries[key as usize];
            e.level = level as u8;
            e.slot = slot as u8;
            e.prev = NIL;
            e.next = head;
        }
        if head != NIL {
            self.entries[head as usize].prev = key;
        }
        self.heads[level][slot] = key;
        self.occupied[level] |= 1 << slot;
    }

    fn unlink(&mut self, key: u32) {
        let (prev, next, level, slot) = {
            let e = &self.entries[key as usize];
            (e.prev, e.next, e.level as usize, e.slot as usize)
        };
        if prev == NIL {
            self.heads[level][slot] = next;
            if next == NIL {
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// The earliest tick at which [`TimerWheel::advance`] has work, with its level and slot.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            // Search from the slot after the current one: a lower level never holds the current
            // slot (its timers already cascaded), and at the top level the current slot can
            // only hold timers a full turn ahead, so it comes last.
            let now_slot = slot_for(self.elapsed, level);
            let start = (now_slot + 1) % SLOTS;
            let slot =
                (start + occupied.rotate_right(start as u32).trailing_zeros() as usize) % SLOTS;
            let slot_range = 1u64 << (level * SLOT_BITS);
            let level_range = slot_range << SLOT_BITS;
            let level_start = self.elapsed & !(level_range - 1);
            let mut deadline = level_start + slot as u64 * slot_range;
            if deadline <= self.elapsed {
                // Only the top level can hold a slot "behind" the current time: its slots act
                // as a ring for timers near the end of the wheel's span, so the slot is due one
                // turn later. Every lower level holds only deadlines after `elapsed`.
                debug_assert_eq!(level, LEVELS - 1);
                deadline += level_range;
            }
            return Some((level, slot, deadline));
        }
        None
    }

    /// The tick of the next due timer, if any (a lower bound when it sits in a high level).
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.next_expiration().map(|(_, _, d)| d)
    }

    /// Moves time to `now`, pushing the key and payload of every timer due at or before it.
    pub(crate) fn advance(&mut self, now: u64, fired: &mut Vec<(TimerId, T)>) {
        while let Some((level, slot, deadline)) = self.next_expiration() {
            if deadline > now {
                break;
            }
            self.elapsed = self.elapsed.max(deadline);
            let mut key = std::mem::replace(&mut self.heads[level][slot], NIL);
            self.occupied[level] &= !(1 << slot);
            while key != NIL {
                let (next, when, seq) = {
                    let e = &self.entries[key as usize];
                    (e.next, e.when, e.seq)
                };
                if when <= now {
                    let value = self.entries.remove(key as usize).value;
                    fired.push((TimerId { key, seq }, value));
                } else {
                    self.link(key);
                }
                key = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(fired: &[(TimerId, u32)]) -> Vec<u32> {
        fired.iter().map(|(_, v)| *v).collect()
    }

    /// Advances from deadline to deadline, as a reactor sleeping until `next_deadline` does.
    fn fire_all(w: &mut TimerWheel<u32>, upto: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(next) = w.next_deadline() {
            let now = next.min(upto);
            w.advance(now, &mut buf);
            out.extend(buf.drain(..).map(|(_, v)| (now, v)));
            if now == upto {
                break;
            }
        }
        out
    }

    #[test]
    fn fires_each_timer_once_at_its_deadline() {
        let mut w = TimerWheel::new();
        let deadlines: Vec<u64> = vec![1, 2, 63, 64, 65, 100, 4095, 4096, 5000, 300_000, 1 << 30];
        for (i, d) in deadlines.iter().enumerate() {
            w.insert(*d, i as u32);
        }
        let fired = fire_all(&mut w, (1 << 30) + 10);
        assert_eq!(fired.len(), deadlines.len());
        for (now, i) in fired {
            assert_eq!(now, deadlines[i as usize], "timer {i}");
        }
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn coarse_steps_never_fire_early_or_lose_timers() {
        let mut w = TimerWheel::new();
        let mut state = 12345u64;
        let mut deadlines = Vec::new();
        for i in 0..2000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let d = 1 + (state >> 33) % 200_000;
            deadlines.push(d);
            w.insert(d, i);
        }
        let mut buf = Vec::new();
        let mut now = 0;
        let mut seen = vec![false; deadlines.len()];
        while now < 210_000 {
            now += 1 + (now * 7919) % 997;
            w.advance(now, &mut buf);
            for (_, i) in buf.drain(..) {
                let d = deadlines[i as usize];
                assert!(d <= now, "fired early: deadline {d} at {now}");
                assert!(!seen[i as usize]);
                seen[i as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn next_deadline_is_exact_within_a_level_and_never_late() {
        let mut w = TimerWheel::new();
        let mut buf = Vec::new();
        w.advance(1000, &mut buf);
        w.insert(1010, 1u32);
        assert_eq!(w.next_deadline(), Some(1010), "same 64 ms window: exact");
        let k = w.insert(1005, 2);
        assert_eq!(w.next_deadline(), Some(1005));
        assert_eq!(w.cancel(k), Some(2));
        assert_eq!(w.cancel(k), None, "stale key");
        assert_eq!(w.next_deadline(), Some(1010));
        // Across a window boundary the wheel may wake early to cascade, never late.
        w.insert(1050, 3);
        w.advance(1010, &mut buf);
        assert_eq!(values(&buf), vec![1]);
        buf.clear();
        let d = w.next_deadline().unwrap();
        assert!(d <= 1050, "{d}");
        w.advance(d, &mut buf);
        assert!(d == 1050 || buf.is_empty());
        assert_eq!(w.next_deadline().unwrap_or(1050), 1050);
        w.insert(900_000, 4);
        let mut wakeups = 0;
        while let Some(d) = w.next_deadline() {
            w.advance(d, &mut buf);
            wakeups += 1;
        }
        assert_eq!(values(&buf), vec![3, 4]);
        assert!(wakeups <= 2 + 2 * LEVELS, "{wakeups} wake-ups");
    }

    #[test]
    fn past_deadlines_fire_on_next_advance() {
        let mut w = TimerWheel::new();
        let mut buf = Vec::new();
        w.advance(500, &mut buf);
        w.insert(10, 7u32);
        w.advance(500, &mut buf);
        assert!(buf.is_empty());
        w.advance(501, &mut buf);
        assert_eq!(values(&buf), vec![7]);
    }

    #[test]
    fn cancel_in_the_middle_of_a_slot_list() {
        let mut w = TimerWheel::new();
        let a = w.insert(10, 1u32);
        let b = w.insert(10, 2);
        let c = w.insert(10, 3);
        assert_eq!(w.cancel(b), Some(2));
        let mut buf = Vec::new();
        w.advance(10, &mut buf);
        let mut v = values(&buf);
        v.sort();
        assert_eq!(v, vec![1, 3]);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.cancel(c), None);
    }

    #[test]
    fn a_timer_a_full_turn_ahead_does_not_hide_nearer_ones() {
        let mut w = TimerWheel::new();
        let mut buf = Vec::new();
        w.advance(1000, &mut buf);
        w.insert(u64::MAX, 1u32);
        w.advance((1 << 30) - 10, &mut buf);
        assert!(buf.is_empty());
        w.insert((1 << 30) + 5, 2);
        let d = w.next_deadline().unwrap();
        assert!(d <= (1 << 30) + 5, "next deadline {d}");
        w.advance((1 << 30) + 100_000, &mut buf);
        assert_eq!(values(&buf), vec![2]);
    }

    #[test]
    fn clamps_very_long_delays() {
        let mut w = TimerWheel::new();
        let k = w.insert(u64::MAX, 1u32);
        assert_eq!(w.deadline(k), Some(MAX_TICKS));
        let mut buf = Vec::new();
        w.advance(MAX_TICKS - 1, &mut buf);
        assert!(buf.is_empty());
        w.advance(MAX_TICKS, &mut buf);
        assert_eq!(values(&buf), vec![1]);
    }
}
