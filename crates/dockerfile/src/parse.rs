//! Text → [`Dockerfile`]: parser directives, comments, line continuations, keywords and the
//! shape of each instruction's arguments. Nothing is expanded here; values keep their quotes.

use std::collections::BTreeMap;

use crate::error::DockerfileError;
use crate::words::split_words;

/// A parsed Dockerfile: its instructions in order, arguments as written (not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character: `\`, or `` ` `` when the file starts with `# escape=``.
    pub escape: char,
    /// The instructions, in order. The first one that is not `ARG` is a `FROM`.
    pub instructions: Vec<Instruction>,
}

/// One instruction and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    pub command: Command,
}

/// A supported instruction with its arguments as written. Words keep their quotes and escapes;
/// [`crate::plan`] expands them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `FROM image [AS name]`; `name` is lowercased.
    From {
        image: String,
        name: Option<String>,
    },
    /// `ARG NAME[=default] ...`
    Arg(Vec<ArgDecl>),
    Run(CommandLine),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    /// `SHELL ["executable", "parameters"...]`
    Shell(Vec<String>),
    Copy(CopySpec),
    Add(CopySpec),
    /// `(key, value)` pairs, from `ENV K=V ...` or `ENV K V with spaces`.
    Env(Vec<(String, String)>),
    /// `(key, value)` pairs, from `LABEL k=v ...` or `LABEL k v`.
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    /// `MAINTAINER text`, recorded as the label `maintainer`.
    Maintainer(String),
}

impl Command {
    /// The instruction keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From { .. } => "FROM",
            Command::Arg(_) => "ARG",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell(_) => "SHELL",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env(_) => "ENV",
            Command::Label(_) => "LABEL",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Expose(_) => "EXPOSE",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// The default as written, if any.
    pub default: Option<String>,
}

/// The argument of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: one string, run with the stage's SHELL.
    Shell(String),
    /// Exec form: a JSON array of strings, run as is.
    Exec(Vec<String>),
}

/// The arguments of COPY and ADD, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

/// Parses a Dockerfile. Rejects unknown and unsupported instructions, malformed arguments,
/// instructions other than ARG before the first FROM, and a file without FROM.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();

    let (escape, mut i) = parse_directives(&lines)?;
    let mut instructions = Vec::new();
    let mut stage_names: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen_from = false;

    while i < lines.len() {
        let line = i + 1;
        let first = lines[i].trim_start();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        let (head, mut continues) = strip_continuation(first, escape);
        let mut logical = head.to_string();
        while continues && i < lines.len() {
            let next = lines[i];
            i += 1;
            let trimmed = next.trim_start();
            // Comment lines and empty lines inside a continuation are dropped.
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (part, more) = strip_continuation(next, escape);
            logical.push_str(part);
            continues = more;
        }
        let instruction = parse_instruction(line, &logical, escape, seen_from)?;
        if let Command::From {
            name: Some(name), ..
        } = &instruction.command
        {
            if let Some(earlier) = stage_names.insert(name.clone(), line) {
                return Err(DockerfileError::malformed(
                    line,
                    "FROM",
                    format!("stage name \"{name}\" is already used on line {earlier}"),
                ));
            }
        }
        seen_from |= matches!(instruction.command, Command::From { .. });
        instructions.push(instruction);
    }
    if !seen_from {
        return Err(DockerfileError::NoFrom);
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// Reads the parser directives at the top of the file (`# escape=`, `# syntax=`, `# check=`).
/// Returns the escape character and the index of the first line after them.
fn parse_directives(lines: &[&str]) -> Result<(char, usize), DockerfileError> {
    let mut escape = '\\';
    let mut seen: Vec<String> = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let Some((key, value)) = directive(raw) else {
            return Ok((escape, i));
        };
        let line = i + 1;
        if seen.contains(&key) {
            return Err(DockerfileError::malformed(
                line,
                &format!("# {key}="),
                "can only be given once",
            ));
        }
        if key == "escape" {
            escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(DockerfileError::malformed(
                        line,
                        "# escape=",
                        format!("must be \\ or `, not \"{other}\""),
                    ))
                }
            };
        }
        seen.push(key);
    }
    Ok((escape, lines.len()))
}

