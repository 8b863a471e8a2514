//! Which counting window an instant falls in. Second, minute and hour windows are fixed and
//! aligned to the Unix epoch (as in envoyproxy/ratelimit); day, week (ISO, from Monday), month
//! and year windows are calendar periods in the configured time zone, so a monthly budget
//! resets at the start of the calendar month (not every 30 days) and a day lasts 23 or 25
//! hours across a daylight saving change. Pure: the instant is always passed in.

use chrono::{DateTime, Datelike, LocalResult, Months, NaiveDate, NaiveTime, TimeDelta, TimeZone};
use chrono_tz::Tz;

/// The unit of a limit: the length of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The name used in the YAML file and in counter keys.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|u| u.name() == name)
    }

    /// `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit` (week is 7, after year).
    pub fn proto(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
            Unit::Year => 6,
            Unit::Week => 7,
        }
    }

    /// Length of a fixed window, in seconds; `None` for calendar units.
    fn fixed_seconds(self) -> Option<i64> {
        match self {
            Unit::Second => Some(1),
            Unit::Minute => Some(60),
            Unit::Hour => Some(3600),
            _ => None,
        }
    }
}

/// A window `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// Instants outside 1970-01-01..9999-12-31 are clamped into it (a clock that far off cannot
/// count anything sensibly, and chrono's range is bounded).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The window of `unit` that contains `at` (Unix seconds).
pub fn window(unit: Unit, at: i64, tz: Tz) -> Window {
    let at = at.clamp(0, MAX_UNIX_SECONDS);
    if let Some(length) = unit.fixed_seconds() {
        let start = at - at.rem_euclid(length);
        return Window {
            start,
            end: start + length,
        };
    }
    let today = local_date(at, tz);
    let (first, next) = match unit {
        Unit::Day => (today, today.succ_opt()),
        Unit::Week => {
            let monday = today - TimeDelta::days(i64::from(today.weekday().num_days_from_monday()));
            (monday, monday.checked_add_signed(TimeDelta::days(7)))
        }
        Unit::Month => {
            let first = today.with_day(1).unwrap_or(today);
            (first, first.checked_add_months(Months::new(1)))
        }
        _ => {
            let first = NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today);
            (first, first.checked_add_months(Months::new(12)))
        }
    };
    let start = local_midnight(first, tz);
    // Only the very last representable day has no successor: end it a day later.
    let end = next.map_or(start + 86_400, |next| local_midnight(next, tz));
    Window { start, end }
}

/// How a decision names the window it charged: `UNIT/START` (`minute/1800000000`), the unit
/// as [`Unit::name`] and the window's first second (Unix seconds).
pub fn window_label(unit: Unit, start: i64) -> String {
    format!("{}/{start}", unit.name())
}

/// The window a [`window_label`] names, checked: a known unit, a start written as
/// [`window_label`] writes it, and the start of that unit's window that contains it (in `tz`).
/// `None` for anything else.
pub fn parse_window_label(label: &str, tz: Tz) -> Option<(Unit, Window)> {
    let (unit, start) = label.split_once('/')?;
    let unit = Unit::from_name(unit)?;
    let start: i64 = start.parse().ok()?;
    if window_label(unit, start) != label {
        return None;
    }
    let window = window(unit, start, tz);
    (window.start == start).then_some((unit, window))
}

/// The calendar date of `at` (Unix seconds) in `tz`.
pub fn local_date(at: i64, tz: Tz) -> NaiveDate {
    let at = at.clamp(0, MAX_UNIX_SECONDS);
    DateTime::from_timestamp(at, 0)
        .map(|utc| utc.with_timezone(&tz).date_naive())
        .unwrap_or_default()
}

/// The first instant of `date` in `tz`: local midnight, or when midnight does not exist
/// (a daylight saving gap at midnight), the first local time after it that does.
pub fn local_midnight(date: NaiveDate, tz: Tz) -> i64 {
    let mut local = date.and_time(NaiveTime::MIN);
    // Gaps are at most a few hours; quarter-hour steps meet every real transition.
    for _ in 0..=96 {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(at) => return at.timestamp(),
            LocalResult::Ambiguous(earliest, _) => return earliest.timestamp(),
            LocalResult::None => local += TimeDelta::minutes(15),
        }
    }
    date.and_time(NaiveTime::MIN).and_utc().timestamp()
}

/// `YYYY-MM-DD`.
pub fn format_day(date: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// Parses exactly `YYYY-MM-DD` (a real calendar date).
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let year = text[0..4].parse().ok()?;
    let month = text[5..7].parse().ok()?;
    let day = text[8..10].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

#[cfg(test)]
mod tests;
