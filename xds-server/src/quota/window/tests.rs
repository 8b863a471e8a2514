use chrono_tz::{America, Asia, Europe, UTC};

use super::*;

/// Unix seconds of a UTC date and time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, mi, s))
        .unwrap()
        .and_utc()
        .timestamp()
}

#[test]
fn windows() {
    let cases: &[(&str, Unit, Tz, i64, i64, i64)] = &[
        // Fixed windows, aligned to the epoch.
        (
            "second",
            Unit::Second,
            UTC,
            1_800_000_123,
            1_800_000_123,
            1_800_000_124,
        ),
        (
            "minute",
            Unit::Minute,
            UTC,
            utc(2026, 1, 1, 0, 0, 59),
            utc(2026, 1, 1, 0, 0, 0),
            utc(2026, 1, 1, 0, 1, 0),
        ),
        (
            "hour",
            Unit::Hour,
            UTC,
            utc(2026, 7, 4, 13, 59, 59),
            utc(2026, 7, 4, 13, 0, 0),
            utc(2026, 7, 4, 14, 0, 0),
        ),
        (
            "hours stay epoch-aligned in a half-hour time zone",
            Unit::Hour,
            Asia::Kolkata,
            utc(2026, 7, 4, 13, 45, 0),
            utc(2026, 7, 4, 13, 0, 0),
            utc(2026, 7, 4, 14, 0, 0),
        ),
        // Calendar windows in UTC.
        (
            "day, last second",
            Unit::Day,
            UTC,
            utc(2026, 5, 17, 23, 59, 59),
            utc(2026, 5, 17, 0, 0, 0),
            utc(2026, 5, 18, 0, 0, 0),
        ),
        (
            "day, first second",
            Unit::Day,
            UTC,
            utc(2026, 5, 18, 0, 0, 0),
            utc(2026, 5, 18, 0, 0, 0),
            utc(2026, 5, 19, 0, 0, 0),
        ),
        (
            "ISO week across a new year (2026-01-01 is a Thursday)",
            Unit::Week,
            UTC,
            utc(2026, 1, 1, 12, 0, 0),
            utc(2025, 12, 29, 0, 0, 0),
            utc(2026, 1, 5, 0, 0, 0),
        ),
        (
            "week from its Monday",
            Unit::Week,
            UTC,
            utc(2026, 1, 5, 0, 0, 0),
            utc(2026, 1, 5, 0, 0, 0),
            utc(2026, 1, 12, 0, 0, 0),
        ),
        (
            "a calendar month, not 30 days",
            Unit::Month,
            UTC,
            utc(2026, 2, 15, 8, 0, 0),
            utc(2026, 2, 1, 0, 0, 0),
            utc(2026, 3, 1, 0, 0, 0),
        ),
        (
            "December ends in the next year",
            Unit::Month,
            UTC,
            utc(2026, 12, 31, 23, 59, 59),
            utc(2026, 12, 1, 0, 0, 0),
            utc(2027, 1, 1, 0, 0, 0),
        ),
        (
            "leap February",
            Unit::Month,
            UTC,
            utc(2028, 2, 29, 12, 0, 0),
            utc(2028, 2, 1, 0, 0, 0),
            utc(2028, 3, 1, 0, 0, 0),
        ),
        (
            "year",
            Unit::Year,
            UTC,
            utc(2026, 12, 31, 23, 59, 59),
            utc(2026, 1, 1, 0, 0, 0),
            utc(2027, 1, 1, 0, 0, 0),
        ),
        (
            "year, first second",
            Unit::Year,
            UTC,
            utc(2027, 1, 1, 0, 0, 0),
            utc(2027, 1, 1, 0, 0, 0),
            utc(2028, 1, 1, 0, 0, 0),
        ),
        // Europe/Berlin: CET (+1) in winter, CEST (+2) in summer.
        (
            "Berlin day when clocks go forward lasts 23 hours",
            Unit::Day,
            Europe::Berlin,
            utc(2026, 3, 29, 10, 0, 0),
            utc(2026, 3, 28, 23, 0, 0),
            utc(2026, 3, 29, 22, 0, 0),
        ),
        (
            "Berlin day when clocks go back lasts 25 hours",
            Unit::Day,
            Europe::Berlin,
            utc(2026, 10, 25, 12, 0, 0),
            utc(2026, 10, 24, 22, 0, 0),
            utc(2026, 10, 25, 23, 0, 0),
        ),
        (
            "Berlin: 23:30 UTC on the last day of February is already March",
            Unit::Month,
            Europe::Berlin,
            utc(2026, 2, 28, 23, 30, 0),
            utc(2026, 2, 28, 23, 0, 0),
            utc(2026, 3, 31, 22, 0, 0),
        ),
        (
            "Berlin: 22:30 UTC on 28 February is still February",
            Unit::Month,
            Europe::Berlin,
            utc(2026, 2, 28, 22, 30, 0),
            utc(2026, 1, 31, 23, 0, 0),
            utc(2026, 2, 28, 23, 0, 0),
        ),
        (
            "Berlin: the new year starts an hour before UTC's",
            Unit::Year,
            Europe::Berlin,
            utc(2026, 12, 31, 23, 30, 0),
            utc(2026, 12, 31, 23, 0, 0),
            utc(2027, 12, 31, 23, 0, 0),
        ),
        (
            "Berlin week containing the spring change",
            Unit::Week,
            Europe::Berlin,
            utc(2026, 3, 29, 10, 0, 0),
            utc(2026, 3, 22, 23, 0, 0),
            utc(2026, 3, 29, 22, 0, 0),
        ),
        // Midnight that does not exist, and midnight that happens twice.
        (
            "Santiago: 2026-09-06 starts at 01:00 (no midnight)",
            Unit::Day,
            America::Santiago,
            utc(2026, 9, 6, 12, 0, 0),
            utc(2026, 9, 6, 4, 0, 0),
            utc(2026, 9, 7, 3, 0, 0),
        ),
        (
            "Havana: the first of two midnights starts 2026-11-01",
            Unit::Day,
            America::Havana,
            utc(2026, 11, 1, 12, 0, 0),
            utc(2026, 11, 1, 4, 0, 0),
            utc(2026, 11, 2, 5, 0, 0),
        ),
    ];
    for (what, unit, tz, at, start, end) in cases {
        assert_eq!(
            window(*unit, *at, *tz),
            Window {
                start: *start,
                end: *end
            },
            "{what}"
        );
    }
}

