//! Pure parsers: the text of one `/proc` or `/sys` file in, a value out.
//!
//! They do no I/O so that every format is tested against fixtures copied from real machines; the
//! reader in `facts.rs` only maps paths to these functions.

/// A file whose text is not in the format its parser expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found {found:?}")]
pub struct ParseError {
    /// What the parser wanted, e.g. "an unsigned integer".
    pub expected: &'static str,
    /// The offending text, trimmed.
    pub found: String,
}

fn err<T>(expected: &'static str, found: &str) -> Result<T, ParseError> {
    Err(ParseError {
        expected,
        found: found.trim().to_string(),
    })
}

/// One unsigned integer, as in `/proc/sys/fs/nr_open`.
pub fn number(text: &str) -> Result<u64, ParseError> {
    text.trim()
        .parse()
        .or_else(|_| err("an unsigned integer", text))
}

/// One signed integer, as in `/proc/sys/kernel/io_uring_group` (`-1` = no group).
pub fn signed(text: &str) -> Result<i64, ParseError> {
    text.trim().parse().or_else(|_| err("an integer", text))
}

/// Exactly `N` whitespace-separated unsigned integers, as in `tcp_mem` (3) or
/// `ip_local_port_range` (2).
pub fn numbers<const N: usize>(text: &str) -> Result<[u64; N], ParseError> {
    let expected = match N {
        2 => "two unsigned integers",
        3 => "three unsigned integers",
        _ => "unsigned integers",
    };
    let mut out = [0u64; N];
    let mut fields = text.split_whitespace();
    for slot in &mut out {
        *slot = match fields.next().map(str::parse) {
            Some(Ok(v)) => v,
            _ => return err(expected, text),
        };
    }
    if fields.next().is_some() {
        return err(expected, text);
    }
    Ok(out)
}

/// `/proc/sys/fs/file-nr`: "allocated  free  max"; returns the allocated count (files in use).
pub fn files_allocated(text: &str) -> Result<u64, ParseError> {
    numbers::<3>(text).map(|[allocated, _, _]| allocated)
}

/// The two figures of `/proc/meminfo` that size a connection budget, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// `/proc/meminfo`: `MemTotal` and `MemAvailable` (reported in kB, i.e. KiB).
pub fn meminfo(text: &str) -> Result<MemInfo, ParseError> {
    let field = |name: &str| -> Option<u64> {
        let rest = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
        let mut parts = rest.split_whitespace();
        let kib: u64 = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(kib * 1024)
    };
    match (field("MemTotal"), field("MemAvailable")) {
        (Some(total_bytes), Some(available_bytes)) => Ok(MemInfo {
            total_bytes,
            available_bytes,
        }),
        _ => err("MemTotal and MemAvailable lines in kB", text),
    }
}

/// A resource limit's soft and hard values; `None` is `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rlimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// One limit from `/proc/PID/limits`, by its row name (`Max open files`, `Max locked memory`).
///
/// The file is a fixed-width table; the name contains spaces, so the row is found by its prefix
/// and the two value columns are the first two fields after it.
pub fn proc_limit(text: &str, name: &'static str) -> Result<Rlimit, ParseError> {
    let value = |field: Option<&str>| -> Option<Option<u64>> {
        match field? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    let row = text
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' '));
    let Some(rest) = row else {
        return err("a row of /proc/PID/limits", name);
    };
    let mut fields = rest.split_whitespace();
    match (value(fields.next()), value(fields.next())) {
        (Some(soft), Some(hard)) => Ok(Rlimit { soft, hard }),
        _ => err("soft and hard values (a number or unlimited)", rest),
    }
}

/// A CPU list such as `/sys/devices/system/cpu/online` (`0-3,8,10-11`): how many CPUs it names.
pub fn cpu_count(text: &str) -> Result<u64, ParseError> {
    let mut count = 0;
    for part in text.trim().split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => a.parse::<u64>().ok().zip(b.parse::<u64>().ok()),
            None => part.parse::<u64>().ok().map(|a| (a, a)),
        };
        match range {
            Some((a, b)) if a <= b => count += b - a + 1,
            _ => return err("a CPU list like 0-3,8", text),
        }
    }
    Ok(count)
}

/// The effective capability mask (`CapEff:` in `/proc/PID/status`).
pub fn cap_eff(text: &str) -> Result<u64, ParseError> {
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim);
    match hex.map(|h| u64::from_str_radix(h, 16)) {
        Some(Ok(mask)) => Ok(mask),
        _ => err("a CapEff: line with a hex mask", text),
    }
}

/// Where this process's memory limit lives, from `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMemory {
    /// cgroup v1 memory controller (`N:memory:/path`): `memory.limit_in_bytes`.
    V1(String),
    /// cgroup v2 unified hierarchy (`0::/path`): `memory.max`.
    V2(String),
}

