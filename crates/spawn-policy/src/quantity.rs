//! Byte quantities (`512Mi`), CPU amounts (`500m`) and durations (`1h30m`).
//!
//! The parsers only check syntax and overflow; the ranges that make sense for a given field
//! (memory at least 4Mi, ...) are checked by `validate`. Internally they return the message
//! without a field name, so the caller can put the field (`spec.sandbox.resources.memory`) or
//! the flag (`--memory`) in front of it.

use std::time::Duration;

use crate::error::PolicyError;

pub(crate) const MI: u64 = 1 << 20;
pub(crate) const TI: u64 = 1 << 40;

/// Decimal places accepted in a fractional byte quantity (`1.5Gi`). More cannot change the
/// result of any sane quantity, and the cap keeps the arithmetic inside `u128`.
const MAX_FRACTION_DIGITS: usize = 9;

/// Digits accepted in the integer part of any number here: 20 digits hold `u64::MAX`, and
/// with the largest multiplier (2^60) the product still fits in `u128`.
const MAX_INTEGER_DIGITS: usize = 20;

/// Parses a byte quantity: a plain integer (`1048576`), a binary suffix (`Ki Mi Gi Ti Pi Ei`)
/// or a decimal one (`k M G T P E`), optionally with a fraction (`1.5Gi`, rounded up to a
/// whole byte).
pub fn parse_bytes(s: &str) -> Result<u64, PolicyError> {
    bytes(s).map_err(|message| PolicyError::Value { message })
}

/// Parses a CPU amount into thousandths of a CPU: `"1"` = 1000, `"0.5"` = 500, `"500m"` = 500.
pub fn parse_cpu_millis(s: &str) -> Result<u64, PolicyError> {
    cpu_millis(s).map_err(|message| PolicyError::Value { message })
}

/// Parses a duration made of whole numbers with units `d h m s ms`, largest first:
/// `"30s"`, `"5m"`, `"1h30m"`, `"500ms"`, `"2d"`.
pub fn parse_duration(s: &str) -> Result<Duration, PolicyError> {
    duration(s).map_err(|message| PolicyError::Value { message })
}

/// A number split into its parts: `"1.5Gi"` → (`"1"`, `Some("5")`, `"Gi"`).
struct Number<'a> {
    integer: &'a str,
    fraction: Option<&'a str>,
    suffix: &'a str,
}

fn split_number(s: &str) -> Option<Number<'_>> {
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let integer = &s[..int_end];
    if integer.is_empty() {
        return None;
    }
    let rest = &s[int_end..];
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let frac_end = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            if frac_end == 0 {
                return None;
            }
            (Some(&after_dot[..frac_end]), &after_dot[frac_end..])
        }
        None => (None, rest),
    };
    Some(Number {
        integer,
        fraction,
        suffix,
    })
}

/// Parses ASCII digits into a `u128`, refusing more than [`MAX_INTEGER_DIGITS`] significant
/// digits. `None` means "too large".
fn parse_digits(digits: &str) -> Option<u128> {
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_INTEGER_DIGITS {
        return None;
    }
    if significant.is_empty() {
        return Some(0);
    }
    significant.parse::<u128>().ok()
}

pub(crate) fn bytes(s: &str) -> Result<u64, String> {
    let not_a_quantity = || format!("{s:?} is not a quantity (use e.g. 512Mi or 1Gi)");
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative; a quantity must be positive"));
    }
    let number = split_number(s).ok_or_else(not_a_quantity)?;
    let multiplier: u128 = match number.suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return Err(not_a_quantity()),
    };
    let too_large = || format!("{s:?} is too large");
    let integer = parse_digits(number.integer).ok_or_else(too_large)?;
    let mut total = integer.checked_mul(multiplier).ok_or_else(too_large)?;
    if let Some(fraction) = number.fraction {
        if number.suffix.is_empty() {
            return Err(format!(
                "{s:?} is not a quantity (a number of bytes is whole; use e.g. 1.5Gi or 1536Mi)"
            ));
        }
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(format!(
                "{s:?} has more than {MAX_FRACTION_DIGITS} decimal places"
            ));
        }
        let numerator = fraction
            .parse::<u128>()
            .map_err(|_| not_a_quantity())?
            .checked_mul(multiplier)
            .ok_or_else(too_large)?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| too_large())?);
        total = total
            .checked_add(numerator.div_ceil(denominator))
            .ok_or_else(too_large)?;
    }
    u64::try_from(total).map_err(|_| too_large())
}