/// `# key=value` with a known directive key, lowercased; the value is trimmed.
fn directive(raw: &str) -> Option<(String, &str)> {
    let body = raw.trim_start().strip_prefix('#')?;
    let (key, value) = body.split_once('=')?;
    let key = key.trim();
    let mut chars = key.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    let key = key.to_ascii_lowercase();
    let value = value.trim();
    (well_formed && !value.is_empty() && matches!(key.as_str(), "escape" | "syntax" | "check"))
        .then_some((key, value))
}

/// Removes a trailing escape character (and the blanks after it); says whether it was there.
fn strip_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(stripped) => (stripped, true),
        None => (line, false),
    }
}

const RUN_FLAGS: &[&str] = &["mount", "network", "security"];
const COPY_UNSUPPORTED_FLAGS: &[&str] = &[
    "link",
    "parents",
    "exclude",
    "checksum",
    "keep-git-dir",
    "unpack",
];

fn parse_instruction(
    line: usize,
    logical: &str,
    escape: char,
    seen_from: bool,
) -> Result<Instruction, DockerfileError> {
    let logical = logical.trim();
    let (word, rest) = match logical.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (logical, ""),
    };
    let keyword = word.to_ascii_uppercase();
    let hint = match keyword.as_str() {
        "FROM" | "ARG" | "RUN" | "CMD" | "ENTRYPOINT" | "SHELL" | "COPY" | "ADD" | "ENV"
        | "LABEL" | "WORKDIR" | "USER" | "EXPOSE" | "MAINTAINER" => None,
        "ONBUILD" => Some("Strata images have no build triggers"),
        "HEALTHCHECK" => Some("Strata checks instance health itself"),
        "VOLUME" => Some("declare volumes in the function's configuration"),
        "STOPSIGNAL" => Some("Strata stops instances itself"),
        _ => return Err(DockerfileError::UnknownInstruction { line, keyword }),
    };
    if let Some(hint) = hint {
        return Err(DockerfileError::unsupported(line, keyword, Some(hint)));
    }
    if !seen_from && keyword != "FROM" && keyword != "ARG" {
        return Err(DockerfileError::BeforeFrom { line, keyword });
    }
    let kw = keyword.as_str();
    let malformed = |message: &str| DockerfileError::malformed(line, kw, message);

    let command =
        match kw {
            "FROM" => {
                let (flags, rest) = take_flags(rest, escape);
                if let Some((name, _)) = flags.first() {
                    return Err(match name.as_str() {
                        "platform" => DockerfileError::unsupported(
                            line,
                            "FROM --platform",
                            Some("Strata builds for the host's platform"),
                        ),
                        other => unknown_flag(line, kw, other, "FROM takes no flags"),
                    });
                }
                let words = split_words(&rest, escape);
                let name = match words.as_slice() {
                    [_] => None,
                    [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.as_str()),
                    _ => {
                        return Err(malformed(
                            "needs an image and optionally a stage name, \
                         like FROM debian-bookworm AS build",
                        ))
                    }
                };
                let name = match name {
                    None => None,
                    Some(name) if valid_stage_name(name) => Some(name.to_ascii_lowercase()),
                    Some(name) => {
                        return Err(malformed(&format!(
                            "stage name \"{name}\" is invalid; \
                         use a letter followed by letters, digits, '-', '_' or '.'"
                        )))
                    }
                };
                Command::From {
                    image: words[0].clone(),
                    name,
                }
            }
            "ARG" => {
                let words = split_words(rest, escape);
                if words.is_empty() {
                    return Err(malformed(
                        "needs a name, like ARG VERSION or ARG VERSION=1.0",
                    ));
                }
                let mut decls = Vec::new();
                for word in words {
                    let (name, default) = match word.split_once('=') {
                        Some((name, default)) => (name.to_string(), Some(default.to_string())),
                        None => (word, None),
                    };
                    if !valid_arg_name(&name) {
                        return Err(malformed(&format!(
                            "name \"{name}\" is invalid; use letters, digits, '_', '-' or '.'"
                        )));
                    }
                    decls.push(ArgDecl { name, default });
                }
                Command::Arg(decls)
            }
            "RUN" => {
                let (flags, rest) = take_flags(rest, escape);
                if let Some((name, _)) = flags.first() {
                    return Err(if RUN_FLAGS.contains(&name.as_str()) {
                        DockerfileError::unsupported(line, format!("RUN --{name}"), None)
                    } else {
                        unknown_flag(line, kw, name, "RUN takes no flags")
                    });
                }
                reject_heredoc(line, kw, &rest, escape)?;
                match command_line(line, kw, &rest)? {
                    CommandLine::Exec(argv) if argv.is_empty() => {
                        return Err(malformed("needs a command, not an empty array"))
                    }
                    run => Command::Run(run),
                }
            }
            "CMD" => Command::Cmd(command_line(line, kw, rest)?),
            "ENTRYPOINT" => Command::Entrypoint(command_line(line, kw, rest)?),
            "SHELL" => match json_array(line, kw, rest)? {
                Some(argv) if !argv.is_empty() => Command::Shell(argv),
                _ => return Err(malformed(
                    "needs a non-empty JSON array of strings, like SHELL [\"/bin/bash\", \"-c\"]",
                )),
            },
            "COPY" | "ADD" => {
                let spec = copy_spec(line, kw, rest, escape)?;
                if kw == "COPY" {
                    Command::Copy(spec)
                } else {
                    Command::Add(spec)
                }
            }
            "ENV" => Command::Env(name_values(line, kw, rest, escape)?),
            "LABEL" => Command::Label(name_values(line, kw, rest, escape)?),
            "WORKDIR" => {
                if rest.is_empty() {
                    return Err(malformed("needs a path, like WORKDIR /app"));
                }
                Command::Workdir(rest.to_string())
            }
            "USER" => match split_words(rest, escape).as_slice() {
                [user] => Command::User(user.clone()),
                _ => {
                    return Err(malformed(
                        "needs exactly one user[:group], like USER app or USER 1000:1000",
                    ))
                }
            },
            "EXPOSE" => {
                let ports = split_words(rest, escape);
                if ports.is_empty() {
                    return Err(malformed(
                        "needs at least one port, like EXPOSE 8080 or EXPOSE 53/udp",
                    ));
                }
                Command::Expose(ports)
            }
            _ => {
                // MAINTAINER, the only keyword left.
                if rest.is_empty() {
                    return Err(malformed("needs a name"));
                }
                Command::Maintainer(rest.to_string())
            }
        };
    Ok(Instruction { line, command })
}