/// The cgroup that limits this process's memory. A v1 memory controller wins over the unified
/// line: on hybrid hosts the v1 controller is the one that enforces.
pub fn cgroup_memory(text: &str) -> Option<CgroupMemory> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(CgroupMemory::V1(path.to_string()));
        }
        if controllers.is_empty() {
            v2 = Some(CgroupMemory::V2(path.to_string()));
        }
    }
    v2
}

/// A cgroup memory limit file: `max` (v2) or a number; v1 writes "no limit" as a huge
/// page-rounded number, so anything from 2^62 up counts as unlimited. `None` = no limit.
pub fn cgroup_limit(text: &str) -> Result<Option<u64>, ParseError> {
    if text.trim() == "max" {
        return Ok(None);
    }
    let bytes = number(text).or_else(|_| err("a byte count or max", text))?;
    Ok((bytes < 1 << 62).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            20000                20000                files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
";

    #[test]
    fn number_trims_and_rejects_text() {
        assert_eq!(number("1048576\n"), Ok(1_048_576));
        assert_eq!(
            number("lots\n"),
            Err(ParseError {
                expected: "an unsigned integer",
                found: "lots".into()
            })
        );
        assert_eq!(signed("-1\n"), Ok(-1));
    }

    #[test]
    fn numbers_needs_exactly_n_fields() {
        assert_eq!(
            numbers::<3>("287898\t383867\t575796\n"),
            Ok([287_898, 383_867, 575_796])
        );
        assert_eq!(numbers::<2>("32768\t60999\n"), Ok([32_768, 60_999]));
        assert_eq!(
            numbers::<2>("32768\n"),
            Err(ParseError {
                expected: "two unsigned integers",
                found: "32768".into()
            })
        );
        assert_eq!(
            numbers::<2>("1 2 3"),
            Err(ParseError {
                expected: "two unsigned integers",
                found: "1 2 3".into()
            })
        );
    }

    #[test]
    fn file_nr_gives_allocated() {
        assert_eq!(files_allocated("573\t0\t2466170\n"), Ok(573));
    }

    #[test]
    fn meminfo_reads_kib_as_bytes() {
        let text =
            "MemTotal:       24684084 kB\nMemFree:        1 kB\nMemAvailable:   23988464 kB\n";
        assert_eq!(
            meminfo(text),
            Ok(MemInfo {
                total_bytes: 24_684_084 * 1024,
                available_bytes: 23_988_464 * 1024
            })
        );
        // `MemAvailableX` must not be taken for `MemAvailable`.
        assert!(meminfo("MemTotal: 1 kB\nMemAvailableX: 2 kB\n").is_err());
    }

    #[test]
    fn proc_limits_rows() {
        assert_eq!(
            proc_limit(LIMITS, "Max open files"),
            Ok(Rlimit {
                soft: Some(20_000),
                hard: Some(20_000)
            })
        );
        assert_eq!(
            proc_limit(LIMITS, "Max locked memory"),
            Ok(Rlimit {
                soft: Some(8_388_608),
                hard: Some(8_388_608)
            })
        );
        assert_eq!(
            proc_limit(LIMITS, "Max address space"),
            Ok(Rlimit {
                soft: None,
                hard: None
            })
        );
        assert_eq!(
            proc_limit("Limit Soft Hard\n", "Max open files"),
            Err(ParseError {
                expected: "a row of /proc/PID/limits",
                found: "Max open files".into()
            })
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_count("0-1\n"), Ok(2));
        assert_eq!(cpu_count("0"), Ok(1));
        assert_eq!(cpu_count("0-3,8,10-11"), Ok(7));
        assert_eq!(
            cpu_count("3-1"),
            Err(ParseError {
                expected: "a CPU list like 0-3,8",
                found: "3-1".into()
            })
        );
    }

    #[test]
    fn capabilities_mask() {
        let status = "Name:\tcat\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n";
        let mask = cap_eff(status).unwrap();
        assert_eq!(mask, 0x0000_01ff_feff_ffff);
        assert_eq!(mask >> 21 & 1, 1, "CAP_SYS_ADMIN");
        assert_eq!(mask >> 24 & 1, 0, "CAP_SYS_RESOURCE");
        assert!(cap_eff("Name: x\n").is_err());
    }

    #[test]
    fn cgroup_files() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/eba8\n1:cpu:/\n0::/\n";
        assert_eq!(
            cgroup_memory(hybrid),
            Some(CgroupMemory::V1("/process_api/eba8".into()))
        );
        assert_eq!(
            cgroup_memory("0::/system.slice/ringgate.service\n"),
            Some(CgroupMemory::V2("/system.slice/ringgate.service".into()))
        );
        assert_eq!(cgroup_memory(""), None);
        assert_eq!(cgroup_limit("max\n"), Ok(None));
        assert_eq!(cgroup_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(cgroup_limit("4294967296\n"), Ok(Some(4 << 30)));
        assert_eq!(
            cgroup_limit("x"),
            Err(ParseError {
                expected: "a byte count or max",
                found: "x".into()
            })
        );
    }
}
