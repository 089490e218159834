//! What an endpoint's rate-limit headers say, read in one place: how long a 429 asks the
//! caller to wait ([`retry_after`]), and the budget left ([`RateBudget`]) that OpenAI-style
//! and Anthropic APIs report on every answer, successful ones included.
//!
//! Formats: `Retry-After` (delta seconds or an HTTP date) and `retry-after-ms`; OpenAI's
//! `x-ratelimit-remaining-{requests,tokens}` with `x-ratelimit-reset-{requests,tokens}` as
//! Go-style durations (`1s`, `6m0s`, `20ms`, `1h2m3.5s`); Anthropic's
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}` with
//! RFC 3339 reset times. A malformed value is ignored, never an error: the headers are
//! advice, and a call that succeeded stays a success.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// One limit's state as the endpoint reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLine {
    /// What is left of the limit (requests or tokens).
    pub remaining: u64,
    /// When the limit is replenished, Unix ms (absolute, so the fleet can share it).
    pub reset_ms: u64,
}

/// The budget an endpoint reported left, per kind of limit; `None` for a limit it did not
/// report (or reported in a form that could not be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateBudget {
    /// Requests left, and when they reset.
    pub requests: Option<BudgetLine>,
    /// Tokens left, and when they reset.
    pub tokens: Option<BudgetLine>,
}

impl RateBudget {
    /// The budget the headers of an answer report at `now`, `None` when they report none.
    ///
    /// Anthropic reports several token limits (`tokens`, `input-tokens`, `output-tokens`);
    /// the one with the least left is kept, so a call is held back by whichever runs out
    /// first.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<RateBudget> {
        let now_ms = unix_ms(now);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let openai = |kind: &str| -> Option<BudgetLine> {
            let remaining = parse_count(header(&format!("x-ratelimit-remaining-{kind}"))?)?;
            let reset = parse_reset(header(&format!("x-ratelimit-reset-{kind}"))?)?;
            Some(BudgetLine {
                remaining,
                reset_ms: now_ms.saturating_add(duration_ms(reset)),
            })
        };
        let anthropic = |kind: &str| -> Option<BudgetLine> {
            let remaining = parse_count(header(&format!("anthropic-ratelimit-{kind}-remaining"))?)?;
            let reset = parse_rfc3339_ms(header(&format!("anthropic-ratelimit-{kind}-reset"))?)?;
            Some(BudgetLine {
                remaining,
                reset_ms: reset,
            })
        };
        let requests = openai("requests").or_else(|| anthropic("requests"));
        let tokens = openai("tokens").or_else(|| {
            ["tokens", "input-tokens", "output-tokens"]
                .into_iter()
                .filter_map(anthropic)
                .min_by_key(|l| l.remaining)
        });
        (requests.is_some() || tokens.is_some()).then_some(RateBudget { requests, tokens })
    }
}

/// `t` as Unix milliseconds (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A remaining count: a non-negative integer.
fn parse_count(value: &str) -> Option<u64> {
    value.parse::<u64>().ok()
}

/// How long a 429 asks the caller to wait.
///
/// Precedence: `retry-after-ms`, then `Retry-After` (delta seconds or an HTTP date, relative to
/// `now`), then the `x-ratelimit-reset-*` headers of OpenAI-style APIs — the ones whose
/// `x-ratelimit-remaining-*` is 0 when that says which limit was hit, else the longest.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    if let Some(v) = header("retry-after") {
        if let Some(d) = parse_retry_after(v, now) {
            return Some(d);
        }
    }
    let mut exhausted = Vec::new();
    let mut all = Vec::new();
    for (name, value) in headers {
        let Some(which) = name.as_str().strip_prefix("x-ratelimit-reset") else {
            continue;
        };
        let Some(d) = value.to_str().ok().and_then(parse_reset) else {
            continue;
        };
        all.push(d);
        let remaining = format!("x-ratelimit-remaining{which}");
        if header(&remaining) == Some("0") {
            exhausted.push(d);
        }
    }
    let pick = if exhausted.is_empty() { all } else { exhausted };
    pick.into_iter().max()
}

/// `Retry-After`: delta seconds (integer, or a decimal some servers send) or an HTTP date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "now".
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An `x-ratelimit-reset-*` value: Go-style durations (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) as
/// OpenAI sends them, or plain seconds.
fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

/// An RFC 3339 timestamp (`2024-10-22T19:47:46Z`, fractions and `±hh:mm` offsets allowed) as
/// Unix ms; `None` for anything else or a time before the epoch.
fn parse_rfc3339_ms(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // 60: a leap second.
    if second > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        // Milliseconds: the first three digits of the fraction.
        let frac = &value[start..at];
        let ms = format!("{:0<3}", &frac[..frac.len().min(3)]);
        millis = ms.parse().ok()?;
    }
    let offset_min = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if at + 6 == b.len() && sep(at + 3, b":") => {
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *c == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00Z
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]),
                now
            ),
            Some(Duration::from_secs(30))
        );
        // A date in the past: retry now.
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]),
                now
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[]), now), None);
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "3"), ("retry-after-ms", "250")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn ratelimit_reset_headers() {
        let now = SystemTime::now();
        assert_eq!(
            retry_after(
                &headers(&[
                    ("x-ratelimit-reset-requests", "1s"),
                    ("x-ratelimit-reset-tokens", "6m0s"),
                ]),
                now
            ),
            Some(Duration::from_secs(360))
        );
        // The exhausted limit decides.
        assert_eq!(
            retry_after(
                &headers(&[
                    ("x-ratelimit-reset-requests", "1.5s"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-tokens", "6m0s"),
                    ("x-ratelimit-remaining-tokens", "1000"),
                ]),
                now
            ),
            Some(Duration::from_millis(1500))
        );
        // Retry-After wins over the reset headers.
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "2"), ("x-ratelimit-reset-tokens", "6m0s")]),
                now
            ),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_reset("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_reset("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_reset("3x"), None);
        assert_eq!(parse_reset(""), None);
        assert_eq!(parse_reset("s"), None);
        assert_eq!(parse_reset("-1s"), None);
    }

    #[test]
    fn rfc3339_times() {
        // 2024-10-22T19:47:46Z
        let t = 1_729_626_466_000;
        assert_eq!(parse_rfc3339_ms("2024-10-22T19:47:46Z"), Some(t));
        assert_eq!(parse_rfc3339_ms("2024-10-22t19:47:46z"), Some(t));
        assert_eq!(parse_rfc3339_ms("2024-10-22T19:47:46.25Z"), Some(t + 250));
        assert_eq!(
            parse_rfc3339_ms("2024-10-22T19:47:46.123456789Z"),
            Some(t + 123)
        );
        assert_eq!(parse_rfc3339_ms("2024-10-22T21:47:46+02:00"), Some(t));
        assert_eq!(parse_rfc3339_ms("2024-10-22T18:17:46-01:30"), Some(t));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
        for bad in [
            "",
            "soon",
            "2024-10-22",
            "2024-10-22T19:47:46",
            "2024-13-22T19:47:46Z",
            "2024-10-22T25:47:46Z",
            "2024-10-22T19:47:46.Z",
            "2024-10-22T19:47:46+0200",
            "2024-10-22T19:47:46Zjunk",
            "1969-12-31T23:59:59Z",
            "2024-1O-22T19:47:46Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn openai_budget_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let b = RateBudget::from_headers(
            &headers(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "59"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-remaining-tokens", "149984"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            b.requests,
            Some(BudgetLine {
                remaining: 59,
                reset_ms: 1_001_000
            })
        );
        assert_eq!(
            b.tokens,
            Some(BudgetLine {
                remaining: 149_984,
                reset_ms: 1_360_000
            })
        );
        let b = RateBudget::from_headers(
            &headers(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1h2m3.5s"),
                ("x-ratelimit-remaining-tokens", "7"),
                ("x-ratelimit-reset-tokens", "20ms"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(b.requests.unwrap().reset_ms, 1_000_000 + 3_723_500);
        assert_eq!(b.tokens.unwrap().reset_ms, 1_000_020);
    }

    #[test]
    fn anthropic_budget_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_729_626_400);
        let b = RateBudget::from_headers(
            &headers(&[
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-requests-reset", "2024-10-22T19:47:46Z"),
                ("anthropic-ratelimit-input-tokens-remaining", "39000"),
                (
                    "anthropic-ratelimit-input-tokens-reset",
                    "2024-10-22T19:47:50Z",
                ),
                ("anthropic-ratelimit-output-tokens-remaining", "7000"),
                (
                    "anthropic-ratelimit-output-tokens-reset",
                    "2024-10-22T19:47:48Z",
                ),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            b.requests,
            Some(BudgetLine {
                remaining: 49,
                reset_ms: 1_729_626_466_000
            })
        );
        // The token limit with the least left.
        assert_eq!(
            b.tokens,
            Some(BudgetLine {
                remaining: 7000,
                reset_ms: 1_729_626_468_000
            })
        );
        let b = RateBudget::from_headers(
            &headers(&[
                ("anthropic-ratelimit-tokens-remaining", "100"),
                ("anthropic-ratelimit-tokens-reset", "2024-10-22T19:47:46.5Z"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(b.requests, None);
        assert_eq!(b.tokens.unwrap().reset_ms, 1_729_626_466_500);
    }

    #[test]
    fn malformed_budget_headers_are_ignored() {
        let now = SystemTime::now();
        assert_eq!(RateBudget::from_headers(&headers(&[]), now), None);
        for pairs in [
            // A count without its reset, a reset without its count.
            &[("x-ratelimit-remaining-requests", "5")][..],
            &[("x-ratelimit-reset-requests", "1s")][..],
            // Counts that are not non-negative integers, resets that are not durations.
            &[
                ("x-ratelimit-remaining-requests", "-1"),
                ("x-ratelimit-reset-requests", "1s"),
            ][..],
            &[
                ("x-ratelimit-remaining-tokens", "lots"),
                ("x-ratelimit-reset-tokens", "1s"),
            ][..],
            &[
                ("x-ratelimit-remaining-tokens", "10"),
                ("x-ratelimit-reset-tokens", "soon"),
            ][..],
            &[
                ("anthropic-ratelimit-requests-remaining", "3"),
                ("anthropic-ratelimit-requests-reset", "tomorrow"),
            ][..],
            &[
                ("anthropic-ratelimit-tokens-remaining", "1.5"),
                ("anthropic-ratelimit-tokens-reset", "2024-10-22T19:47:46Z"),
            ][..],
        ] {
            assert_eq!(
                RateBudget::from_headers(&headers(pairs), now),
                None,
                "{pairs:?}"
            );
        }
        // A readable line is kept when the other is malformed.
        let b = RateBudget::from_headers(
            &headers(&[
                ("x-ratelimit-remaining-requests", "4"),
                ("x-ratelimit-reset-requests", "2s"),
                ("x-ratelimit-remaining-tokens", "x"),
                ("x-ratelimit-reset-tokens", "2s"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(b.requests.map(|l| l.remaining), Some(4));
        assert_eq!(b.tokens, None);
    }
}