#[test]
fn instants_outside_the_calendar_are_clamped() {
    assert_eq!(
        window(Unit::Day, -5, UTC),
        Window {
            start: 0,
            end: 86_400
        }
    );
    let last = window(Unit::Year, i64::MAX, UTC);
    assert_eq!(last.start, utc(9999, 1, 1, 0, 0, 0));
    assert!(last.end > last.start);
}

#[test]
fn local_dates_follow_the_time_zone() {
    let at = utc(2026, 6, 30, 22, 30, 0);
    assert_eq!(format_day(local_date(at, UTC)), "2026-06-30");
    assert_eq!(format_day(local_date(at, Europe::Berlin)), "2026-07-01");
    assert_eq!(format_day(local_date(at, America::Santiago)), "2026-06-30");
}

#[test]
fn days_parse_strictly() {
    assert_eq!(
        parse_day("2026-02-28"),
        NaiveDate::from_ymd_opt(2026, 2, 28)
    );
    for bad in [
        "2026-02-30",
        "2026-2-28",
        "2026/02/28",
        "20260228",
        "2026-02-28T00",
        "+026-02-28",
        "",
    ] {
        assert_eq!(parse_day(bad), None, "{bad}");
    }
    let date = NaiveDate::from_ymd_opt(987, 3, 4).unwrap();
    assert_eq!(format_day(date), "0987-03-04");
    assert_eq!(parse_day(&format_day(date)), Some(date));
}

#[test]
fn units_round_trip_and_map_to_envoys_numbers() {
    for unit in Unit::ALL {
        assert_eq!(Unit::from_name(unit.name()), Some(unit));
    }
    assert_eq!(Unit::from_name("fortnight"), None);
    let numbers: Vec<i32> = Unit::ALL.iter().map(|u| u.proto()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 7, 5, 6]);
}

#[test]
fn window_labels_round_trip_and_only_name_window_starts() {
    let minute = window(Unit::Minute, 1_800_000_030, UTC);
    assert_eq!(
        window_label(Unit::Minute, minute.start),
        "minute/1800000000"
    );
    assert_eq!(
        parse_window_label("minute/1800000000", UTC),
        Some((Unit::Minute, minute))
    );
    // A Berlin month starts at local midnight, not at UTC midnight.
    let march = utc(2026, 2, 28, 23, 0, 0);
    assert_eq!(
        parse_window_label(&format!("month/{march}"), Europe::Berlin),
        Some((
            Unit::Month,
            Window {
                start: march,
                end: utc(2026, 3, 31, 22, 0, 0)
            }
        ))
    );
    assert_eq!(parse_window_label(&format!("month/{march}"), UTC), None);
    for bad in [
        "",
        "minute",
        "minute/",
        "fortnight/1800000000",
        "Minute/1800000000",
        // Not the start of its minute.
        "minute/1800000030",
        "minute/+1800000000",
        "minute/01800000000",
        "minute/1800000000/1",
        "minute/-60",
        "minute/99999999999999999999",
        "day/1800000000",
    ] {
        assert_eq!(parse_window_label(bad, UTC), None, "{bad}");
    }
}
