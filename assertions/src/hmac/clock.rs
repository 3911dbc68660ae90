//! Time for `require_hmac`: the clock (a trait, so tests can move it), the date forms
//! signed requests carry (X-Amz-Date `20150830T123600Z`, HTTP dates, RFC 3339, epoch
//! seconds), and the window a request's time must fall in (clock skew, presigned expiry).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;

use crate::verdict::Rejection;

/// The time source, so tests can move it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that stays where it is put.
#[derive(Debug, Default)]
pub struct FixedClock(pub AtomicU64);

impl FixedClock {
    #[must_use]
    pub fn at(secs: u64) -> Self {
        FixedClock(AtomicU64::new(secs))
    }

    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `20150830T123600Z` (the X-Amz-Date form) as seconds since the epoch.
#[must_use]
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16
        || bytes[8] != b'T'
        || bytes[15] != b'Z'
        || !bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit)
    {
        return None;
    }
    // Digits only from here: plain arithmetic, no string building on the request path.
    let number = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'))
    };
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    let (hour, minute, second) = (number(9..11), number(11..13), number(13..15));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of 1970 or later (the proleptic Gregorian calendar).
///
/// Howard Hinnant's `days_from_civil`; the short names are his and the algorithm's.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Years start in March so the leap day is the last day of the year.
    let march_year = if month <= 2 { year - 1 } else { year };
    let era = march_year / 400;
    let year_of_era = march_year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `Sun, 30 Aug 2015 12:36:00 GMT` (an HTTP date) as seconds since the epoch.
#[must_use]
pub fn parse_http_date(text: &str) -> Option<u64> {
    epoch_seconds(httpdate::parse_http_date(text.trim()).ok()?)
}

/// Any date a custom scheme may send: X-Amz-Date form, RFC 3339, an HTTP date, or epoch seconds.
#[must_use]
pub fn parse_any_date(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    parse_amz_date(text)
        .or_else(|| {
            humantime::parse_rfc3339_weak(text)
                .ok()
                .and_then(epoch_seconds)
        })
        .or_else(|| parse_http_date(text))
}

fn epoch_seconds(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Checks a signed request's own time against `now`, and returns until when its
/// signature must be remembered for replay protection.
///
/// Without `expires` (header forms) the time must be within `max_skew` of ours either
/// way. With it (presigned forms) the request may not be dated more than `max_skew` in
/// the future and is good until `time + expires`.
pub(crate) fn check_request_time(
    time: u64,
    expires: Option<u64>,
    now: u64,
    max_skew: Duration,
) -> Result<u64, Rejection> {
    let skew = max_skew.as_secs();
    match expires {
        Some(expires) => {
            if time > now + skew {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "RequestTimeTooSkewed",
                    "the signed request is dated in the future",
                ));
            }
            if now > time + expires {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "RequestExpired",
                    "the presigned request has expired",
                ));
            }
            Ok(time + expires)
        }
        None => {
            if time.abs_diff(now) > skew {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "RequestTimeTooSkewed",
                    format!(
                        "the request time differs from the gateway's by more than {skew} seconds"
                    ),
                ));
            }
            Ok(time + skew)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_match_an_rfc3339_parser_and_impossible_dates_are_refused() {
        // Every 7 hours 13 minutes 17 seconds from 1970 to past 2100 (leap years, month ends).
        let mut t: u64 = 0;
        while t < 4_200_000_000 {
            let stamp =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string();
            let amz: String = stamp
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            assert_eq!(parse_amz_date(&amz), Some(t), "{amz}");
            t += 7 * 3600 + 13 * 60 + 17;
        }
        for bad in [
            "20150230T000000Z",
            "20150431T000000Z",
            "20190229T000000Z",
            "20151301T000000Z",
            "20150100T000000Z",
            "20150101T240000Z",
            "20150101T006000Z",
            "19691231T235959Z",
            "2015010T1000000Z",
            "20150101T000000X",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        assert_eq!(parse_amz_date("20200229T120000Z"), Some(1_582_977_600));
    }

    #[test]
    fn every_date_form_parses() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(1_440_938_160)
        );
        assert_eq!(parse_any_date("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(parse_any_date("1440938160"), Some(1_440_938_160));
        assert_eq!(parse_any_date("yesterday"), None);
    }

    #[test]
    fn header_forms_must_be_within_the_skew_either_way() {
        let skew = Duration::from_secs(300);
        let now = 1_700_000_000;
        assert_eq!(check_request_time(now - 300, None, now, skew), Ok(now));
        assert_eq!(
            check_request_time(now + 300, None, now, skew),
            Ok(now + 600)
        );
        for time in [now - 301, now + 301] {
            let refused = check_request_time(time, None, now, skew).expect_err("skewed");
            assert_eq!(refused.code, "RequestTimeTooSkewed");
        }
    }

    #[test]
    fn presigned_forms_expire_and_may_not_be_dated_ahead() {
        let skew = Duration::from_secs(300);
        let now = 1_700_000_000;
        let signed = now - 3600;
        assert_eq!(check_request_time(signed, Some(3600), now, skew), Ok(now));
        let expired = check_request_time(signed, Some(3599), now, skew).expect_err("expired");
        assert_eq!(expired.code, "RequestExpired");
        let ahead = check_request_time(now + 301, Some(60), now, skew).expect_err("future");
        assert_eq!(ahead.code, "RequestTimeTooSkewed");
    }
}
