//! `--time-budget DURATION`: whole hours, minutes and seconds written as `90s`, `20m`,
//! `1h30m` or `2h`, and durations printed the same way.

use std::time::Duration;

/// What `--time-budget` accepts, for error messages.
pub const DURATION_FORMAT: &str = "whole hours, minutes and seconds, largest first, e.g. 90s, 20m, 1h30m or 2h";

/// Parses `1h30m`, `20m`, `90s`, `2h5m30s` (each unit at most once, h before m before s).
/// A bare number is refused: minutes and seconds are both plausible.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let refuse = |why: &str| Err(format!("'{text}' is not a duration ({why}): give {DURATION_FORMAT}"));
    let mut seconds: u64 = 0;
    let mut number = String::new();
    // The units still allowed: each at most once, largest first.
    let mut units: &[(char, u64)] = &[('h', 3600), ('m', 60), ('s', 1)];
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let Some(at) = units.iter().position(|&(unit, _)| unit == c.to_ascii_lowercase()) else {
            return refuse(&if "hms".contains(c.to_ascii_lowercase()) {
                format!("'{c}' is repeated or after a smaller unit")
            } else {
                format!("'{c}' is not h, m or s")
            });
        };
        let Ok(count) = number.parse::<u64>() else {
            return refuse(&if number.is_empty() { format!("no number before '{c}'") } else { "too long".into() });
        };
        seconds = match count.checked_mul(units[at].1).and_then(|s| s.checked_add(seconds)) {
            Some(s) => s,
            None => return refuse("too long"),
        };
        number.clear();
        units = &units[at + 1..];
    }
    if !number.is_empty() {
        return refuse(&format!("{number} has no unit"));
    }
    if seconds == 0 {
        return refuse("it must be longer than 0");
    }
    Ok(Duration::from_secs(seconds))
}

/// `1h30m`, `20m`, `1m30s`: as `--time-budget` takes it.
pub fn written_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let parts = [(seconds / 3600, 'h'), (seconds / 60 % 60, 'm'), (seconds % 60, 's')];
    let written: String = parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
    if written.is_empty() {
        "0s".into()
    } else {
        written
    }
}

/// `4h 05m`, `12m 30s`, `45s`, `0.8s`: seconds as a person reads a duration.
pub fn format_duration(seconds: f64) -> String {
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let whole = seconds.round() as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_forms_users_write() {
        for (text, seconds) in
            [("90s", 90), ("20m", 1200), ("1h30m", 5400), ("2h", 7200), ("2h5m30s", 7530), ("5M", 300)]
        {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(seconds)), "{text}");
        }
    }

    #[test]
    fn malformed_durations_say_what_to_write() {
        for text in ["", "20", "m", "1.5h", "30m1h", "1h1h", "20 minutes", "0m", "-5m", "99999999999999999999h"] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(&format!("'{text}'")) && error.contains("e.g. 90s, 20m, 1h30m or 2h"), "{error}");
        }
    }

    #[test]
    fn durations_print_as_they_are_written() {
        for text in ["90s", "20m", "1h30m", "2h", "2h5m30s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&written_duration(d)), Ok(d), "{text}");
        }
        assert_eq!(written_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(0.84), "0.8s");
        assert_eq!(format_duration(45.4), "45s");
        assert_eq!(format_duration(750.0), "12m 30s");
        assert_eq!(format_duration(4.0 * 3600.0 + 5.0 * 60.0 + 20.0), "4h 05m");
    }
}
