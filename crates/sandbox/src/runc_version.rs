//! Which runc releases are known to let a container escape: a pure function of
//! `runc --version` output, so the policy is a table that tests can read.

/// A container escape fixed in a runc release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cve {
    /// `CVE-YYYY-NNNNN`.
    pub id: &'static str,
    /// What it lets a container do, in a few words.
    pub summary: &'static str,
}

/// CVE-2024-21626: a leaked host directory fd as the working directory ("Leaky Vessels").
const CVE_2024_21626: Cve = Cve {
    id: "CVE-2024-21626",
    summary: "leaked file descriptor lets the container reach the host file system",
};

/// The November 2025 races on masked paths and `/dev/console` that let a container write
/// to host `/proc` files.
const CVES_2025: [Cve; 3] = [
    Cve {
        id: "CVE-2025-31133",
        summary: "maskedPaths race: /dev/null swapped for a symlink to a /proc file",
    },
    Cve {
        id: "CVE-2025-52565",
        summary: "/dev/console bind-mount race redirects writes to /proc",
    },
    Cve {
        id: "CVE-2025-52881",
        summary: "shared-mount race redirects runc's own /proc writes",
    },
];

/// The fixed releases, for messages.
pub const RUNC_FIXED_RELEASES: &str = "1.2.8, 1.3.3 or 1.4.0";

/// What Strata makes of a runtime's `runc --version` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A runc release with no known container escape.
    Supported {
        /// The version as runc prints it, e.g. `1.3.3`.
        version: String,
    },
    /// A runc release with known container escapes.
    Vulnerable {
        /// The version as runc prints it, e.g. `1.1.5+ds1`.
        version: String,
        /// The escapes it is open to.
        cves: Vec<Cve>,
    },
    /// Not runc, or a version this policy cannot read (a runc-compatible runtime such as crun,
    /// or unexpected output): nothing is known against it.
    Unknown {
        /// Why, for the log.
        reason: String,
    },
}

/// A runc version: `major.minor.patch` and an optional pre-release number (`-rc.N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// A release sorts after all its release candidates.
    rc: ReleaseKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ReleaseKind {
    Candidate(u64),
    Final,
}

const fn v(major: u64, minor: u64, patch: u64) -> Version {
    Version {
        major,
        minor,
        patch,
        rc: ReleaseKind::Final,
    }
}

const fn rc(major: u64, minor: u64, patch: u64, n: u64) -> Version {
    Version {
        rc: ReleaseKind::Candidate(n),
        ..v(major, minor, patch)
    }
}

/// The lowest version of a `major.minor` series, below its first release candidate.
const fn series(major: u64, minor: u64) -> Version {
    rc(major, minor, 0, 0)
}

/// Judges a runc from its `runc --version` output:
///
/// | runc | Verdict |
/// |---|---|
/// | < 1.1.12 | vulnerable: CVE-2024-21626 and the 2025 CVEs |
/// | 1.1.12 – 1.2.7 | vulnerable: CVE-2025-31133, -52565, -52881 |
/// | 1.2.8 – 1.2.x | supported |
/// | 1.3.0 – 1.3.2 | vulnerable: the 2025 CVEs |
/// | 1.3.3 – 1.3.x | supported |
/// | 1.4.0-rc.1, -rc.2 | vulnerable: the 2025 CVEs |
/// | ≥ 1.4.0-rc.3 | supported |
///
/// Debian's `1.1.5+ds1-1+deb12uN` (N ≥ 1, read from the `commit:` line) carries the
/// CVE-2024-21626 fix but not the 2025 ones. Output that is not runc's, or that has no
/// readable version, is [`Verdict::Unknown`].
pub fn runc_verdict(version_output: &str) -> Verdict {
    let mut lines = version_output.lines();
    let Some(first) = lines.next().map(str::trim) else {
        return Verdict::Unknown {
            reason: "empty version output".to_string(),
        };
    };
    let Some(version_text) = first.strip_prefix("runc version ").map(str::trim) else {
        return Verdict::Unknown {
            reason: format!("not runc: {first:?}"),
        };
    };
    let Some(version) = parse(version_text) else {
        return Verdict::Unknown {
            reason: format!("unreadable runc version {version_text:?}"),
        };
    };
    let commit = version_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit:"))
        .map(str::trim)
        .unwrap_or_default();

    let mut cves = Vec::new();
    if version < v(1, 1, 12) && !debian_backport_of_21626(version, commit) {
        cves.push(CVE_2024_21626);
    }
    let fixed_2025 = (v(1, 2, 8) <= version && version < series(1, 3))
        || (v(1, 3, 3) <= version && version < series(1, 4))
        || version >= rc(1, 4, 0, 3);
    if !fixed_2025 {
        cves.extend(CVES_2025);
    }
    if cves.is_empty() {
        Verdict::Supported {
            version: version_text.to_string(),
        }
    } else {
        Verdict::Vulnerable {
            version: version_text.to_string(),
            cves,
        }
    }
}

