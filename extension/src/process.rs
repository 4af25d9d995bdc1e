//! How long ago this process started, as the kernel counts it.
//!
//! Lambda's Init phase for an extension begins when Lambda starts the extension's process,
//! not when `main` runs. Between the two lie exec, the dynamic loader and the wait for a
//! core; on a host starting many environments at once that is hundreds of milliseconds.
//! The Init budget (`LOCKBOX_PREFETCH_TIMEOUT_MS`) counts from the process's start so that
//! this time is inside it, not on top of it.

use std::time::Duration;

/// How long ago the kernel started this process, or `None` where `/proc` cannot say
/// (not Linux, `/proc` not mounted). The kernel's clock has a resolution of one tick
/// (10 ms on Lambda's kernels).
pub fn age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    age_from(&stat, &uptime, rustix::param::clock_ticks_per_second())
}

/// The age from the text of `/proc/self/stat` (field 22, `starttime`, in clock ticks since
/// boot) and of `/proc/uptime` (seconds since boot).
fn age_from(stat: &str, uptime: &str, ticks_per_second: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may itself hold spaces and
    // parentheses: the fields after it start after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name; field 22 is the 20th.
    let start_ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let up = Duration::try_from_secs_f64(uptime.split_whitespace().next()?.parse().ok()?).ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    let started = Duration::from_secs(start_ticks / ticks_per_second)
        + Duration::from_nanos((start_ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second);
    up.checked_sub(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line whose command name holds a space and a ')' , started 12,345 ticks
    /// after boot.
    const STAT: &str = "4242 (lock box) x) S 1 4242 4242 0 -1 4194560 300 0 0 0 1 2 0 0 \
                        20 0 1 0 12345 10000000 500 18446744073709551615";

    #[test]
    fn the_age_is_uptime_less_the_start_tick() {
        // Started 123.45 s after boot, now 124.00 s after boot: 550 ms old.
        assert_eq!(
            age_from(STAT, "124.00 300.10\n", 100),
            Some(Duration::from_millis(550))
        );
    }

    #[test]
    fn what_cannot_be_read_gives_no_age() {
        assert_eq!(age_from("4242 (lockbox S 1", "124.00 1", 100), None);
        assert_eq!(age_from(STAT, "soon", 100), None);
        assert_eq!(age_from(STAT, "124.00 1", 0), None);
        // A start after the uptime read (a clock that stepped) is no age, not a panic.
        assert_eq!(age_from(STAT, "100.00 1", 100), None);
    }

    #[test]
    fn this_process_is_older_than_the_test() {
        let before = std::time::Instant::now();
        let age = age().expect("the test runs on Linux with /proc");
        // The test harness started this process before this test began, and the kernel
        // counts in ticks of at most 10 ms.
        assert!(
            age + Duration::from_millis(10) >= before.elapsed(),
            "{age:?}"
        );
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }
}
