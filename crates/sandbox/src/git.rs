//! Fetching function code from a git repository with the system `git` binary.
//!
//! [`fetch_archive`] makes a bare scratch repository, shallow-fetches exactly one ref into it
//! (`--depth=1`, no tags, no submodules), resolves the commit and writes `git archive` of the
//! wanted directory as a tar. Nothing is checked out, so no work-tree filters, hooks or
//! submodule configuration of the fetched repository ever run. The caller then hands the tar to
//! the ordinary code import, which enforces every rule on uploaded code.
//!
//! Every `git` runs with a cleared environment (only `PATH`, a scratch `HOME`, `LANG=C` and the
//! host's proxy and CA variables), no system or global configuration, `GIT_TERMINAL_PROMPT=0`,
//! `core.hooksPath=/dev/null`, `transfer.fsckObjects=true`, submodule recursion off and
//! `GIT_ALLOW_PROTOCOL` limited to the transports the [`GitPolicy`] allows, in its own process
//! group that is killed whole at the time limit. The scratch repository's size is watched while
//! fetching and the fetch is killed past [`GitPolicy::max_bytes`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::error::SandboxError;
use crate::output::{pump, Tail};
use crate::Stream;

/// How many lines of git's output a failure reports.
const ERROR_TAIL_LINES: usize = 12;

/// Where `git` is looked for besides `PATH`.
const TOOL_DIRS: &str = "/usr/local/bin:/usr/bin:/bin";

/// Host variables passed on to `git` (proxies and TLS trust), when set.
const PASS_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
];

/// A kind of repository location a server may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitScheme {
    /// `https://host/path`.
    Https,
    /// `http://host/path` (plain text; off by default).
    Http,
    /// `file:///path` and absolute paths on the server's file system.
    File,
}

impl GitScheme {
    fn name(self) -> &'static str {
        match self {
            GitScheme::Https => "https",
            GitScheme::Http => "http",
            GitScheme::File => "file",
        }
    }
}

impl std::str::FromStr for GitScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<GitScheme, String> {
        match s.trim() {
            "https" => Ok(GitScheme::Https),
            "http" => Ok(GitScheme::Http),
            "file" => Ok(GitScheme::File),
            other => Err(format!(
                "unknown git scheme {other:?}: expected https, http or file"
            )),
        }
    }
}

/// What a server allows when fetching code from git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPolicy {
    /// The `git` binary (found on `PATH` when relative).
    pub binary: PathBuf,
    /// Allowed repository locations.
    pub schemes: Vec<GitScheme>,
    /// Time limit of the whole fetch (every git command together).
    pub timeout: Duration,
    /// Largest scratch repository (the fetched objects), in bytes.
    pub max_bytes: u64,
}

impl Default for GitPolicy {
    /// `git` from `PATH`, https only, 2 minutes, 512 MiB.
    fn default() -> GitPolicy {
        GitPolicy {
            binary: PathBuf::from("git"),
            schemes: vec![GitScheme::Https],
            timeout: Duration::from_secs(120),
            max_bytes: 512 << 20,
        }
    }
}

/// One fetch: where from, which ref, which directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// Repository URL or absolute path.
    pub url: String,
    /// Branch, tag or full commit id; `HEAD` when `None`.
    pub reference: Option<String>,
    /// Directory inside the repository; the root when `None`.
    pub subdir: Option<String>,
}

/// What was fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFetched {
    /// The ref that was asked for (`HEAD` by default).
    pub reference: String,
    /// The commit it resolved to (40 or 64 hex digits).
    pub commit: String,
    /// The directory archived, normalized (`""` for the root).
    pub subdir: String,
}

/// Checks a request against the policy; returns the ref and the normalized subdir.
pub fn validate_request(
    policy: &GitPolicy,
    req: &GitRequest,
) -> Result<(String, String), SandboxError> {
    check_url(policy, &req.url)?;
    let reference = req.reference.clone().unwrap_or_else(|| "HEAD".to_string());
    check_ref(&reference)?;
    let subdir = normalize_subdir(req.subdir.as_deref().unwrap_or(""))?;
    Ok((reference, subdir))
}