fn unknown_flag(line: usize, keyword: &str, flag: &str, takes: &str) -> DockerfileError {
    DockerfileError::malformed(
        line,
        keyword,
        format!("has an unknown flag --{flag}; {takes}"),
    )
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_arg_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Splits leading `--name[=value]` words off `rest`. A lone `--` ends the flags.
fn take_flags(rest: &str, escape: char) -> (Vec<(String, Option<String>)>, String) {
    let mut flags = Vec::new();
    let mut rest = rest.trim_start();
    while rest.starts_with("--") {
        let end = word_end(rest, escape);
        let word = &rest[2..end];
        rest = rest[end..].trim_start();
        if word.is_empty() {
            break;
        }
        let (name, value) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (word, None),
        };
        flags.push((name.to_ascii_lowercase(), value));
    }
    (flags, rest.to_string())
}

/// The byte index where the first word of `text` ends: the first whitespace outside quotes.
fn word_end(text: &str, escape: char) -> usize {
    let mut quote = None;
    let mut escaped = false;
    for (i, ch) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if ch == escape && quote != Some('\'') {
            escaped = true;
        } else if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
        } else if ch == '"' || ch == '\'' {
            quote = Some(ch);
        } else if ch.is_whitespace() {
            return i;
        }
    }
    text.len()
}