pub(crate) fn cpu_millis(s: &str) -> Result<u64, String> {
    let not_cpu = || format!("{s:?} is not a CPU amount (use e.g. 0.5, 2 or 500m)");
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative; a CPU amount must be positive"));
    }
    let number = split_number(s).ok_or_else(not_cpu)?;
    let too_large = || format!("{s:?} is too large");
    let integer = parse_digits(number.integer).ok_or_else(too_large)?;
    let millis: u128 = match (number.suffix, number.fraction) {
        ("m", None) => integer,
        ("", None) => integer.checked_mul(1000).ok_or_else(too_large)?,
        ("", Some(fraction)) => {
            if fraction.len() > 3 {
                return Err(format!(
                    "{s:?} is finer than a thousandth of a CPU (use at most 3 decimal places, or e.g. 500m)"
                ));
            }
            let mut padded = fraction.to_owned();
            while padded.len() < 3 {
                padded.push('0');
            }
            let thousandths: u128 = padded.parse().map_err(|_| not_cpu())?;
            integer
                .checked_mul(1000)
                .and_then(|whole| whole.checked_add(thousandths))
                .ok_or_else(too_large)?
        }
        _ => return Err(not_cpu()),
    };
    u64::try_from(millis).map_err(|_| too_large())
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let not_duration = || format!("{s:?} is not a duration (use e.g. 30s, 5m or 1h30m)");
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative; a duration must be positive"));
    }
    if s.is_empty() {
        return Err(not_duration());
    }
    let too_large = || format!("{s:?} is too large");
    let mut rest = s;
    let mut total_ms: u128 = 0;
    // Rank of the previous unit; each unit must be smaller than the one before it.
    let mut previous_rank = usize::MAX;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(not_duration());
        }
        let value = parse_digits(&rest[..digits_end]).ok_or_else(too_large)?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let (rank, unit_ms): (usize, u128) = match &rest[..unit_end] {
            "d" => (4, 86_400_000),
            "h" => (3, 3_600_000),
            "m" => (2, 60_000),
            "s" => (1, 1_000),
            "ms" => (0, 1),
            "" if rest.starts_with('.') => {
                return Err(format!(
                    "{s:?} is not a duration (use whole numbers, e.g. 1m30s or 1500ms)"
                ))
            }
            "" => {
                return Err(format!(
                    "{s:?} is not a duration (a unit is missing: use e.g. 30s, 5m or 1h30m)"
                ))
            }
            _ => return Err(not_duration()),
        };
        if rank >= previous_rank {
            return Err(format!(
                "{s:?} is not a duration (give each unit once, largest first, e.g. 1h30m)"
            ));
        }
        previous_rank = rank;
        rest = &rest[unit_end..];
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_large)?;
    }
    let total_ms = u64::try_from(total_ms).map_err(|_| too_large())?;
    Ok(Duration::from_millis(total_ms))
}

/// Formats a byte count with the largest binary suffix that divides it: `4194304` → `4Mi`.
pub(crate) fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if n != 0 && n.is_multiple_of(size) {
            return format!("{}{suffix}", n / size);
        }
    }
    n.to_string()
}

