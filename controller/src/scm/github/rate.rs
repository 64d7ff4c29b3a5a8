//! The rate-limit budget per API resource, and when to hold back.
//!
//! Every response says how much is left (`x-ratelimit-*`); the client
//! refuses to send a poll once only a reserve is left, so merges and issue
//! reads still get through, and after a 403/429 it sends nothing until the
//! host said to. These are pure decisions over explicit times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::scm::RateBudget;

/// How long to hold after a rate-limit refusal that says neither when the
/// budget resets nor when to retry.
const HOLD_WITHOUT_HINT: Duration = Duration::from_secs(60);

/// GitHub's two budgets: REST calls and GraphQL points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Core,
    Graphql,
}

impl Resource {
    /// The resource named by `x-ratelimit-resource`; other resources
    /// (search, …) are not used by ao.
    fn parse(name: &str) -> Option<Self> {
        match name {
            "core" => Some(Self::Core),
            "graphql" => Some(Self::Graphql),
            _ => None,
        }
    }
}

/// Whether a call may spend the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Background polling: stops while only the reserve is left.
    Poll,
    /// A step the loop decided on (merge, log, issue): may use the reserve.
    Act,
}

/// One resource's budget as a response reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reported {
    pub limit: u64,
    pub remaining: u64,
    pub reset: SystemTime,
}

impl Reported {
    /// The `x-ratelimit-*` headers of a response, with the resource they
    /// name (if they do); `None` without limit, remaining and reset.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<(Option<Resource>, Self)> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let reported = Self {
            limit: number("x-ratelimit-limit")?,
            remaining: number("x-ratelimit-remaining")?,
            reset: UNIX_EPOCH + Duration::from_secs(number("x-ratelimit-reset")?),
        };
        let resource = headers
            .get("x-ratelimit-resource")
            .and_then(|v| v.to_str().ok())
            .and_then(Resource::parse);
        Some((resource, reported))
    }

    /// What a poll leaves untouched: a twentieth of the limit, at least 10,
    /// but never more than half of a small limit (so it is still used).
    fn reserve(&self) -> u64 {
        (self.limit / 20).max(10).min(self.limit / 2)
    }
}

/// What is known of one resource's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Budget {
    pub reported: Option<Reported>,
    /// Set by a 403/429: nothing is sent before then.
    pub hold_until: Option<SystemTime>,
}