/// Rejects a heredoc (`<<EOF`, `<<-EOF`, `2<<EOF`) among the unquoted words of `rest`.
fn reject_heredoc(
    line: usize,
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<(), DockerfileError> {
    for word in split_words(rest, escape) {
        let body = word.trim_start_matches(|c: char| c.is_ascii_digit());
        if let Some(after) = body.strip_prefix("<<") {
            let name = after.strip_prefix('-').unwrap_or(after);
            if !name.is_empty() && !name.contains('<') {
                return Err(DockerfileError::unsupported(
                    line,
                    format!("{keyword} with a heredoc ({word})"),
                    Some("put the text in a file in the build context and COPY it"),
                ));
            }
        }
    }
    Ok(())
}

/// Exec form when `rest` is a valid JSON array of strings; otherwise shell form, as Docker does.
/// A valid JSON array holding something other than strings is an error.
fn command_line(line: usize, keyword: &str, rest: &str) -> Result<CommandLine, DockerfileError> {
    if let Some(argv) = json_array(line, keyword, rest)? {
        return Ok(CommandLine::Exec(argv));
    }
    if rest.is_empty() {
        return Err(DockerfileError::malformed(line, keyword, "needs a command"));
    }
    Ok(CommandLine::Shell(rest.to_string()))
}

/// `Some(strings)` when `rest` is a JSON array of strings, `None` when it is not JSON at all.
fn json_array(
    line: usize,
    keyword: &str,
    rest: &str,
) -> Result<Option<Vec<String>>, DockerfileError> {
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(rest)
    else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Ok(s),
            other => Err(DockerfileError::malformed(
                line,
                keyword,
                format!("exec form must be a JSON array of strings, found {other}"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn copy_spec(
    line: usize,
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<CopySpec, DockerfileError> {
    let (flags, rest) = take_flags(rest, escape);
    let mut spec = CopySpec {
        from: None,
        chown: None,
        chmod: None,
        sources: Vec::new(),
        dest: String::new(),
    };
    for (name, value) in flags {
        let slot = match name.as_str() {
            "from" => &mut spec.from,
            "chown" => &mut spec.chown,
            "chmod" => &mut spec.chmod,
            known if COPY_UNSUPPORTED_FLAGS.contains(&known) => {
                return Err(DockerfileError::unsupported(
                    line,
                    format!("{keyword} --{known}"),
                    None,
                ))
            }
            other => {
                return Err(unknown_flag(
                    line,
                    keyword,
                    other,
                    &format!("{keyword} takes --from, --chown and --chmod"),
                ))
            }
        };
        let Some(value) = value else {
            return Err(DockerfileError::malformed(
                line,
                keyword,
                format!(
                    "--{name} needs a value, like --{name}={}",
                    flag_example(&name)
                ),
            ));
        };
        if slot.replace(value).is_some() {
            return Err(DockerfileError::malformed(
                line,
                keyword,
                format!("--{name} is given more than once"),
            ));
        }
    }
    reject_heredoc(line, keyword, &rest, escape)?;
    let mut args = match json_array(line, keyword, &rest)? {
        Some(args) => args,
        None => split_words(&rest, escape),
    };
    if args.len() < 2 {
        return Err(DockerfileError::malformed(
            line,
            keyword,
            "needs at least one source and a destination",
        ));
    }
    spec.dest = args.pop().unwrap_or_default();
    spec.sources = args;
    for source in &spec.sources {
        reject_url(line, keyword, source)?;
    }
    Ok(spec)
}

/// Rejects a COPY or ADD source that is a URL or a git address; Strata builds read only the build
/// context and other stages or images.
pub(crate) fn reject_url(line: usize, keyword: &str, source: &str) -> Result<(), DockerfileError> {
    let lower = source.trim_matches(['"', '\'']).to_ascii_lowercase();
    let is_url = ["http://", "https://", "git://", "ssh://", "git@"]
        .iter()
        .any(|prefix| lower.starts_with(prefix));
    if is_url {
        return Err(DockerfileError::unsupported(
            line,
            format!("{keyword} from a URL ({source})"),
            Some("download it in a RUN step, or put the file in the build context"),
        ));
    }
    Ok(())
}

fn flag_example(name: &str) -> &'static str {
    match name {
        "from" => "build",
        "chown" => "1000:1000",
        _ => "0755",
    }
}

/// `KEY=VALUE ...` pairs, or the older `KEY VALUE with spaces` when the first word has no `=`.
fn name_values(
    line: usize,
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<Vec<(String, String)>, DockerfileError> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(DockerfileError::malformed(
            line,
            keyword,
            format!("needs at least one pair, like {keyword} KEY=value"),
        ));
    };
    if !first.contains('=') {
        let (key, value) = match rest.split_once(char::is_whitespace) {
            Some((key, value)) => (key, value.trim_start()),
            None => (rest, ""),
        };
        if value.is_empty() {
            return Err(DockerfileError::malformed(
                line,
                keyword,
                format!("needs a value for \"{key}\", like {keyword} {key}=value"),
            ));
        }
        return Ok(vec![(key.to_string(), value.to_string())]);
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => Err(DockerfileError::malformed(
                line,
                keyword,
                format!("has \"{word}\" without '='; write {keyword} KEY=value KEY2=value2"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(text: &str) -> Vec<(usize, Command)> {
        parse(text)
            .expect("parses")
            .instructions
            .into_iter()
            .map(|i| (i.line, i.command))
            .collect()
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("should fail").to_string()
    }

    #[test]
    fn comments_continuations_and_line_numbers() {
        let text = "# a comment\n\nfrom base AS Build\n  # indented comment\nRUN apt-get update && \\\n    # dropped comment\n\n    apt-get install -y curl\nrun echo done\n";
        let got = commands(text);
        assert_eq!(
            got,
            vec![
                (
                    3,
                    Command::From {
                        image: "base".into(),
                        name: Some("build".into())
                    }
                ),
                (
                    5,
                    Command::Run(CommandLine::Shell(
                        "apt-get update &&     apt-get install -y curl".into()
                    ))
                ),
                (9, Command::Run(CommandLine::Shell("echo done".into()))),
            ]
        );
    }

    #[test]
    fn escape_directive_switches_continuation_character() {
        let text = "# syntax=docker/dockerfile:1\n# escape=`\nFROM base\nRUN dir C:\\ `\n  /w\n";
        let df = parse(text).expect("parses");
        assert_eq!(df.escape, '`');
        assert_eq!(
            df.instructions[1].command,
            Command::Run(CommandLine::Shell("dir C:\\   /w".into()))
        );
        // After the first non-directive line, `# escape=` is an ordinary comment.
        let df = parse("FROM base\n# escape=`\nRUN a \\\n b").expect("parses");
        assert_eq!(df.escape, '\\');
        assert_eq!(
            err("# escape=x\nFROM a"),
            "line 1: # escape= must be \\ or `, not \"x\""
        );
        assert_eq!(
            err("# escape=`\n# escape=\\\nFROM a"),
            "line 2: # escape= can only be given once"
        );
    }

    #[test]
    fn exec_and_shell_forms() {
        let got = commands(
            "FROM a\nCMD [\"python3\", \"app.py\"]\nCMD [\"broken\", 'x']\nENTRYPOINT [ ]\n",
        );
        assert_eq!(
            got[1].1,
            Command::Cmd(CommandLine::Exec(vec!["python3".into(), "app.py".into()]))
        );
        // Not valid JSON: shell form, as Docker does.
        assert_eq!(
            got[2].1,
            Command::Cmd(CommandLine::Shell("[\"broken\", 'x']".into()))
        );
        assert_eq!(got[3].1, Command::Entrypoint(CommandLine::Exec(vec![])));
        assert_eq!(
            err("FROM a\nCMD [\"a\", 1]"),
            "line 2: CMD exec form must be a JSON array of strings, found 1"
        );
        assert_eq!(
            err("FROM a\nSHELL /bin/bash -c"),
            "line 2: SHELL needs a non-empty JSON array of strings, like SHELL [\"/bin/bash\", \"-c\"]"
        );
    }

    #[test]
    fn env_label_and_arg_forms() {
        let got = commands("ARG V=1 W\nFROM a\nENV A=1 B=\"two words\"\nENV LEGACY some value here\nLABEL \"x.y\"=z\n");
        assert_eq!(
            got[0].1,
            Command::Arg(vec![
                ArgDecl {
                    name: "V".into(),
                    default: Some("1".into())
                },
                ArgDecl {
                    name: "W".into(),
                    default: None
                },
            ])
        );
        assert_eq!(
            got[2].1,
            Command::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into())
            ])
        );
        assert_eq!(
            got[3].1,
            Command::Env(vec![("LEGACY".into(), "some value here".into())])
        );
        assert_eq!(
            got[4].1,
            Command::Label(vec![("\"x.y\"".into(), "z".into())])
        );
        assert_eq!(
            err("FROM a\nENV A=1 B"),
            "line 2: ENV has \"B\" without '='; write ENV KEY=value KEY2=value2"
        );
        assert_eq!(
            err("FROM a\nENV A"),
            "line 2: ENV needs a value for \"A\", like ENV A=value"
        );
    }

    #[test]
    fn copy_flags_and_forms() {
        let got = commands("FROM a\nCOPY --from=build --chown=app:app --chmod=755 a b /dst/\nADD [\"x y\", \"/z\"]\n");
        assert_eq!(
            got[1].1,
            Command::Copy(CopySpec {
                from: Some("build".into()),
                chown: Some("app:app".into()),
                chmod: Some("755".into()),
                sources: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
            })
        );
        let Command::Add(spec) = &got[2].1 else {
            panic!("ADD expected")
        };
        assert_eq!(spec.sources, ["x y"]);
        assert_eq!(
            err("FROM a\nCOPY --link a b"),
            "line 2: COPY --link is not supported"
        );
        assert_eq!(
            err("FROM a\nCOPY --frm=x a b"),
            "line 2: COPY has an unknown flag --frm; COPY takes --from, --chown and --chmod"
        );
        assert_eq!(
            err("FROM a\nCOPY --from a b"),
            "line 2: COPY --from needs a value, like --from=build"
        );
        assert_eq!(
            err("FROM a\nCOPY onlyonearg"),
            "line 2: COPY needs at least one source and a destination"
        );
    }

    #[test]
    fn rejections() {
        let cases: &[(&str, &str)] = &[
            ("FROM a\nFROBNICATE x", "line 2: unknown instruction \"FROBNICATE\""),
            ("FROM a\nonbuild RUN x", "line 2: ONBUILD is not supported (Strata images have no build triggers)"),
            ("FROM a\nVOLUME /data", "line 2: VOLUME is not supported (declare volumes in the function's configuration)"),
            ("FROM a\nRUN --mount=type=cache,target=/x make", "line 2: RUN --mount is not supported"),
            ("FROM a\nRUN --network=none make", "line 2: RUN --network is not supported"),
            ("FROM a\nRUN <<EOF\necho\nEOF", "line 2: RUN with a heredoc (<<EOF) is not supported (put the text in a file in the build context and COPY it)"),
            ("FROM a\nCOPY <<-EOT /x", "line 2: COPY with a heredoc (<<-EOT) is not supported (put the text in a file in the build context and COPY it)"),
            ("FROM --platform=linux/arm64 a", "line 1: FROM --platform is not supported (Strata builds for the host's platform)"),
            ("RUN x\nFROM a", "line 1: RUN comes before the first FROM; only ARG may"),
            ("ARG A\n# only args\n", "the Dockerfile has no FROM instruction; start a stage with FROM <image>"),
            ("", "the Dockerfile has no FROM instruction; start a stage with FROM <image>"),
            ("FROM a AS b c", "line 1: FROM needs an image and optionally a stage name, like FROM debian-bookworm AS build"),
            ("FROM a AS 1x", "line 1: FROM stage name \"1x\" is invalid; use a letter followed by letters, digits, '-', '_' or '.'"),
            ("FROM a AS x\nFROM b AS X", "line 2: FROM stage name \"x\" is already used on line 1"),
            ("FROM a\nUSER", "line 2: USER needs exactly one user[:group], like USER app or USER 1000:1000"),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), *want, "parsing {text:?}");
        }
        // Here-strings and shift operators are not heredocs.
        commands("FROM a\nRUN cat <<<word && echo $((1<<2)) \"<<EOF\"");
    }

    #[test]
    fn crlf_and_bom() {
        let got = commands("\u{feff}FROM a\r\nRUN x \\\r\n  y\r\n");
        assert_eq!(
            got[1],
            (2, Command::Run(CommandLine::Shell("x   y".into())))
        );
    }
}
