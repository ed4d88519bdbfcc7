//! Parsers for the few `/proc` files the process metrics come from. Each returns `None` for
//! text it does not recognise, so a changed or truncated file drops a figure instead of
//! reporting a wrong one.

/// The clock tick `/proc` counts CPU time and start times in. It is the kernel's `USER_HZ`,
/// which is 100 on every architecture Linux runs on today (part of its user-space ABI), so it
/// is not asked of `sysconf`, which would need `unsafe` or another dependency.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// What the process metrics take from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time, in clock ticks after boot.
    pub start_ticks: u64,
}

/// `/proc/<pid>/stat`: `pid (comm) state ppid …`, where `comm` may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn stat(text: &str) -> Option<Stat> {
    let (_, after_comm) = text.rsplit_once(')')?;
    // Field 3 (state) is the first after the command; proc(5) numbers them from 1.
    let field = |number: usize| -> Option<u64> {
        after_comm.split_whitespace().nth(number - 3)?.parse().ok()
    };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
    })
}

/// A `kB` figure of `/proc/<pid>/status` (`VmRSS`, `VmSize`), in bytes.
pub fn status_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?;
    let kilobytes = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    kilobytes.checked_mul(1024)
}

/// The soft limit of open files from `/proc/<pid>/limits`; `None` when it is unlimited.
pub fn max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Boot time in seconds since the Unix epoch, from `/proc/stat`'s `btime` line.
pub fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, from a process whose name holds a space and a parenthesis.
    const STAT: &str = "4242 (my (proc) x) S 1 4242 4242 0 -1 4194560 1931 0 0 0 250 37 0 0 20 0 9 0 36620 3133440 415 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            stat(STAT),
            Some(Stat {
                cpu_ticks: 287,
                start_ticks: 36620
            })
        );
    }

    #[test]
    fn a_stat_it_does_not_recognise_gives_nothing() {
        for bad in [
            "",
            "garbage",
            "4242 (short) S 1 2 3",
            "4242 (x) S 1 4242 4242 0 -1 4194560 1931 0 0 0 many 37 0 0 20 0 9 0 36620",
            "4242 no parenthesis S 1 4242 4242 0 -1 4194560 1931 0 0 0 250 37 0 0 20 0 9 0 36620",
        ] {
            assert_eq!(stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_figures_are_read_in_bytes() {
        let status = "Name:\tsluice\nVmSize:\t    3892 kB\nVmRSS:\t    2172 kB\nThreads:\t9\n";
        assert_eq!(status_bytes(status, "VmRSS"), Some(2172 * 1024));
        assert_eq!(status_bytes(status, "VmSize"), Some(3892 * 1024));
        assert_eq!(status_bytes(status, "VmSwap"), None, "absent");
        assert_eq!(
            status_bytes("VmRSS:\t2172 MB\n", "VmRSS"),
            None,
            "unknown unit"
        );
        assert_eq!(status_bytes("VmRSS:\tlots kB\n", "VmRSS"), None);
        assert_eq!(
            status_bytes("VmRSSx:\t1 kB\n", "VmRSS"),
            None,
            "another key"
        );
        let huge = format!("VmRSS:\t{} kB\n", u64::MAX);
        assert_eq!(status_bytes(&huge, "VmRSS"), None, "overflows");
    }

    #[test]
    fn open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
        assert_eq!(max_open_files("Max processes 10 10 processes\n"), None);
        assert_eq!(max_open_files(""), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let stat = "cpu  1 2 3 4\nintr 5\nbtime 1796308373\nprocesses 9\n";
        assert_eq!(boot_time(stat), Some(1_796_308_373));
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
        assert_eq!(boot_time("btime soon\n"), None);
    }
}
