//! Retry policy: how long to wait before the next attempt (exponential backoff, full jitter, `Retry-After`).

/// How an event left the queue (what `logAnswer` resolves to); the rule that
/// decides it is `engine::Engine::reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The collector stored it (written or duplicate).
    Done,
    /// The collector itself judged it can never be stored (`invalid`, `too_large`, `conflict`).
    Rejected,
}

/// Reads a `Retry-After` header given in seconds; HTTP dates are read by the glue.
pub fn retry_after_seconds_ms(value: &str) -> Option<u32> {
    let v = value.trim_ascii();
    if v.is_empty() {
        return None;
    }
    // A digit loop rather than `parse` (smaller wasm); huge values saturate.
    let mut seconds: u32 = 0;
    for b in v.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        seconds = seconds.saturating_mul(10).saturating_add((b - b'0') as u32);
    }
    Some(seconds.saturating_mul(1000))
}

/// Longest wait we ever schedule, whatever a server asks for (one hour).
pub const MAX_WAIT_MS: u32 = 3_600_000;

/// Delay before retry number `attempt` (0 for the first retry): a uniform pick in
/// `[0, min(cap, base * 2^attempt)]` ("full jitter") using `random` (a uniform u32),
/// but never sooner than the server's `Retry-After`.
pub fn backoff_ms(attempt: u32, base_ms: u32, cap_ms: u32, random: u32, retry_after_ms: Option<u32>) -> u32 {
    let ceiling = (base_ms as u64)
        .saturating_mul(1u64 << attempt.min(32))
        .min(cap_ms as u64);
    let jittered = ((random as u64 * (ceiling + 1)) >> 32) as u32;
    jittered.max(retry_after_ms.unwrap_or(0)).min(MAX_WAIT_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after_seconds() {
        assert_eq!(retry_after_seconds_ms("3"), Some(3000));
        assert_eq!(retry_after_seconds_ms(" 120 "), Some(120_000));
        assert_eq!(retry_after_seconds_ms("99999999999"), Some(u32::MAX));
        assert_eq!(retry_after_seconds_ms("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_seconds_ms("-1"), None);
        assert_eq!(retry_after_seconds_ms(""), None);
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_cap() {
        // random = u32::MAX picks the top of the range.
        let top = |attempt| backoff_ms(attempt, 1000, 60_000, u32::MAX, None);
        assert_eq!(
            [top(0), top(1), top(2), top(5), top(6), top(40)],
            [1000, 2000, 4000, 32_000, 60_000, 60_000]
        );
        assert_eq!(backoff_ms(3, 1000, 60_000, 0, None), 0);
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(backoff_ms(0, 1000, 60_000, 0, Some(5000)), 5000);
        assert_eq!(backoff_ms(0, 1000, 60_000, u32::MAX, Some(10)), 1000);
        assert_eq!(backoff_ms(0, 1000, 60_000, 0, Some(u32::MAX)), MAX_WAIT_MS);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn delay_stays_within_the_jitter_window(attempt in 0u32..100, base in 1u32..100_000, cap in 1u32..1_000_000, r in any::<u32>()) {
                let d = backoff_ms(attempt, base, cap, r, None);
                let ceiling = (base as u64 * (1u64 << attempt.min(32))).min(cap as u64);
                prop_assert!(d as u64 <= ceiling);
            }

            #[test]
            fn jitter_is_monotonic_in_the_random_draw(attempt in 0u32..20, a in any::<u32>(), b in any::<u32>()) {
                let (lo, hi) = (a.min(b), a.max(b));
                prop_assert!(backoff_ms(attempt, 1000, 60_000, lo, None) <= backoff_ms(attempt, 1000, 60_000, hi, None));
            }
        }
    }
}
