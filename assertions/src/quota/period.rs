//! Quota periods: when a window that starts now ends, on the calendar of a stated time zone
//! (midnight, the first of the month, across daylight-saving changes) or rolling from the
//! first call.

use std::time::Duration;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// How long a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    /// Weeks start on Monday (ISO 8601).
    Week,
    Month,
}

impl Period {
    /// The nominal length, for `RateLimit-Policy`'s window and rolling quotas (a month
    /// rolls over 30 days).
    #[must_use]
    pub fn nominal(self) -> Duration {
        Duration::from_secs(match self {
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Week => 7 * 86_400,
            Period::Month => 30 * 86_400,
        })
    }
}

/// When the window restarts.
#[derive(Debug, Clone, PartialEq)]
pub enum Reset {
    /// At the period's calendar boundary in this zone (UTC by default).
    Calendar(TimeZone),
    /// One nominal period after the call that opened the window.
    Rolling,
}

/// A zone by IANA name (`Europe/Paris`) or `UTC`; the zone data is built in, so a machine
/// without tzdata reads it the same.
///
/// # Errors
/// An unknown name.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    jiff::tz::db().get(name).map_err(|_| {
        format!("\"{name}\" is not a time zone (an IANA name such as Europe/Paris, or UTC)")
    })
}

/// The end (Unix seconds) of a window that would start at `now` (Unix seconds).
#[must_use]
pub fn window_end(period: Period, reset: &Reset, now: i64) -> i64 {
    let nominal = i64::try_from(period.nominal().as_secs()).unwrap_or(i64::MAX);
    let Reset::Calendar(zone) = reset else {
        return now.saturating_add(nominal);
    };
    calendar_end(period, zone, now).unwrap_or_else(|| now.saturating_add(nominal))
}

