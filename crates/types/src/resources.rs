use serde::{Deserialize, Serialize};

/// A resource quantity that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Memory quantities: `256Mi`, `1Gi`, `512M`, `1048576`.
    #[error("invalid memory {0:?}: expected a size such as 128Mi, 1Gi, 512M or a byte count")]
    Memory(String),
    /// CPU quantities: `0.5`, `2`, `500m`.
    #[error("invalid cpu {0:?}: expected cores such as 0.5 or 2, or millicores such as 500m")]
    Cpu(String),
    /// Durations: `30s`, `5m`, `1500ms`, `1h`.
    #[error("invalid duration {0:?}: expected a duration such as 30s, 1500ms, 5m or 1h")]
    Duration(String),
}

/// Parses a memory size: plain bytes, or a number with `Ki Mi Gi Ti` (binary) or `K M G T`
/// (decimal) suffix. Must be at least 1 MiB.
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError::Memory(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit {
        "" | "B" => 1.0,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0f64.powi(4),
        "K" | "k" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        _ => return Err(err()),
    };
    let n: f64 = num.parse().map_err(|_| err())?;
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < (1 << 20) as f64 || bytes > 1e15 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Parses CPU as millicores: `0.5` → 500, `2` → 2000, `250m` → 250. Must be between 10m and 256
/// cores.
pub fn parse_cpu(s: &str) -> Result<u32, QuantityError> {
    let err = || QuantityError::Cpu(s.to_string());
    let t = s.trim();
    let millis = if let Some(m) = t.strip_suffix('m') {
        m.parse::<u32>().map_err(|_| err())?
    } else {
        let cores: f64 = t.parse().map_err(|_| err())?;
        if !cores.is_finite() {
            return Err(err());
        }
        (cores * 1000.0).round() as u32
    };
    if !(10..=256_000).contains(&millis) {
        return Err(err());
    }
    Ok(millis)
}

/// Parses a duration into milliseconds: `1500ms`, `30s`, `5m`, `1h`, or `1.5s`.
/// Must be between 1 ms and 24 hours.
pub fn parse_duration(s: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError::Duration(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return Err(err()),
    };
    let n: f64 = num.parse().map_err(|_| err())?;
    let ms = (n * mult).round();
    if !ms.is_finite() || !(1.0..=86_400_000.0).contains(&ms) {
        return Err(err());
    }
    Ok(ms as u64)
}

/// Formats a byte count with binary units, e.g. `256Mi`, `1.5Gi`, `812Ki`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else if (v - v.round()).abs() < 0.05 {
        format!("{}{}", v.round(), UNITS[i])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Resource settings: defaults on a runtime, overrides on a function. `None` means "inherit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU limit in millicores (1000 = one core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Invocation timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl Resources {
    /// The defaults Strata gives a runtime that sets none: 256Mi, 1 cpu, 30 s.
    pub fn platform_default() -> Resources {
        Resources {
            memory_bytes: Some(256 << 20),
            cpu_millis: Some(1000),
            timeout_ms: Some(30_000),
        }
    }

    /// Parses the `--memory`, `--cpu` and `--timeout` flags; unset flags stay unset.
    pub fn parse(
        memory: Option<&str>,
        cpu: Option<&str>,
        timeout: Option<&str>,
    ) -> Result<Resources, QuantityError> {
        Ok(Resources {
            memory_bytes: memory.map(parse_memory).transpose()?,
            cpu_millis: cpu.map(parse_cpu).transpose()?,
            timeout_ms: timeout.map(parse_duration).transpose()?,
        })
    }

    /// Fills every unset field from `base`.
    pub fn or(&self, base: &Resources) -> Resources {
        Resources {
            memory_bytes: self.memory_bytes.or(base.memory_bytes),
            cpu_millis: self.cpu_millis.or(base.cpu_millis),
            timeout_ms: self.timeout_ms.or(base.timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("512M"), Ok(512_000_000));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory("2097152"), Ok(2 << 20));
        for bad in ["", "Mi", "256Xi", "-1Mi", "1Ki", "abc", "1e99"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("250m"), Ok(250));
        for bad in ["", "0", "1m", "x", "-1", "NaN", "inf"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("1500ms"), Ok(1500));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1.5s"), Ok(1500));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        for bad in ["", "30", "s", "0s", "25h", "1d", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(256 << 20), "256Mi");
        assert_eq!(format_bytes(1536 << 20), "1.5Gi");
        assert_eq!(format_bytes(17), "17B");
    }

    #[test]
    fn inherit() {
        let f = Resources {
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        let r = f.or(&Resources::platform_default());
        assert_eq!(r.memory_bytes, Some(1 << 30));
        assert_eq!(r.cpu_millis, Some(1000));
        assert_eq!(r.timeout_ms, Some(30_000));
    }
}