fn rejected(reason: String) -> SandboxError {
    SandboxError::GitRejected { reason }
}

fn check_url(policy: &GitPolicy, url: &str) -> Result<(), SandboxError> {
    if url.is_empty()
        || url.len() > 2048
        || url.starts_with('-')
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(rejected(format!(
            "git URL {url:?} must be a URL such as https://host/repo.git (no spaces or control characters, at most 2048 bytes)"
        )));
    }
    let scheme = if url.starts_with("https://") {
        GitScheme::Https
    } else if url.starts_with("http://") {
        GitScheme::Http
    } else if url.starts_with("file://") || url.starts_with('/') {
        GitScheme::File
    } else {
        return Err(rejected(format!(
            "git URL {url:?} is not supported: use https://, http://, file:// or an absolute path (no ssh, git:// or ext:: transports)"
        )));
    };
    if !policy.schemes.contains(&scheme) {
        let allowed: Vec<&str> = policy.schemes.iter().map(|s| s.name()).collect();
        return Err(rejected(format!(
            "git URL {url:?}: this server does not fetch {} repositories (allowed: {}; see `strata server --git-allow`)",
            scheme.name(),
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        )));
    }
    Ok(())
}

/// A ref must be a plain name (`main`, `release/1.2`, `v1.0`, `HEAD`) or a commit id: nothing
/// git could read as an option, a revision expression or a refspec.
fn check_ref(r: &str) -> Result<(), SandboxError> {
    let ok = !r.is_empty()
        && r.len() <= 256
        && !r.starts_with(['-', '/', '.'])
        && !r.ends_with(['/', '.'])
        && !r.ends_with(".lock")
        && !r.contains("..")
        && !r.contains("//")
        && !r.contains("@{")
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(rejected(format!(
            "git ref {r:?} must be a branch, tag or commit id such as main, v1.2 or a 40-digit commit"
        )))
    }
}

/// A subdir is a relative path inside the repository: no `..`, no absolute path.
fn normalize_subdir(s: &str) -> Result<String, SandboxError> {
    let trimmed = s.trim_matches('/');
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let bad = s.starts_with('/')
        || s.len() > 1024
        || parts.contains(&"..")
        || s.chars().any(|c| c.is_control() || c == ':' || c == '\\');
    if bad {
        return Err(rejected(format!(
            "git subdir {s:?} must be a relative directory inside the repository, such as functions/hello"
        )));
    }
    Ok(parts.join("/"))
}

/// Fetches `req` into a bare repository under `scratch` (an empty directory the caller owns and
/// removes) and writes the tar of its directory to `out_tar`.
pub async fn fetch_archive(
    policy: &GitPolicy,
    req: &GitRequest,
    scratch: &Path,
    out_tar: &Path,
) -> Result<GitFetched, SandboxError> {
    let (reference, subdir) = validate_request(policy, req)?;
    let deadline = Instant::now() + policy.timeout;
    let git = Git::new(policy, scratch, deadline)?;
    let repo = scratch.join("repo.git");
    git.run(&["init", "--quiet", "--bare"], Some(&repo), None)
        .await?;
    let repo_s = repo.to_string_lossy().into_owned();
    let refspec = format!("+{reference}:refs/strata/fetched");
    git.run(
        &[
            "-C",
            &repo_s,
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--no-recurse-submodules",
            "--end-of-options",
            &req.url,
            &refspec,
        ],
        None,
        Some((&repo, policy.max_bytes)),
    )
    .await
    .map_err(|e| match e {
        SandboxError::GitFailed { output, .. } => rejected(format!(
            "fetching {reference} from {}: {}",
            req.url,
            git_message(&output)
        )),
        other => other,
    })?;
    let commit = git
        .output(&[
            "-C",
            &repo_s,
            "rev-parse",
            "--verify",
            "--end-of-options",
            "refs/strata/fetched^{commit}",
        ])
        .await
        .map_err(|_| rejected(format!("{reference} in {} does not name a commit", req.url)))?;
    let commit = commit.trim().to_string();
    if !(commit.len() == 40 || commit.len() == 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(rejected(format!(
            "git printed {commit:?} for the commit of {reference}"
        )));
    }
    let tree = if subdir.is_empty() {
        commit.clone()
    } else {
        format!("{commit}:{subdir}")
    };
    if !subdir.is_empty() {
        let kind = git
            .output(&["-C", &repo_s, "cat-file", "-t", "--end-of-options", &tree])
            .await
            .unwrap_or_default();
        if kind.trim() != "tree" {
            return Err(rejected(format!(
                "{} at {reference} ({}) has no directory {subdir:?}",
                req.url,
                &commit[..12]
            )));
        }
    }
    let out_s = out_tar.to_string_lossy().into_owned();
    git.run(
        &[
            "-C",
            &repo_s,
            "archive",
            "--format=tar",
            &format!("--output={out_s}"),
            "--end-of-options",
            &tree,
        ],
        None,
        None,
    )
    .await?;
    tracing::info!(url = %req.url, reference = %reference, commit = %commit, subdir = %subdir,
        "fetched code from git");
    Ok(GitFetched {
        reference,
        commit,
        subdir,
    })
}

