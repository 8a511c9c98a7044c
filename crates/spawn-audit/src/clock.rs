//! Timestamps: RFC 3339, UTC, millisecond precision.

use time::OffsetDateTime;

/// The current time as RFC 3339 UTC with milliseconds, e.g. `"2026-01-15T10:30:00.123Z"`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// The time `ago` before now, in the log's timestamp form: records at or after it sort
/// at or after it (the form has a fixed width).
pub fn rfc3339_ago(ago: std::time::Duration) -> String {
    let ago = time::Duration::try_from(ago).unwrap_or(time::Duration::MAX);
    format_rfc3339(
        OffsetDateTime::now_utc()
            .checked_sub(ago)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

/// Formats by hand rather than with `time`'s formatter so that it cannot fail.
pub(crate) fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Whether `s` is exactly what [`now_rfc3339`] produces, for a valid date and time.
#[cfg(test)]
pub(crate) fn is_rfc3339_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let shape = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z';
    let parts = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
        num(20..23),
    );
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec), Some(ms)) = parts else {
        return false;
    };
    let (Ok(y), Ok(mo), Ok(d), Ok(h), Ok(mi), Ok(sec), Ok(ms)) = (
        i32::try_from(y),
        u8::try_from(mo),
        u8::try_from(d),
        u8::try_from(h),
        u8::try_from(mi),
        u8::try_from(sec),
        u16::try_from(ms),
    ) else {
        return false;
    };
    shape
        && time::Month::try_from(mo)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(y, m, d).ok())
            .is_some()
        && time::Time::from_hms_milli(h, mi, sec, ms).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(
            format_rfc3339(datetime!(2026-01-15 10:30:00.123456 UTC)),
            "2026-01-15T10:30:00.123Z"
        );
        assert_eq!(
            format_rfc3339(datetime!(2026-01-15 12:30:00 +02:00)),
            "2026-01-15T10:30:00.000Z"
        );
    }

    #[test]
    fn now_has_the_shape() {
        let now = now_rfc3339();
        assert!(is_rfc3339_utc_millis(&now), "{now}");
        assert!(!is_rfc3339_utc_millis("2026-02-30T10:30:00.123Z"));
        assert!(!is_rfc3339_utc_millis("2026-01-15T10:30:00Z"));
    }
}