fn calendar_end(period: Period, zone: &TimeZone, now: i64) -> Option<i64> {
    let here: Zoned = Timestamp::from_second(now).ok()?.to_zoned(zone.clone());
    let start_of_day = here.start_of_day().ok()?;
    let next = match period {
        Period::Hour => {
            let hour_start = here
                .with()
                .minute(0)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .ok()?;
            let end = hour_start.checked_add(1.hour()).ok()?;
            if end.timestamp().as_second() > now {
                end
            } else {
                // The hour shown now started at another offset and already ended: after a
                // half-hour change back (Lord Howe), 01:45 at +10:30 is read in the hour
                // 01:00 that only exists at +11. The hour ends at the next whole hour of
                // the wall clock at the offset in force now.
                let offset = i64::from(here.offset().seconds());
                let local = now.checked_add(offset)?;
                let end = local - local.rem_euclid(3600) + 3600 - offset;
                return Some(end);
            }
        }
        Period::Day => start_of_day.tomorrow().ok()?.start_of_day().ok()?,
        Period::Week => {
            let days_to_monday = 7 - i64::from(here.weekday().to_monday_zero_offset());
            let monday = start_of_day
                .date()
                .checked_add(days_to_monday.days())
                .ok()?;
            debug_assert_eq!(monday.weekday(), Weekday::Monday);
            monday.to_zoned(zone.clone()).ok()?.start_of_day().ok()?
        }
        Period::Month => {
            let first = here.date().first_of_month().checked_add(1.month()).ok()?;
            first.to_zoned(zone.clone()).ok()?.start_of_day().ok()?
        }
    };
    // A window always ends after now (else every call would open a fresh one).
    Some(next.timestamp().as_second()).filter(|end| *end > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().expect("timestamp").as_second()
    }

    fn paris() -> Reset {
        Reset::Calendar(time_zone("Europe/Paris").expect("zone"))
    }

    #[test]
    fn calendar_windows_end_at_the_next_boundary_in_utc() {
        let utc = Reset::Calendar(TimeZone::UTC);
        let now = at("2026-12-02T14:35:10Z");
        assert_eq!(
            window_end(Period::Hour, &utc, now),
            at("2026-12-02T15:00:00Z")
        );
        assert_eq!(
            window_end(Period::Day, &utc, now),
            at("2026-12-03T00:00:00Z")
        );
        assert_eq!(
            window_end(Period::Week, &utc, now),
            at("2026-12-07T00:00:00Z"),
            "Monday"
        );
        assert_eq!(
            window_end(Period::Month, &utc, now),
            at("2027-01-01T00:00:00Z")
        );
        // Exactly at a boundary, the window is the one that starts there.
        let midnight = at("2026-12-03T00:00:00Z");
        assert_eq!(
            window_end(Period::Day, &utc, midnight),
            at("2026-12-04T00:00:00Z")
        );
        assert_eq!(
            window_end(Period::Week, &utc, at("2026-12-07T00:00:00Z")),
            at("2026-12-14T00:00:00Z")
        );
    }

    #[test]
    fn a_zone_moves_midnight_and_daylight_saving_is_followed() {
        // 23:30 UTC on 2 Dec is 00:30 on 3 Dec in Paris: the day ends at 23:00 UTC on 3 Dec.
        let now = at("2026-12-02T23:30:00Z");
        assert_eq!(
            window_end(Period::Day, &paris(), now),
            at("2026-12-03T23:00:00Z")
        );
        // 29 March 2026: Paris moves to summer time; that day has 23 hours.
        let spring = at("2026-03-28T23:30:00Z"); // 00:30 on the 29th, winter time
        assert_eq!(
            window_end(Period::Day, &paris(), spring),
            at("2026-03-29T22:00:00Z")
        );
        // A month in Paris starts at local midnight on the first.
        assert_eq!(
            window_end(Period::Month, &paris(), now),
            at("2026-12-31T23:00:00Z")
        );
    }

    #[test]
    fn a_window_always_ends_after_now_even_across_a_half_hour_daylight_saving_change() {
        // Lord Howe Island moves its clocks by 30 minutes: on 5 April 2026 at 02:00 (+11) it
        // goes back to 01:30 (+10:30), so 01:30 to 02:00 happens twice. In the second pass
        // the hour "01:00" only exists at +11, an hour that ended at 15:00 UTC; a window
        // ending there, before now, would start afresh on every call.
        let lord_howe = Reset::Calendar(time_zone("Australia/Lord_Howe").expect("zone"));
        let second_pass = at("2026-04-04T15:15:00Z"); // 01:45 at +10:30
        let end = window_end(Period::Hour, &lord_howe, second_pass);
        assert!(
            end > second_pass,
            "the window ended {} s ago",
            second_pass - end
        );
        assert_eq!(end, at("2026-04-04T15:30:00Z"), "02:00 at +10:30");
        // Every minute of the days around each change, in zones with odd changes.
        for zone in [
            "Australia/Lord_Howe",
            "Europe/Paris",
            "America/Santiago",
            "Asia/Tehran",
        ] {
            let reset = Reset::Calendar(time_zone(zone).expect("zone"));
            for start in [
                at("2026-04-03T00:00:00Z"),
                at("2026-10-02T00:00:00Z"),
                at("2026-03-27T00:00:00Z"),
                at("2026-10-23T00:00:00Z"),
            ] {
                for minute in 0..(4 * 24 * 60) {
                    let now = start + minute * 60;
                    for period in [Period::Hour, Period::Day, Period::Week, Period::Month] {
                        let end = window_end(period, &reset, now);
                        assert!(end > now, "{zone} {period:?} at {now}: ends at {end}");
                    }
                }
            }
        }
    }

    #[test]
    fn rolling_windows_last_one_nominal_period_from_the_first_call() {
        let now = at("2026-12-02T14:35:10Z");
        assert_eq!(window_end(Period::Day, &Reset::Rolling, now), now + 86_400);
        assert_eq!(
            window_end(Period::Month, &Reset::Rolling, now),
            now + 30 * 86_400
        );
    }

    #[test]
    fn zones_are_iana_names_or_utc() {
        assert!(time_zone("UTC").is_ok());
        assert!(time_zone("utc").is_ok());
        assert!(time_zone("America/New_York").is_ok());
        let error = time_zone("Mars/Olympus").expect_err("unknown");
        assert!(error.contains("IANA"), "{error}");
    }
}
