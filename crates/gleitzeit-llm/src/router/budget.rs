//! The rules of rate-limit budgets, shared by every slot store so that a single process
//! ([`super::LocalSlots`]) and a fleet (`lua/lease_acquire.lua`, `lua/lease_settle.lua`,
//! which follow these functions line by line) behave alike.
//!
//! An endpoint reports what is left of its request and token limits on every answer
//! ([`RateBudget`]). The store keeps the latest report per endpoint, each limit (a *line*)
//! until its reset. An endpoint whose live request line is at 0 is held for every call until
//! that line's reset, as after a 429 ([`requests_wait_ms`]); one whose live token line is
//! below a call's estimated tokens ([`estimate_tokens`]) is held for that call until the
//! token reset, while smaller calls may still go ([`tokens_wait_ms`]). Each slot taken
//! spends one request and the estimate from the live lines, so the fleet does not overshoot
//! between two answers that refresh them. A line whose reset has passed says nothing any
//! more.

use crate::ratelimit::{BudgetLine, RateBudget};
use crate::types::{LlmRequest, Op};

/// A line that still applies at `now_ms` (its reset is in the future).
fn live(line: Option<BudgetLine>, now_ms: u64) -> Option<BudgetLine> {
    line.filter(|l| l.reset_ms > now_ms)
}

/// How many ms the budget holds the endpoint back for every call: until the reset of a live
/// request line at 0. `None` = not held.
pub fn requests_wait_ms(budget: &RateBudget, now_ms: u64) -> Option<u64> {
    live(budget.requests, now_ms)
        .filter(|l| l.remaining == 0)
        .map(|l| l.reset_ms - now_ms)
}

/// How many ms the budget holds the endpoint back for a call estimated at `tokens`: until
/// the reset of a live token line with less left. `None` = the call fits.
pub fn tokens_wait_ms(budget: &RateBudget, tokens: u64, now_ms: u64) -> Option<u64> {
    live(budget.tokens, now_ms)
        .filter(|l| l.remaining < tokens)
        .map(|l| l.reset_ms - now_ms)
}

/// Spends one request and `tokens` from the live lines (never below 0), for a slot taken.
pub fn spend(budget: &mut RateBudget, tokens: u64, now_ms: u64) {
    if let Some(l) = budget.requests.as_mut().filter(|l| l.reset_ms > now_ms) {
        l.remaining = l.remaining.saturating_sub(1);
    }
    if let Some(l) = budget.tokens.as_mut().filter(|l| l.reset_ms > now_ms) {
        l.remaining = l.remaining.saturating_sub(tokens);
    }
}

/// Records an answer's report: each line it reports replaces the stored one (the server's
/// count is the truth, and it already counts this call); a line it does not report stays
/// until its reset.
pub fn merge(stored: &mut RateBudget, reported: &RateBudget) {
    if reported.requests.is_some() {
        stored.requests = reported.requests;
    }
    if reported.tokens.is_some() {
        stored.tokens = reported.tokens;
    }
}

/// When the stored budget says nothing any more (the later reset), Unix ms.
pub fn expires_ms(budget: &RateBudget) -> Option<u64> {
    [budget.requests, budget.tokens]
        .into_iter()
        .flatten()
        .map(|l| l.reset_ms)
        .max()
}

/// A conservative estimate of the tokens a call counts against a token limit: its text in
/// characters / 4 (rounded up; about what tokenizers make of English, more for code and other
/// scripts is covered by `max_tokens` being counted in full) plus `max_tokens` when set.
pub fn estimate_tokens(req: &LlmRequest) -> u64 {
    let chars: usize = match &req.op {
        Op::Generate { prompt, system, .. } => {
            prompt.chars().count() + system.as_deref().map_or(0, |s| s.chars().count())
        }
        Op::Chat { messages, system } => {
            messages
                .iter()
                .map(|m| m.content.chars().count())
                .sum::<usize>()
                + system.as_deref().map_or(0, |s| s.chars().count())
        }
        Op::Embed { inputs } => inputs.iter().map(|i| i.chars().count()).sum(),
    };
    (chars as u64).div_ceil(4) + u64::from(req.options.max_tokens.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    fn line(remaining: u64, reset_ms: u64) -> Option<BudgetLine> {
        Some(BudgetLine {
            remaining,
            reset_ms,
        })
    }

    #[test]
    fn exhausted_lines_hold_until_their_reset() {
        let now = 10_000;
        let b = RateBudget {
            requests: line(0, 12_000),
            tokens: line(500, 15_000),
        };
        assert_eq!(requests_wait_ms(&b, now), Some(2_000));
        assert_eq!(tokens_wait_ms(&b, 500, now), None);
        // Too few tokens for the call: held for it until the token reset.
        assert_eq!(tokens_wait_ms(&b, 501, now), Some(5_000));
        // After the request line's reset only the token line counts.
        assert_eq!(requests_wait_ms(&b, 12_000), None);
        assert_eq!(tokens_wait_ms(&b, 600, 12_000), Some(3_000));
        assert_eq!(requests_wait_ms(&RateBudget::default(), now), None);
        assert_eq!(tokens_wait_ms(&RateBudget::default(), 1 << 40, now), None);
    }

    #[test]
    fn slots_spend_and_answers_replace() {
        let now = 0;
        let mut b = RateBudget {
            requests: line(2, 1_000),
            tokens: line(100, 1_000),
        };
        spend(&mut b, 60, now);
        assert_eq!((b.requests, b.tokens), (line(1, 1_000), line(40, 1_000)));
        spend(&mut b, 60, now);
        assert_eq!((b.requests, b.tokens), (line(0, 1_000), line(0, 1_000)));
        assert_eq!(requests_wait_ms(&b, now), Some(1_000));
        assert_eq!(tokens_wait_ms(&b, 1, now), Some(1_000));
        // A line past its reset is not spent.
        spend(&mut b, 60, 1_000);
        assert_eq!(b.requests, line(0, 1_000));
        merge(
            &mut b,
            &RateBudget {
                requests: line(9, 2_000),
                tokens: None,
            },
        );
        assert_eq!((b.requests, b.tokens), (line(9, 2_000), line(0, 1_000)));
        assert_eq!(expires_ms(&b), Some(2_000));
        assert_eq!(expires_ms(&RateBudget::default()), None);
    }

    #[test]
    fn estimates_count_text_and_max_tokens() {
        let mut req = LlmRequest::generate("m", "abcdefghi");
        assert_eq!(estimate_tokens(&req), 3);
        req.options.max_tokens = Some(100);
        assert_eq!(estimate_tokens(&req), 103);
        let mut chat = LlmRequest::chat("m", vec![Message::user("abcd"), Message::assistant("ef")]);
        if let Op::Chat { system, .. } = &mut chat.op {
            *system = Some("gh".into());
        }
        assert_eq!(estimate_tokens(&chat), 2);
        assert_eq!(
            estimate_tokens(&LlmRequest::embed("m", vec!["abcd".into(); 3])),
            3
        );
    }
}
