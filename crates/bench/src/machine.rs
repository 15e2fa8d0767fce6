//! The machine the figures come from, read from `/proc`, and the time they were taken.

use serde::Serialize;

/// Where the benchmark ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs (`processor` entries of /proc/cpuinfo).
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Total memory, bytes (MemTotal of /proc/meminfo).
    pub memory_bytes: u64,
    /// Kernel release (/proc/sys/kernel/osrelease).
    pub kernel: String,
}

impl Machine {
    /// Reads the machine from `/proc`; unknown fields stay empty or zero.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Machine::parse(&cpuinfo, &meminfo, &kernel)
    }

    fn parse(cpuinfo: &str, meminfo: &str, kernel: &str) -> Machine {
        let field = |line: &str, key: &str| {
            line.split_once(':')
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let cpus = cpuinfo
            .lines()
            .filter(|l| field(l, "processor").is_some())
            .count();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| field(l, "model name"))
            .unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find_map(|l| field(l, "MemTotal"))
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        Machine {
            cpus,
            cpu_model,
            memory_bytes,
            kernel: kernel.trim().to_string(),
        }
    }
}

/// The load averages of /proc/loadavg at one moment: other work on the machine competes with the
/// server, its instances and the benchmark's own clients for the same CPUs.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// What the benchmark was about to do, e.g. `start` or `burst`.
    pub at: String,
    /// 1-minute load average.
    pub one: f64,
    /// 5-minute load average.
    pub five: f64,
    /// 15-minute load average.
    pub fifteen: f64,
}

impl Load {
    /// Reads /proc/loadavg now; zeros when it cannot be read.
    pub fn read(at: &str) -> Load {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Load::parse(at, &text)
    }

    fn parse(at: &str, text: &str) -> Load {
        let mut v = text
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap_or(0.0));
        Load {
            at: at.to_string(),
            one: v.next().unwrap_or(0.0),
            five: v.next().unwrap_or(0.0),
            fifteen: v.next().unwrap_or(0.0),
        }
    }
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599), "2024-12-31 23:59:59 UTC");
    }

    #[test]
    fn reads_load_averages() {
        let l = Load::parse("start", "2.31 2.67 2.71 3/412 9999\n");
        assert_eq!((l.one, l.five, l.fifteen), (2.31, 2.67, 2.71));
        assert_eq!(l.at, "start");
        assert_eq!(Load::parse("x", "").one, 0.0);
    }

    #[test]
    fn reads_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n\nprocessor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\n";
        let meminfo = "MemTotal:       24683520 kB\nMemFree:        1 kB\n";
        let m = Machine::parse(cpuinfo, meminfo, "6.1.0-test\n");
        assert_eq!(m.cpus, 2);
        assert_eq!(m.cpu_model, "Some CPU @ 2.0GHz");
        assert_eq!(m.memory_bytes, 24_683_520 * 1024);
        assert_eq!(m.kernel, "6.1.0-test");
    }
}