/// Formats a duration in the manifest's own syntax: `5400s` → `1h30m`.
pub(crate) fn format_duration(d: Duration) -> String {
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (suffix, size) in UNITS {
        if ms >= size {
            out.push_str(&format!("{}{suffix}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn bytes_table() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1", 1),
            ("1048576", 1 << 20),
            ("512Mi", 512 << 20),
            ("1Gi", 1 << 30),
            ("100M", 100_000_000),
            ("1k", 1000),
            ("2Ki", 2048),
            ("1Ti", 1 << 40),
            ("1Pi", 1 << 50),
            ("15Ei", 15 << 60),
            ("1E", 1_000_000_000_000_000_000),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
            ("0.1Ki", 103), // 102.4 rounded up
            ("0001Mi", 1 << 20),
            ("18446744073709551615", u64::MAX),
        ];
        for (input, want) in ok {
            assert_eq!(bytes(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn bytes_rejects() {
        let bad: &[(&str, &str)] = &[
            ("", "is not a quantity"),
            (
                "512Mx",
                "\"512Mx\" is not a quantity (use e.g. 512Mi or 1Gi)",
            ),
            ("512mi", "is not a quantity"),
            ("1K", "is not a quantity"),
            ("Mi", "is not a quantity"),
            ("1.Gi", "is not a quantity"),
            (".5Gi", "is not a quantity"),
            ("1.2.3Gi", "is not a quantity"),
            ("1e3", "is not a quantity"),
            (" 1Gi", "is not a quantity"),
            ("1Gi ", "is not a quantity"),
            ("+1Gi", "is not a quantity"),
            ("1.5", "a number of bytes is whole"),
            ("-1Gi", "is negative"),
            ("16Ei", "is too large"),
            ("18446744073709551616", "is too large"),
            ("99999999999999999999Ei", "is too large"),
            ("999999999999999999999999999999999999999999", "is too large"),
            ("1.0000000001Gi", "decimal places"),
            ("１Gi", "is not a quantity"),
        ];
        for (input, want) in bad {
            let err = bytes(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn cpu_table() {
        let ok: &[(&str, u64)] = &[
            ("1", 1000),
            ("2", 2000),
            ("0.5", 500),
            ("0.25", 250),
            ("1.125", 1125),
            ("500m", 500),
            ("1m", 1),
            ("0", 0),
            ("1024", 1_024_000),
        ];
        for (input, want) in ok {
            assert_eq!(cpu_millis(input), Ok(*want), "{input}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "is not a CPU amount"),
            ("one", "is not a CPU amount"),
            ("0.5m", "is not a CPU amount"),
            ("1.5.5", "is not a CPU amount"),
            ("2cpu", "is not a CPU amount"),
            ("0.0005", "finer than a thousandth"),
            ("-1", "is negative"),
            ("99999999999999999999", "is too large"),
            ("999999999999999999999999", "is too large"),
        ];
        for (input, want) in bad {
            let err = cpu_millis(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn duration_table() {
        let ok: &[(&str, u64)] = &[
            ("5m", 300_000),
            ("30s", 30_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
            ("90s", 90_000),
        ];
        for (input, want) in ok {
            assert_eq!(duration(input), Ok(Duration::from_millis(*want)), "{input}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "is not a duration"),
            ("30", "a unit is missing"),
            ("5x", "is not a duration"),
            ("m", "is not a duration"),
            ("1.5h", "whole numbers"),
            ("30m1h", "largest first"),
            ("1m1m", "largest first"),
            ("1h 30m", "is not a duration"),
            ("-5m", "is negative"),
            ("5M", "is not a duration"),
            ("99999999999999999999d", "is too large"),
            ("9999999999999999999999999999d", "is too large"),
        ];
        for (input, want) in bad {
            let err = duration(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn public_wrappers_return_value_errors() {
        assert_eq!(parse_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_cpu_millis("500m").unwrap(), 500);
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        let err = parse_bytes("lots").unwrap_err();
        assert!(matches!(err, PolicyError::Value { .. }));
        assert_eq!(
            err.to_string(),
            "\"lots\" is not a quantity (use e.g. 512Mi or 1Gi)"
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(4 * MI), "4Mi");
        assert_eq!(format_bytes(TI), "1Ti");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