/// Debian 12's security update `1.1.5+ds1-1+deb12u1` (DSA-5615-1) and later revisions.
fn debian_backport_of_21626(version: Version, commit: &str) -> bool {
    version == v(1, 1, 5)
        && commit
            .split_once("+deb12u")
            .and_then(|(_, n)| {
                n.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<u32>()
                    .ok()
            })
            .is_some_and(|n| n >= 1)
}

/// `1.2.8`, `1.1.5+ds1`, `1.4.0-rc.3`, `v1.3.3` → a version; build metadata after `+` and
/// anything after the pre-release number are ignored.
fn parse(text: &str) -> Option<Version> {
    let text = text.strip_prefix('v').unwrap_or(text);
    let text = text.split('+').next()?;
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let rc = match pre {
        None => ReleaseKind::Final,
        Some(pre) => {
            let n = pre.strip_prefix("rc")?.trim_start_matches('.');
            ReleaseKind::Candidate(n.parse().ok()?)
        }
    };
    Some(Version {
        major,
        minor,
        patch,
        rc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_12: &str = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n";

    fn upstream(version: &str) -> String {
        format!("runc version {version}\ncommit: v{version}-0-gabcdef0\nspec: 1.2.1\ngo: go1.24.9\nlibseccomp: 2.5.6\n")
    }

    fn cve_ids(v: &Verdict) -> Vec<&'static str> {
        match v {
            Verdict::Vulnerable { cves, .. } => cves.iter().map(|c| c.id).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn version_table() {
        let all_2025 = vec!["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"];
        let mut with_2024 = vec!["CVE-2024-21626"];
        with_2024.extend(&all_2025);
        let cases: &[(&str, Option<&[&str]>)] = &[
            // (version, None = supported / Some(cves) = vulnerable)
            ("1.0.0", Some(&with_2024)),
            ("1.1.5", Some(&with_2024)),
            ("1.1.11", Some(&with_2024)),
            ("1.1.12", Some(&all_2025)),
            ("1.1.15", Some(&all_2025)),
            ("1.2.0", Some(&all_2025)),
            ("1.2.7", Some(&all_2025)),
            ("1.2.8-rc.1", Some(&all_2025)),
            ("1.2.8", None),
            ("1.2.9", None),
            ("1.3.0-rc.1", Some(&all_2025)),
            ("1.3.0", Some(&all_2025)),
            ("1.3.2", Some(&all_2025)),
            ("1.3.3", None),
            ("1.3.4", None),
            ("1.4.0-rc.1", Some(&all_2025)),
            ("1.4.0-rc.2", Some(&all_2025)),
            ("1.4.0-rc.3", None),
            ("1.4.0", None),
            ("1.5.1", None),
            ("2.0.0", None),
        ];
        for (version, want) in cases {
            let verdict = runc_verdict(&upstream(version));
            match want {
                None => assert_eq!(
                    verdict,
                    Verdict::Supported {
                        version: version.to_string()
                    },
                    "{version}"
                ),
                Some(cves) => {
                    assert!(
                        matches!(&verdict, Verdict::Vulnerable { version: v, .. } if v == version),
                        "{version}: {verdict:?}"
                    );
                    assert_eq!(cve_ids(&verdict), cves.to_vec(), "{version}");
                }
            }
        }
    }

    #[test]
    fn debian_12_has_the_2024_fix_but_not_the_2025_ones() {
        let verdict = runc_verdict(DEBIAN_12);
        assert!(
            matches!(&verdict, Verdict::Vulnerable { version, .. } if version == "1.1.5+ds1"),
            "{verdict:?}"
        );
        assert_eq!(
            cve_ids(&verdict),
            vec!["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"]
        );
        // Before the security update, CVE-2024-21626 is open too.
        let unpatched = DEBIAN_12.replace("+deb12u1", "");
        assert_eq!(cve_ids(&runc_verdict(&unpatched)).len(), 4);
        // The backport is Debian's 1.1.5 only.
        let other = "runc version 1.1.4+ds1\ncommit: 1.1.4+ds1-1+deb12u1\n";
        assert_eq!(cve_ids(&runc_verdict(other)).len(), 4);
    }

    #[test]
    fn just_the_first_line_is_enough() {
        assert_eq!(cve_ids(&runc_verdict("runc version 1.1.5\n")).len(), 4);
        assert_eq!(
            runc_verdict("runc version 1.3.3"),
            Verdict::Supported {
                version: "1.3.3".into()
            }
        );
    }

    #[test]
    fn garbage_and_other_runtimes_are_unknown() {
        for text in [
            "",
            "\n",
            "garbage",
            "crun version 1.8.1\ncommit: abc\n",
            "runc version\n",
            "runc version banana\n",
            "runc version 1.2\n",
            "runc version 1.2.3.4\n",
            "runc version 1.4.0-beta\n",
        ] {
            assert!(
                matches!(runc_verdict(text), Verdict::Unknown { .. }),
                "{text:?}: {:?}",
                runc_verdict(text)
            );
        }
    }
}
