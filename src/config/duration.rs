//! Durations as the configuration writes them: `"250ms"`, `"1s"`, `"1m30s"`, `"2h 5m"`,
//! `"1.5s"` — one or more `<number><unit>` terms (a number is digits with an optional fraction
//! of up to 9 digits; spaces may separate terms, and a number from its unit), summed. The unit names are
//! those of the `humantime` crate, which dbfault used before (so every configuration it
//! accepted still parses): ns/nsec/nanos, us/usec/µs, ms/msec/millis, s/sec/secs/second(s),
//! m/min/mins/minute(s), h/hr/hrs/hour(s), d/day(s), w/wk/wks/week(s), M/month(s) (30.44 days),
//! y/yr/yrs/year(s) (365.25 days). Written here because the crate cost 6 KB of the module for
//! a dozen lines of grammar.

use std::time::Duration;

const SEC: u64 = 1_000_000_000;

/// Nanoseconds per `unit`; `None` for an unknown unit.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" | "nsec" | "nanos" => 1,
        "us" | "usec" | "µs" | "micros" => 1_000,
        "ms" | "msec" | "millis" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * SEC,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * SEC,
        "d" | "day" | "days" => 86_400 * SEC,
        "w" | "wk" | "wks" | "week" | "weeks" => 7 * 86_400 * SEC,
        "M" | "month" | "months" => 2_630_016 * SEC,
        "y" | "yr" | "yrs" | "year" | "years" => 31_557_600 * SEC,
        _ => return None,
    })
}

/// Parses `text` (surrounding spaces ignored); `None` when it is not a duration or does not fit
/// in 584 years.
pub fn parse(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let whole: u64 = whole.parse().ok()?;
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let (digits, after) = split_digits(after);
                if digits.is_empty() || digits.len() > 9 {
                    return None;
                }
                (Some((digits.parse::<u64>().ok()?, digits.len())), after)
            }
            None => (None, after),
        };
        let after = after.trim_start();
        // Units are ASCII letters, and µ (char::is_alphabetic would bring Unicode tables).
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic() || c == 'µ')
                .len();
        let (unit, after) = after.split_at_checked(letters)?;
        let per = unit_nanos(unit)?;
        let mut term = whole.checked_mul(per)?;
        if let Some((numerator, digits)) = fraction {
            let scale = 10u64.pow(u32::try_from(digits).ok()?);
            let part = if per % scale == 0 {
                (per / scale).checked_mul(numerator)?
            } else {
                per.checked_mul(numerator)? / scale
            };
            term = term.checked_add(part)?;
        }
        total = total.checked_add(term)?;
        rest = after.trim_start();
    }
    Some(Duration::from_nanos(total))
}

/// `text` split after its leading ASCII digits.
fn split_digits(text: &str) -> (&str, &str) {
    let n = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    text.split_at_checked(n).unwrap_or((text, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("250ms", ms(250)),
            ("1s", ms(1000)),
            ("1m30s", ms(90_000)),
            (" 1m 30s ", ms(90_000)),
            ("2h5min", ms(7_500_000)),
            ("0s", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1d", Duration::from_secs(86_400)),
            ("1w", Duration::from_secs(604_800)),
            ("1M", Duration::from_secs(2_630_016)),
            ("1y", Duration::from_secs(31_557_600)),
            ("3 seconds", ms(3000)),
            ("1hour 1minute", Duration::from_secs(3660)),
            ("1.5s", ms(1500)),
            ("0.25 ms", Duration::from_micros(250)),
            ("1.5h", Duration::from_secs(5400)),
            ("0.000000001s", Duration::from_nanos(1)),
        ] {
            assert_eq!(parse(text), Some(want), "{text:?}");
        }
    }

    #[test]
    fn refused_forms() {
        for text in [
            "",
            " ",
            "5",
            "s",
            "fast",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "1 s s",
            "1x",
            "1sx",
            "10mss",
            "99999999999999999999s",
            "600y",
            "1s,2s",
            "+1s",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
