//! The `Date` header field (IMF-fixdate), formatted at most once per second per thread.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) const DATE_LEN: usize = 29;

/// Length of the whole field line: `Date: ` + IMF-fixdate + CRLF.
pub(crate) const DATE_LINE_LEN: usize = 6 + DATE_LEN + 2;

/// The field line `Date: <date>\r\n` for `date`.
pub(crate) fn line(date: &[u8; DATE_LEN]) -> [u8; DATE_LINE_LEN] {
    let mut out = [0u8; DATE_LINE_LEN];
    out[..6].copy_from_slice(b"Date: ");
    out[6..6 + DATE_LEN].copy_from_slice(date);
    out[6 + DATE_LEN..].copy_from_slice(b"\r\n");
    out
}

/// Formats seconds since the Unix epoch as an IMF-fixdate (RFC 9110 §5.6.7).
pub(crate) fn format(secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    out[5..7].copy_from_slice(&two(day as u64));
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.clamp(0, 9999) as u64;
    out[12..16].copy_from_slice(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    out[17..19].copy_from_slice(&two(hh));
    out[20..22].copy_from_slice(&two(mm));
    out[23..25].copy_from_slice(&two(ss));
    out
}

struct Cache {
    valid_until: Option<Instant>,
    line: [u8; DATE_LINE_LEN],
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { valid_until: None, line: [0; DATE_LINE_LEN] })
    };
}

/// Calls `f` with the current `Date` field line (`Date: <date>\r\n`, ready to copy into a
/// head), reformatted only when `now` passed into the next second. `now` is the reactor's
/// cached loop time, so a cached date costs no clock read at all.
pub(crate) fn with_date<R>(now: Instant, f: impl FnOnce(&[u8; DATE_LINE_LEN]) -> R) -> R {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.valid_until.is_none_or(|t| now >= t) {
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            c.line = line(&format(since.as_secs()));
            let to_next =
                Duration::from_secs(1) - Duration::from_nanos(u64::from(since.subsec_nanos()));
            c.valid_until = Some(now + to_next);
        }
        f(&c.line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format(1_798_761_599), b"Thu, 31 Dec 2026 23:59:59 GMT");
        assert_eq!(&format(4_107_542_400), b"Mon, 01 Mar 2100 00:00:00 GMT");
    }

    #[test]
    fn cached_within_a_second() {
        let now = Instant::now();
        let a = with_date(now, |d| *d);
        let b = with_date(now, |d| *d);
        assert_eq!(a, b);
        assert_eq!(&a[..6], b"Date: ");
        assert_eq!(&a[32..], b"GMT\r\n");
    }
}
