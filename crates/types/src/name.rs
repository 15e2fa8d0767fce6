use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that cannot name an image, runtime, function or package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name breaks the naming rule.
    #[error("invalid name {0:?}: use 1-63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    Invalid(String),
    /// The `@VERSION` part is not a positive integer.
    #[error("invalid version in {0:?}: expected NAME@N with N a positive integer")]
    Version(String),
    /// A package's `@VERSION` label breaks its rule.
    #[error("invalid package version {0:?}: use 1-64 characters from A-Z, a-z, 0-9, '.', '_', '+' and '-', starting with a letter or digit")]
    PackageVersion(String),
}

/// Checks the naming rule shared by images, runtimes, functions and packages:
/// 1–63 characters of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid(name.to_string()))
    }
}

/// `NAME` (the newest version) or `NAME@VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuntimeRef {
    /// The runtime's name.
    pub name: String,
    /// A fixed version, or `None` for the newest.
    pub version: Option<u32>,
}

impl FromStr for RuntimeRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<RuntimeRef, NameError> {
        let (name, version) = match s.split_once('@') {
            Some((name, ver)) => {
                let v: u32 = ver.parse().map_err(|_| NameError::Version(s.to_string()))?;
                if v == 0 {
                    return Err(NameError::Version(s.to_string()));
                }
                (name, Some(v))
            }
            None => (s, None),
        };
        validate_name(name)?;
        Ok(RuntimeRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for RuntimeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

/// `NAME` (the newest version) or `NAME@VERSION` of a package. Package versions are labels
/// (`1`, `2.31`, `1.26.4+deb12`): ASCII letters, digits and `.`, `_`, `+`, `-`, at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageRef {
    /// The package's name.
    pub name: String,
    /// A fixed version, or `None` for the newest.
    pub version: Option<String>,
}

/// Checks a package version label.
pub fn validate_package_version(v: &str) -> Result<(), NameError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::PackageVersion(v.to_string()))
    }
}

impl FromStr for PackageRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<PackageRef, NameError> {
        let (name, version) = match s.split_once('@') {
            Some((name, ver)) => {
                validate_package_version(ver)?;
                (name, Some(ver.to_string()))
            }
            None => (s, None),
        };
        validate_name(name)?;
        Ok(PackageRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for PackageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_refs_parse_and_print() {
        let r: PackageRef = "numpy@1.26.4+deb12".parse().expect("test");
        assert_eq!(r.name, "numpy");
        assert_eq!(r.version.as_deref(), Some("1.26.4+deb12"));
        assert_eq!(r.to_string(), "numpy@1.26.4+deb12");
        let r: PackageRef = "curl".parse().expect("test");
        assert_eq!(r.version, None);
        for bad in ["curl@", "curl@-1", "Curl", "curl@a b", "curl@a/b", "@1"] {
            assert!(bad.parse::<PackageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for good in ["python3", "debian-bookworm", "a", "node_20.1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "Py", "a/b", "a b", "..", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs() {
        let r: RuntimeRef = "python3@2".parse().expect("valid");
        assert_eq!((r.name.as_str(), r.version), ("python3", Some(2)));
        assert_eq!(r.to_string(), "python3@2");
        let r: RuntimeRef = "python3".parse().expect("valid");
        assert_eq!(r.version, None);
        assert!("python3@0".parse::<RuntimeRef>().is_err());
        assert!("python3@x".parse::<RuntimeRef>().is_err());
        assert!("@1".parse::<RuntimeRef>().is_err());
    }
}
