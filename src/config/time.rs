//! RFC 3339 instants (`2026-11-26T15:00:00Z`, `2026-11-26T16:00:00.250+01:00`) as nanoseconds
//! since the Unix epoch — the clock Envoy's `proxy_get_current_time_nanoseconds` reads — for
//! `expiresAt` and `window.start`. Hand-written: the date arithmetic is a few lines, and a time
//! crate would add far more to the module.

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses an RFC 3339 date-time (a `T` or space between date and time, `Z` or `±hh:mm`, up to
/// nine fraction digits) after 1970; `None` when it is not one.
pub fn parse(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let sep = |at: usize, set: &[u8]| b.get(at).is_some_and(|c| set.contains(c));
    if b.len() < 20
        || !sep(4, b"-")
        || !sep(7, b"-")
        || !sep(10, b"Tt ")
        || !sep(13, b":")
        || !sep(16, b":")
    {
        return None;
    }
    let (year, month, day) = (i64::from(num(0, 4)?), num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u64;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let digits = at - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = u64::from(num(start, digits)?) * 10u64.pow((9 - digits) as u32);
    }
    let offset_minutes: i64 = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [s @ (b'+' | b'-'), ..] if b.len() == at + 6 && sep(at + 3, b":") => {
            let (h, m) = (i64::from(num(at + 1, 2)?), i64::from(num(at + 4, 2)?));
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *s == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_minutes * 60;
    let secs = u64::try_from(secs).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// An instant (nanoseconds since the Unix epoch) in RFC 3339, UTC, to the second.
pub fn format(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // The civil date of a day count (the inverse of `days_from_civil`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::{format, parse};

    #[test]
    fn formatting_reverses_parsing() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-11-26T15:00:00Z",
            "2024-02-29T23:59:59Z",
            "2100-03-01T00:00:00Z",
        ] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn instants() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse("2026-11-26T15:00:00Z"), Some(1_795_705_200 * S));
        assert_eq!(parse("2026-11-26T16:00:00+01:00"), Some(1_795_705_200 * S));
        assert_eq!(
            parse("2026-11-26t14:30:00.250-00:30"),
            Some(1_795_705_200 * S + S / 4)
        );
        assert_eq!(parse("2024-02-29 12:00:00Z"), Some(1_709_208_000 * S));
        for bad in [
            "",
            "2026-11-26",
            "2026-11-26T15:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T15:00:00.Z",
            "2026-11-26T15:00:00+0100",
            "1969-12-31T23:59:59Z",
            "tomorrow",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