impl Budget {
    /// `Err(until)` when a call that `spend`s must not be sent at `now`.
    pub(crate) fn gate(&self, now: SystemTime, spend: Spend) -> Result<(), SystemTime> {
        if let Some(until) = self.hold_until.filter(|until| *until > now) {
            return Err(until);
        }
        match self.reported {
            Some(r) if r.reset > now => {
                let keep = match spend {
                    Spend::Poll => r.reserve(),
                    Spend::Act => 0,
                };
                if r.remaining <= keep {
                    Err(r.reset)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Takes in what a response said. A refusal for the rate limit (429, or
    /// 403 with nothing left or a `retry-after`) holds every call until the
    /// reset or the `retry-after`, and returns that time.
    pub(crate) fn observe(
        &mut self,
        now: SystemTime,
        status: StatusCode,
        reported: Option<Reported>,
        retry_after: Option<Duration>,
    ) -> Option<SystemTime> {
        if reported.is_some() {
            self.reported = reported;
        }
        let spent = reported.is_some_and(|r| r.remaining == 0);
        let refused = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN && (spent || retry_after.is_some()));
        if !refused {
            return None;
        }
        let until = match (retry_after, reported) {
            (Some(after), _) => now + after,
            (None, Some(r)) if spent && r.reset > now => r.reset,
            _ => now + HOLD_WITHOUT_HINT,
        };
        self.hold_until = Some(until);
        Some(until)
    }

    /// The budget as `Scm::budget` shows it, held back as a poll would be.
    pub(crate) fn shown(&self, now: SystemTime) -> Option<RateBudget> {
        let r = self.reported?;
        Some(RateBudget {
            limit: r.limit,
            remaining: r.remaining,
            resets_at: r.reset,
            throttled_until: self.gate(now, Spend::Poll).err(),
        })
    }
}

/// The budget a status line shows: of the two resources, the one with the
/// smaller share left (a poll needs both), held until the later of their
/// holds.
pub(crate) fn tighter(now: SystemTime, core: &Budget, graphql: &Budget) -> Option<RateBudget> {
    let share = |b: &RateBudget| b.remaining as f64 / b.limit.max(1) as f64;
    match (core.shown(now), graphql.shown(now)) {
        (Some(c), Some(g)) => {
            let mut shown = if share(&g) < share(&c) { g } else { c };
            shown.throttled_until = c.throttled_until.max(g.throttled_until);
            Some(shown)
        }
        (c, g) => c.or(g),
    }
}

/// `retry-after` in seconds (GitHub never sends the date form).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn reported(limit: u64, remaining: u64, reset: u64) -> Option<Reported> {
        Some(Reported {
            limit,
            remaining,
            reset: at(reset),
        })
    }

    #[test]
    fn polls_stop_at_the_reserve_and_acts_at_zero() {
        let now = at(1_000);
        let budget = |remaining| Budget {
            reported: reported(5000, remaining, 2_000),
            hold_until: None,
        };
        // The reserve of 5000 is 250.
        assert_eq!(budget(251).gate(now, Spend::Poll), Ok(()));
        assert_eq!(budget(250).gate(now, Spend::Poll), Err(at(2_000)));
        assert_eq!(budget(250).gate(now, Spend::Act), Ok(()));
        assert_eq!(budget(0).gate(now, Spend::Act), Err(at(2_000)));
        // Past the reset the old figures say nothing.
        assert_eq!(budget(0).gate(at(2_000), Spend::Poll), Ok(()));
        // Nothing seen yet: send.
        assert_eq!(Budget::default().gate(now, Spend::Poll), Ok(()));
    }

    #[test]
    fn the_reserve_is_a_twentieth_at_least_ten_at_most_half() {
        let reserve = |limit| reported(limit, 0, 0).unwrap().reserve();
        assert_eq!(reserve(5000), 250);
        assert_eq!(reserve(100), 10);
        assert_eq!(reserve(12), 6);
        assert_eq!(reserve(1), 0);
    }

    #[test]
    fn a_spent_budget_holds_until_the_reset() {
        let now = at(1_000);
        let mut budget = Budget::default();
        let until = budget.observe(now, StatusCode::FORBIDDEN, reported(60, 0, 1_500), None);
        assert_eq!(until, Some(at(1_500)));
        assert_eq!(budget.gate(at(1_499), Spend::Act), Err(at(1_500)));
        assert_eq!(budget.gate(at(1_500), Spend::Act), Ok(()));
    }

    #[test]
    fn retry_after_wins_and_a_plain_403_is_no_throttle() {
        let now = at(1_000);
        let mut budget = Budget::default();
        let until = budget.observe(
            now,
            StatusCode::TOO_MANY_REQUESTS,
            reported(5000, 4000, 1_500),
            Some(Duration::from_secs(30)),
        );
        assert_eq!(until, Some(at(1_030)));
        assert_eq!(budget.gate(at(1_029), Spend::Act), Err(at(1_030)));

        // A 403 with budget left and no retry-after is a permission error.
        let mut budget = Budget::default();
        let until = budget.observe(
            now,
            StatusCode::FORBIDDEN,
            reported(5000, 4000, 1_500),
            None,
        );
        assert_eq!(until, None);
        assert_eq!(budget.gate(now, Spend::Poll), Ok(()));

        // A 429 with no hint at all still holds a while.
        let until = budget.observe(now, StatusCode::TOO_MANY_REQUESTS, None, None);
        assert_eq!(until, Some(now + HOLD_WITHOUT_HINT));
    }

    #[test]
    fn the_shown_budget_is_the_tighter_one() {
        let now = at(1_000);
        let core = Budget {
            reported: reported(5000, 4000, 2_000),
            hold_until: None,
        };
        let graphql = Budget {
            reported: reported(5000, 100, 1_800),
            hold_until: None,
        };
        let shown = tighter(now, &core, &graphql).unwrap();
        assert_eq!((shown.remaining, shown.resets_at), (100, at(1_800)));
        assert_eq!(
            shown.throttled_until,
            Some(at(1_800)),
            "100 is below the reserve of 250"
        );

        let shown = tighter(now, &core, &Budget::default()).unwrap();
        assert_eq!((shown.remaining, shown.throttled_until), (4000, None));
        assert_eq!(tighter(now, &Budget::default(), &Budget::default()), None);
    }

    #[test]
    fn headers_are_read() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1700000000"),
            ("x-ratelimit-resource", "graphql"),
            ("retry-after", "7"),
        ] {
            headers.insert(k, v.parse().unwrap());
        }
        let (resource, r) = Reported::from_headers(&headers).unwrap();
        assert_eq!(resource, Some(Resource::Graphql));
        assert_eq!(
            (r.limit, r.remaining, r.reset),
            (5000, 4999, at(1_700_000_000))
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.remove("x-ratelimit-reset");
        assert_eq!(Reported::from_headers(&headers), None);
    }
}
