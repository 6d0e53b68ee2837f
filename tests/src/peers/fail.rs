//! Failure injection: how a request is made to fail, from the `x-peer-fail` header or from
//! the peer's configuration.
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The delay between streamed chunks under [`Fail::Slow`] when none is given.
pub const DEFAULT_SLOW: Duration = Duration::from_millis(200);
/// How long [`Fail::HangThenClose`] hangs when no time is given.
pub const DEFAULT_HANG: Duration = Duration::from_millis(1000);

/// One way to fail. Textual form (header `x-peer-fail`, CLI `--fail`): `status=429`,
/// `status=500` (any status), `reset`, `slow`, `slow=50` or `slow=50ms`, `hang-then-close`,
/// `hang-then-close=500`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fail {
    /// Answer with this status and the route's error body (429 carries `retry-after: 7`).
    Status(u16),
    /// Send the response head and part of the body, then reset the TCP connection.
    Reset,
    /// Stream the body with this delay between chunks (SSE events, JSON pieces).
    Slow(Duration),
    /// Read the request, answer nothing for this long, then close the connection.
    HangThenClose(Duration),
}

/// A configured failure: which requests it applies to and how many times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRule {
    /// How they fail.
    pub fail: Fail,
    /// Only requests whose path starts with this (all when `None`).
    pub path_prefix: Option<String>,
    /// Only the next this many matching requests (all when `None`).
    pub times: Option<u64>,
}

impl FailRule {
    /// Every request fails this way.
    pub fn always(fail: Fail) -> FailRule {
        FailRule {
            fail,
            path_prefix: None,
            times: None,
        }
    }
}

impl FromStr for Fail {
    type Err = String;

    fn from_str(s: &str) -> Result<Fail, String> {
        let s = s.trim();
        let (word, arg) = match s.split_once('=') {
            Some((w, a)) => (w.trim(), Some(a.trim())),
            None => (s, None),
        };
        let millis = |a: &str| -> Result<Duration, String> {
            let digits = a.strip_suffix("ms").unwrap_or(a);
            digits
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("x-peer-fail: {s:?}: expected milliseconds"))
        };
        match (word, arg) {
            ("status", Some(a)) => a
                .parse::<u16>()
                .ok()
                .filter(|c| (100..1000).contains(c))
                .map(Fail::Status)
                .ok_or_else(|| format!("x-peer-fail: {s:?}: expected a status code")),
            ("reset", None) => Ok(Fail::Reset),
            ("slow", None) => Ok(Fail::Slow(DEFAULT_SLOW)),
            ("slow", Some(a)) => millis(a).map(Fail::Slow),
            ("hang-then-close", None) => Ok(Fail::HangThenClose(DEFAULT_HANG)),
            ("hang-then-close", Some(a)) => millis(a).map(Fail::HangThenClose),
            _ => Err(format!(
                "x-peer-fail: {s:?}: expected status=N, reset, slow[=MS] or hang-then-close[=MS]"
            )),
        }
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Status(code) => write!(f, "status={code}"),
            Fail::Reset => write!(f, "reset"),
            Fail::Slow(d) => write!(f, "slow={}", d.as_millis()),
            Fail::HangThenClose(d) => write!(f, "hang-then-close={}", d.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("status=429".parse(), Ok(Fail::Status(429)));
        assert_eq!("reset".parse(), Ok(Fail::Reset));
        assert_eq!("slow".parse(), Ok(Fail::Slow(DEFAULT_SLOW)));
        assert_eq!(
            "slow=50ms".parse(),
            Ok(Fail::Slow(Duration::from_millis(50)))
        );
        assert_eq!(
            "hang-then-close=5".parse(),
            Ok(Fail::HangThenClose(Duration::from_millis(5)))
        );
        assert!("status=abc".parse::<Fail>().is_err());
        assert!("explode".parse::<Fail>().is_err());
        for f in [Fail::Status(500), Fail::Reset, Fail::Slow(DEFAULT_SLOW)] {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
    }
}