/// The meaningful part of git's error output: its `fatal:`/`error:` lines when there are any.
fn git_message(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .collect();
    let text = if lines.is_empty() {
        output.trim().to_string()
    } else {
        lines.join("; ")
    };
    if text.is_empty() {
        "git failed without a message".into()
    } else {
        text
    }
}

/// Runs `git` with the hardened configuration.
struct Git {
    binary: PathBuf,
    home: PathBuf,
    allow_protocol: String,
    deadline: Instant,
    timeout: Duration,
}

impl Git {
    fn new(policy: &GitPolicy, scratch: &Path, deadline: Instant) -> Result<Git, SandboxError> {
        let binary = find_binary(&policy.binary).ok_or_else(|| SandboxError::BinaryMissing {
            command: "git".into(),
            path: policy.binary.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let home = scratch.join("home");
        std::fs::create_dir_all(&home).map_err(|source| SandboxError::WriteBundle {
            id: "git".into(),
            path: home.clone(),
            source,
        })?;
        let allow_protocol = policy
            .schemes
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(":");
        Ok(Git {
            binary,
            home,
            allow_protocol,
            deadline,
            timeout: policy.timeout,
        })
    }

    fn command(&self, args: &[&str], extra_arg: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("PATH", TOOL_DIRS)
            .env("HOME", &self.home)
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", &self.allow_protocol)
            .env("GIT_PROTOCOL_FROM_USER", "0");
        for k in PASS_ENV {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "transfer.fsckObjects=true",
            "-c",
            "fetch.recurseSubmodules=false",
            "-c",
            "submodule.recurse=false",
            "-c",
            "protocol.version=2",
            "-c",
            "init.defaultBranch=main",
        ]);
        cmd.args(args);
        if let Some(p) = extra_arg {
            cmd.arg(p);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// Runs a git command to completion; fails with its output's last lines.
    async fn run(
        &self,
        args: &[&str],
        extra_arg: Option<&Path>,
        watch: Option<(&Path, u64)>,
    ) -> Result<(), SandboxError> {
        let mut tail = Tail::new(ERROR_TAIL_LINES);
        let result = self
            .exec(args, extra_arg, watch, &mut |_, line| tail.push(&line))
            .await;
        result.map_err(|e| match e {
            SandboxError::GitFailed {
                command, status, ..
            } => SandboxError::GitFailed {
                command,
                status,
                output: tail.joined(),
            },
            other => other,
        })
    }

    /// Runs a git command and returns its standard output.
    async fn output(&self, args: &[&str]) -> Result<String, SandboxError> {
        let mut out = String::new();
        self.exec(args, None, None, &mut |s, line| {
            if s == Stream::Stdout && out.len() < 64 * 1024 {
                out.push_str(&line);
                out.push('\n');
            }
        })
        .await?;
        Ok(out)
    }

    async fn exec(
        &self,
        args: &[&str],
        extra_arg: Option<&Path>,
        watch: Option<(&Path, u64)>,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Result<(), SandboxError> {
        // `git init`, `git fetch`...: the first word that is neither an option nor a path.
        let sub = args
            .iter()
            .find(|a| !a.starts_with('-') && !a.contains('/'))
            .copied()
            .unwrap_or("");
        let command = format!("git {sub}");
        let mut child = self
            .command(args, extra_arg)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    SandboxError::BinaryMissing {
                        command: "git".into(),
                        path: self.binary.clone(),
                        source: e,
                    }
                }
                _ => SandboxError::Spawn {
                    command: command.clone(),
                    source: e,
                },
            })?;
        let pgid = child.id();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let kill_group = || {
            if let Some(pid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                // The group is git and every helper it started (upload-pack, remote-https).
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        };
        let run = pump(&mut child, &command, on_line);
        let watcher = watch_size(watch);
        let status = tokio::select! {
            r = run => r?,
            () = tokio::time::sleep(remaining) => {
                kill_group();
                return Err(SandboxError::GitTimeout { seconds: self.timeout.as_secs() });
            }
            limit = watcher => {
                kill_group();
                return Err(SandboxError::GitTooLarge { limit_bytes: limit });
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(SandboxError::GitFailed {
                command,
                status: status.to_string(),
                output: String::new(),
            })
        }
    }
}

/// Resolves once the watched directory grows past its limit (never without a watch).
async fn watch_size(watch: Option<(&Path, u64)>) -> u64 {
    let Some((dir, limit)) = watch else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if dir_size(dir) > limit {
            return limit;
        }
    }
}

/// Bytes of the regular files under `dir` (best effort: unreadable entries count as 0).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

fn find_binary(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(TOOL_DIRS.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schemes: &[GitScheme]) -> GitPolicy {
        GitPolicy {
            schemes: schemes.to_vec(),
            ..GitPolicy::default()
        }
    }

    fn req(url: &str, r: Option<&str>, sub: Option<&str>) -> GitRequest {
        GitRequest {
            url: url.into(),
            reference: r.map(String::from),
            subdir: sub.map(String::from),
        }
    }

    #[test]
    fn urls_follow_the_policy() {
        let https = policy(&[GitScheme::Https]);
        assert!(validate_request(&https, &req("https://example.com/r.git", None, None)).is_ok());
        for bad in [
            "ssh://host/r.git",
            "git@host:r.git",
            "ext::sh -c touch% /tmp/x",
            "git://host/r",
            "--upload-pack=touch /tmp/x",
            "relative/path",
            "",
        ] {
            let e = validate_request(&https, &req(bad, None, None)).expect_err(bad);
            assert!(matches!(e, SandboxError::GitRejected { .. }), "{bad}: {e}");
        }
        let e = validate_request(&https, &req("/srv/repo", None, None)).expect_err("file");
        assert!(e.to_string().contains("allowed: https"), "{e}");
        let file = policy(&[GitScheme::File]);
        assert!(validate_request(&file, &req("/srv/repo", None, None)).is_ok());
        assert!(validate_request(&file, &req("file:///srv/repo", None, None)).is_ok());
        assert!(validate_request(&file, &req("https://x/r", None, None)).is_err());
        assert_eq!("file".parse::<GitScheme>(), Ok(GitScheme::File));
        assert!("ssh".parse::<GitScheme>().is_err());
    }

    #[test]
    fn refs_are_plain_names() {
        let p = policy(&[GitScheme::Https]);
        let u = "https://h/r";
        for good in ["main", "release/1.2", "v1.0.0", "HEAD", &"a".repeat(40)] {
            let (r, _) = validate_request(&p, &req(u, Some(good), None)).expect(good);
            assert_eq!(r, good);
        }
        assert_eq!(
            validate_request(&p, &req(u, None, None))
                .expect("default")
                .0,
            "HEAD"
        );
        for bad in [
            "-x",
            "--upload-pack=x",
            "a..b",
            "main:refs/x",
            "HEAD~1",
            "a b",
            "x@{1}",
            "refs/heads/",
            "x.lock",
            "",
        ] {
            assert!(
                validate_request(&p, &req(u, Some(bad), None)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn subdirs_stay_inside() {
        let p = policy(&[GitScheme::Https]);
        let u = "https://h/r";
        let sub = |s: &str| validate_request(&p, &req(u, None, Some(s))).map(|x| x.1);
        assert_eq!(sub("functions/hello/").expect("ok"), "functions/hello");
        assert_eq!(sub("./a//b").expect("ok"), "a/b");
        assert_eq!(sub("").expect("root"), "");
        for bad in ["../x", "a/../../b", "/etc", "a:b", "a\\b"] {
            assert!(sub(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_keep_fatal_lines() {
        assert_eq!(
            git_message("hint: x\nfatal: couldn't find remote ref nope\n"),
            "fatal: couldn't find remote ref nope"
        );
        assert_eq!(git_message("odd\n"), "odd");
    }

    fn have_git() -> bool {
        find_binary(Path::new("git")).is_some()
    }

    fn sh(dir: &Path, args: &[&str]) {
        let st = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .expect("git");
        assert!(st.success(), "git {args:?}");
    }

    #[tokio::test]
    async fn fetches_a_ref_and_a_subdir_as_a_tar() {
        if !have_git() {
            eprintln!("SKIPPED: git is not installed (scripts/install-deps installs it)");
            return;
        }
        let src = tempfile::tempdir().expect("tempdir");
        let d = src.path();
        sh(d, &["init", "-q"]);
        std::fs::create_dir_all(d.join("fn/hello")).expect("mkdir");
        std::fs::write(d.join("fn/hello/app.py"), "V = 1\n").expect("write");
        std::fs::write(d.join("README"), "top\n").expect("write");
        sh(d, &["add", "."]);
        sh(d, &["commit", "-qm", "one"]);
        sh(d, &["tag", "-a", "v1", "-m", "v1"]);
        std::fs::write(d.join("fn/hello/app.py"), "V = 2\n").expect("write");
        sh(d, &["commit", "-qam", "two"]);

        let p = policy(&[GitScheme::File]);
        let scratch = tempfile::tempdir().expect("scratch");
        let tar = scratch.path().join("code.tar");
        let got = fetch_archive(
            &p,
            &req(d.to_str().expect("utf8"), Some("v1"), Some("fn/hello")),
            &scratch.path().join("work"),
            &tar,
        )
        .await
        .expect("fetch");
        assert_eq!(got.reference, "v1");
        assert_eq!(got.subdir, "fn/hello");
        assert_eq!(got.commit.len(), 40);
        let mut ar = tar::Archive::new(std::fs::File::open(&tar).expect("tar"));
        let mut files = vec![];
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().into_owned();
            let mut text = String::new();
            if e.header().entry_type().is_file() {
                std::io::Read::read_to_string(&mut e, &mut text).expect("read");
            }
            files.push((name, text));
        }
        assert_eq!(files, vec![("app.py".to_string(), "V = 1\n".to_string())]);

        // The default ref is the newest commit; a missing subdir or ref is a clear error.
        let scratch2 = tempfile::tempdir().expect("scratch");
        let url = format!("file://{}", d.display());
        let head = fetch_archive(
            &p,
            &req(&url, None, None),
            scratch2.path(),
            &scratch2.path().join("t.tar"),
        )
        .await
        .expect("head");
        assert_ne!(head.commit, got.commit);
        let scratch3 = tempfile::tempdir().expect("scratch");
        let e = fetch_archive(
            &p,
            &req(&url, Some("main"), Some("nope")),
            scratch3.path(),
            &scratch3.path().join("t.tar"),
        )
        .await
        .expect_err("no subdir");
        assert!(e.to_string().contains("has no directory \"nope\""), "{e}");
        let scratch4 = tempfile::tempdir().expect("scratch");
        let e = fetch_archive(
            &p,
            &req(&url, Some("nosuchbranch"), None),
            scratch4.path(),
            &scratch4.path().join("t.tar"),
        )
        .await
        .expect_err("no ref");
        assert!(e.to_string().contains("nosuchbranch"), "{e}");
        assert_eq!(e.kind(), strata_types::ErrorKind::InvalidArgument);
    }
}
