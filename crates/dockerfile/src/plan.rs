//! [`Dockerfile`] → [`BuildPlan`]: variable expansion, ARG scopes, stage references and the
//! image configuration each stage ends with. Pure: the only outside knowledge is the `resolve`
//! callback that says which images and runtimes exist.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_types::{ImageConfig, DEFAULT_PATH};

use crate::error::DockerfileError;
use crate::parse::{reject_url, ArgDecl, Command, CommandLine, CopySpec, Dockerfile};
use crate::words::expand;

/// What to build: the stages in Dockerfile order. The last stage is the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    pub stages: Vec<StagePlan>,
}

/// One `FROM` and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlan {
    /// Position of the stage in the Dockerfile, from 0.
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    pub base: Base,
    /// The line of the stage's `FROM`.
    pub base_line: usize,
    /// One step per instruction after `FROM`.
    pub steps: Vec<Step>,
    /// The image configuration the stage ends with.
    pub config: ImageConfig,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    /// An image or runtime, by its expanded name, e.g. `debian-bookworm` or `python3@2`.
    Image(String),
    /// The result of an earlier stage.
    Stage(usize),
    /// An empty filesystem.
    Scratch,
}

/// One instruction of a stage, ready to execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based line of the instruction.
    pub line: usize,
    /// The keyword and its expanded arguments, e.g. `COPY --from=build /out/app /usr/bin/`. Shown
    /// during builds and part of the step's cache identity.
    pub text: String,
    pub action: Action,
}

/// What a step does to the stage's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Run a process in the stage's filesystem.
    Run {
        /// The command; shell form is already wrapped in the stage's SHELL.
        argv: Vec<String>,
        /// The whole process environment: the config's env, then in-scope ARG values that no ENV
        /// overrides.
        env: Vec<(String, String)>,
        /// Absolute working directory.
        workdir: String,
        /// `user[:group]`; empty means root.
        user: String,
    },
    /// Copy files into the stage (COPY and ADD).
    Copy {
        /// Expanded, cleaned, relative to the source root; may hold glob characters `* ? [ ]`.
        sources: Vec<String>,
        /// Absolute, resolved against WORKDIR; ends with `/` when written as a directory (`dir/`,
        /// `.`).
        dest: String,
        from: CopyFrom,
        chown: Option<String>,
        chmod: Option<u32>,
        /// ADD: local tar archives are unpacked into `dest`.
        extract: bool,
    },
    /// Make the working directory (WORKDIR) if it does not exist.
    Workdir {
        /// Absolute path.
        path: String,
        /// The user at that point, `user[:group]`; empty means root.
        user: String,
    },
    /// ENV, ARG, USER, LABEL, EXPOSE, CMD, ENTRYPOINT, SHELL, MAINTAINER: no filesystem change.
    Config,
}

/// Where COPY and ADD read their sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyFrom {
    /// The build context.
    Context,
    /// The result of an earlier stage.
    Stage(usize),
    /// An image or runtime, by its expanded name.
    Image(String),
}

impl BuildPlan {
    /// The stages the last stage needs, through `FROM` and `COPY --from`, itself included; in
    /// ascending order. Other stages need not be built.
    pub fn needed_stages(&self) -> Vec<usize> {
        let mut needed = vec![false; self.stages.len()];
        let mut todo: Vec<usize> = self.stages.len().checked_sub(1).into_iter().collect();
        while let Some(i) = todo.pop() {
            if needed[i] {
                continue;
            }
            needed[i] = true;
            let stage = &self.stages[i];
            if let Base::Stage(j) = stage.base {
                todo.push(j);
            }
            for step in &stage.steps {
                if let Action::Copy {
                    from: CopyFrom::Stage(j),
                    ..
                } = step.action
                {
                    todo.push(j);
                }
            }
        }
        (0..needed.len()).filter(|&i| needed[i]).collect()
    }
}

/// The shell that wraps shell-form RUN, CMD and ENTRYPOINT until SHELL changes it.
fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// Expands variables and plans every stage.
///
/// `build_args` override ARG defaults. `resolve` returns the configuration of an image or runtime
/// by name, or `None` when there is no such thing.
pub fn plan(
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
    resolve: &dyn Fn(&str) -> Option<ImageConfig>,
) -> Result<BuildPlan, DockerfileError> {
    let stage_names = df
        .instructions
        .iter()
        .filter_map(|i| match &i.command {
            Command::From { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut planner = Planner {
        escape: df.escape,
        build_args,
        resolve,
        stage_names,
        stages: Vec::new(),
        shells: Vec::new(),
        globals: Vec::new(),
    };
    let mut current: Option<Stage> = None;
    for instruction in &df.instructions {
        let line = instruction.line;
        match (&instruction.command, current.as_mut()) {
            (Command::From { image, name }, _) => {
                if let Some(done) = current.take() {
                    planner.finish(done);
                }
                current = Some(planner.start(line, image, name.clone())?);
            }
            (Command::Arg(decls), None) => planner.global_args(line, decls)?,
            (command, Some(stage)) => {
                let step = planner.step(stage, line, command)?;
                stage.plan.steps.push(step);
            }
            // The parser lets only ARG come before the first FROM.
            (command, None) => {
                return Err(DockerfileError::BeforeFrom {
                    line,
                    keyword: command.keyword().to_string(),
                })
            }
        }
    }
    match current {
        Some(done) => planner.finish(done),
        None => return Err(DockerfileError::NoFrom),
    }
    Ok(BuildPlan {
        stages: planner.stages,
    })
}

/// ARGs in scope, in declaration order; `None` for an ARG declared without any value.
type Args = Vec<(String, Option<String>)>;

fn set_arg(args: &mut Args, name: &str, value: Option<String>) {
    match args.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => args.push((name.to_string(), value)),
    }
}

fn arg_value<'a>(args: &'a Args, name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
}

/// A stage being planned.
struct Stage {
    plan: StagePlan,
    shell: Vec<String>,
    args: Args,
    /// Whether CMD was set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl Stage {
    /// The variables expansion sees: ENV (including the base's) wins over ARG.
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| {
            self.plan
                .config
                .get_env(name)
                .or_else(|| arg_value(&self.args, name))
                .map(str::to_string)
        }
    }

    fn workdir(&self) -> &str {
        match self.plan.config.workdir.as_str() {
            "" => "/",
            dir => dir,
        }
    }
}

/// What a stage reference (FROM, COPY --from) names.
enum Reference {
    Stage(usize),
    Image(String, ImageConfig),
}

struct Planner<'a> {
    escape: char,
    build_args: &'a BTreeMap<String, String>,
    resolve: &'a dyn Fn(&str) -> Option<ImageConfig>,
    /// The `AS` name of every stage, by index.
    stage_names: Vec<Option<String>>,
    stages: Vec<StagePlan>,
    /// The SHELL each finished stage ends with; a stage built on it starts with it.
    shells: Vec<Vec<String>>,
    /// ARGs declared before the first FROM.
    globals: Args,
}

impl Planner<'_> {
    fn expand(
        &self,
        line: usize,
        keyword: &str,
        word: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, DockerfileError> {
        expand(word, self.escape, lookup).map_err(|source| DockerfileError::Expansion {
            line,
            keyword: keyword.to_string(),
            word: word.to_string(),
            source,
        })
    }

    /// The value an ARG gets: the build-arg, else its expanded default, else (inside a stage)
    /// the value of the global ARG of the same name.
    fn arg_value(
        &self,
        line: usize,
        decl: &ArgDecl,
        lookup: &dyn Fn(&str) -> Option<String>,
        in_stage: bool,
    ) -> Result<Option<String>, DockerfileError> {
        if let Some(value) = self.build_args.get(&decl.name) {
            return Ok(Some(value.clone()));
        }
        if let Some(default) = &decl.default {
            return self.expand(line, "ARG", default, lookup).map(Some);
        }
        Ok(if in_stage {
            arg_value(&self.globals, &decl.name).map(str::to_string)
        } else {
            None
        })
    }

    fn global_args(&mut self, line: usize, decls: &[ArgDecl]) -> Result<(), DockerfileError> {
        for decl in decls {
            let globals = &self.globals;
            let lookup = |name: &str| arg_value(globals, name).map(str::to_string);
            let value = self.arg_value(line, decl, &lookup, false)?;
            set_arg(&mut self.globals, &decl.name, value);
        }
        Ok(())
    }

    fn start(
        &self,
        line: usize,
        image: &str,
        name: Option<String>,
    ) -> Result<Stage, DockerfileError> {
        let index = self.stages.len();
        let globals = &self.globals;
        let lookup = |name: &str| arg_value(globals, name).map(str::to_string);
        let expanded = self.expand(line, "FROM", image, &lookup)?;
        if expanded.is_empty() {
            return Err(DockerfileError::malformed(
                line,
                "FROM",
                format!("image \"{image}\" is empty after expansion; give the ARG a value"),
            ));
        }
        let (base, mut config, shell) = if expanded.eq_ignore_ascii_case("scratch") {
            (Base::Scratch, ImageConfig::default(), default_shell())
        } else {
            match self.reference(line, &format!("FROM \"{expanded}\""), &expanded, index)? {
                Some(Reference::Stage(j)) => (
                    Base::Stage(j),
                    self.stages[j].config.clone(),
                    self.shells[j].clone(),
                ),
                Some(Reference::Image(name, config)) => {
                    (Base::Image(name), config, default_shell())
                }
                None => {
                    return Err(DockerfileError::UnknownBase {
                        line,
                        name: expanded,
                    })
                }
            }
        };
        // Every stage has a PATH, as in Docker.
        if config.get_env("PATH").is_none() {
            config.set_env("PATH", DEFAULT_PATH);
        }
        Ok(Stage {
            plan: StagePlan {
                index,
                name,
                base,
                base_line: line,
                steps: Vec::new(),
                config,
            },
            shell,
            args: Vec::new(),
            cmd_set: false,
        })
    }

    fn finish(&mut self, stage: Stage) {
        self.stages.push(stage.plan);
        self.shells.push(stage.shell);
    }

    /// Resolves a stage name, a stage index or an image name, in that order. `Ok(None)` when
    /// nothing has that name. `reference` is how the error message quotes the reference.
    fn reference(
        &self,
        line: usize,
        reference: &str,
        name: &str,
        current: usize,
    ) -> Result<Option<Reference>, DockerfileError> {
        let order_error = |problem: String| DockerfileError::StageReference {
            line,
            reference: reference.to_string(),
            problem,
        };
        let later = |j: usize| {
            if j == current {
                "refers to the stage it is in; a stage can only use stages defined before it"
                    .to_string()
            } else {
                format!(
                    "refers to stage {j}, which comes later; \
                     a stage can only use stages defined before it"
                )
            }
        };
        let lower = name.to_ascii_lowercase();
        if let Some(j) = self
            .stage_names
            .iter()
            .position(|n| n.as_deref() == Some(lower.as_str()))
        {
            return if j < current {
                Ok(Some(Reference::Stage(j)))
            } else {
                Err(order_error(later(j)))
            };
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return match name.parse::<usize>() {
                Ok(j) if j < current => Ok(Some(Reference::Stage(j))),
                Ok(j) if j < self.stage_names.len() => Err(order_error(later(j))),
                _ => Err(order_error(format!(
                    "is not a stage: stages are numbered from 0 and this Dockerfile has {}",
                    self.stage_names.len()
                ))),
            };
        }
        Ok((self.resolve)(name).map(|config| Reference::Image(name.to_string(), config)))
    }

    fn step(
        &self,
        stage: &mut Stage,
        line: usize,
        command: &Command,
    ) -> Result<Step, DockerfileError> {
        let keyword = command.keyword();
        let (text, action) = match command {
            Command::Arg(decls) => {
                let mut shown = Vec::new();
                for decl in decls {
                    let value = self.arg_value(line, decl, &stage.lookup(), true)?;
                    shown.push(match &value {
                        Some(v) => format!("{}={}", decl.name, display_word(v)),
                        None => decl.name.clone(),
                    });
                    set_arg(&mut stage.args, &decl.name, value);
                }
                (format!("ARG {}", shown.join(" ")), Action::Config)
            }
            Command::From { .. } => unreachable_from(line)?,
            Command::Run(cmd) => {
                let config = &stage.plan.config;
                let mut env = config.env.clone();
                for (name, value) in &stage.args {
                    if let (Some(value), None) = (value, config.get_env(name)) {
                        env.push((name.clone(), value.clone()));
                    }
                }
                let action = Action::Run {
                    argv: argv(cmd, &stage.shell),
                    env,
                    workdir: stage.workdir().to_string(),
                    user: config.user.clone(),
                };
                (format!("RUN {}", display_command(cmd)), action)
            }
            Command::Cmd(cmd) => {
                let argv = argv(cmd, &stage.shell);
                stage.plan.config.cmd = (!argv.is_empty()).then_some(argv);
                stage.cmd_set = true;
                (format!("CMD {}", display_command(cmd)), Action::Config)
            }
            Command::Entrypoint(cmd) => {
                let argv = argv(cmd, &stage.shell);
                stage.plan.config.entrypoint = (!argv.is_empty()).then_some(argv);
                if !stage.cmd_set {
                    // A new entrypoint drops the CMD inherited from the base.
                    stage.plan.config.cmd = None;
                }
                (
                    format!("ENTRYPOINT {}", display_command(cmd)),
                    Action::Config,
                )
            }
            Command::Shell(shell) => {
                stage.shell = shell.clone();
                (format!("SHELL {}", json_array(shell)), Action::Config)
            }
            Command::Copy(spec) => self.copy(stage, line, "COPY", spec)?,
            Command::Add(spec) => self.copy(stage, line, "ADD", spec)?,
            Command::Env(pairs) => {
                let pairs = self.pairs(line, keyword, pairs, &stage.lookup())?;
                for (key, value) in &pairs {
                    stage.plan.config.set_env(key, value);
                }
                (format!("ENV {}", display_pairs(&pairs)), Action::Config)
            }
            Command::Label(pairs) => {
                let pairs = self.pairs(line, keyword, pairs, &stage.lookup())?;
                for (key, value) in &pairs {
                    stage.plan.config.labels.insert(key.clone(), value.clone());
                }
                (format!("LABEL {}", display_pairs(&pairs)), Action::Config)
            }
            Command::Workdir(raw) => {
                let dir = self.expand(line, keyword, raw, &stage.lookup())?;
                if dir.is_empty() {
                    return Err(empty_after_expansion(line, keyword, raw));
                }
                let path = absolute(stage.workdir(), &dir);
                stage.plan.config.workdir = path.clone();
                let user = stage.plan.config.user.clone();
                (format!("WORKDIR {dir}"), Action::Workdir { path, user })
            }
            Command::User(raw) => {
                let user = self.expand(line, keyword, raw, &stage.lookup())?;
                if user.is_empty() {
                    return Err(empty_after_expansion(line, keyword, raw));
                }
                stage.plan.config.user = user.clone();
                (format!("USER {}", display_word(&user)), Action::Config)
            }
            Command::Expose(words) => {
                let mut shown = Vec::new();
                for word in words {
                    let expanded = self.expand(line, keyword, word, &stage.lookup())?;
                    for port in expanded.split_whitespace() {
                        let port = normalize_port(port).map_err(|message| {
                            DockerfileError::malformed(line, keyword, message)
                        })?;
                        if !stage.plan.config.exposed_ports.contains(&port) {
                            stage.plan.config.exposed_ports.push(port);
                        }
                    }
                    shown.push(expanded);
                }
                (format!("EXPOSE {}", shown.join(" ")), Action::Config)
            }
            Command::Maintainer(text) => {
                stage
                    .plan
                    .config
                    .labels
                    .insert("maintainer".to_string(), text.clone());
                (format!("MAINTAINER {text}"), Action::Config)
            }
        };
        Ok(Step { line, text, action })
    }

    fn pairs(
        &self,
        line: usize,
        keyword: &str,
        pairs: &[(String, String)],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, DockerfileError> {
        // Every pair sees the variables as they were before the instruction, as in Docker.
        pairs
            .iter()
            .map(|(key, value)| {
                let key_out = self.expand(line, keyword, key, lookup)?;
                if key_out.is_empty() {
                    return Err(DockerfileError::malformed(
                        line,
                        keyword,
                        format!("has an empty name in \"{key}={value}\""),
                    ));
                }
                Ok((key_out, self.expand(line, keyword, value, lookup)?))
            })
            .collect()
    }

    fn copy(
        &self,
        stage: &Stage,
        line: usize,
        keyword: &str,
        spec: &CopySpec,
    ) -> Result<(String, Action), DockerfileError> {
        let lookup = stage.lookup();
        let mut text = keyword.to_string();
        let mut flag =
            |name: &str, raw: &Option<String>| -> Result<Option<String>, DockerfileError> {
                let Some(raw) = raw else { return Ok(None) };
                let value = self.expand(line, keyword, raw, &lookup)?;
                if value.is_empty() {
                    return Err(empty_after_expansion(
                        line,
                        keyword,
                        &format!("--{name}={raw}"),
                    ));
                }
                text.push_str(&format!(" --{name}={}", display_word(&value)));
                Ok(Some(value))
            };
        let from = flag("from", &spec.from)?;
        let chown = flag("chown", &spec.chown)?;
        let chmod = flag("chmod", &spec.chmod)?;

        let from = match from {
            None => CopyFrom::Context,
            Some(name) => {
                let reference = format!("{keyword} --from=\"{name}\"");
                match self.reference(line, &reference, &name, stage.plan.index)? {
                    Some(Reference::Stage(j)) => CopyFrom::Stage(j),
                    Some(Reference::Image(name, _)) => CopyFrom::Image(name),
                    None => {
                        return Err(DockerfileError::UnknownCopySource {
                            line,
                            keyword: keyword.to_string(),
                            name,
                        })
                    }
                }
            }
        };
        let chmod = match chmod {
            None => None,
            Some(mode) => Some(parse_mode(&mode).ok_or_else(|| {
                DockerfileError::malformed(
                    line,
                    keyword,
                    format!("--chmod=\"{mode}\" is not an octal mode like 0755"),
                )
            })?),
        };

        let mut sources = Vec::new();
        for raw in &spec.sources {
            let source = self.expand(line, keyword, raw, &lookup)?;
            if source.is_empty() {
                return Err(empty_after_expansion(line, keyword, raw));
            }
            reject_url(line, keyword, &source)?;
            text.push(' ');
            text.push_str(&display_word(&source));
            let cleaned = relative_source(&source).ok_or_else(|| {
                DockerfileError::malformed(
                    line,
                    keyword,
                    format!("source \"{source}\" points outside the source root"),
                )
            })?;
            sources.push(cleaned);
        }
        let dest = self.expand(line, keyword, &spec.dest, &lookup)?;
        if dest.is_empty() {
            return Err(empty_after_expansion(line, keyword, &spec.dest));
        }
        text.push(' ');
        text.push_str(&display_word(&dest));
        let is_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
        let mut dest = absolute(stage.workdir(), &dest);
        if is_dir && !dest.ends_with('/') {
            dest.push('/');
        }
        if sources.len() > 1 && !dest.ends_with('/') {
            return Err(DockerfileError::malformed(
                line,
                keyword,
                format!(
                    "has several sources, so the destination must be a directory \
                     ending in '/', like {dest}/"
                ),
            ));
        }
        let action = Action::Copy {
            sources,
            dest,
            from,
            chown,
            chmod,
            extract: keyword == "ADD",
        };
        Ok((text, action))
    }
}

/// FROM never reaches [`Planner::step`]; this keeps that promise checked without a panic.
fn unreachable_from(line: usize) -> Result<(String, Action), DockerfileError> {
    Err(DockerfileError::malformed(
        line,
        "FROM",
        "cannot be planned as a step",
    ))
}

fn empty_after_expansion(line: usize, keyword: &str, raw: &str) -> DockerfileError {
    DockerfileError::malformed(line, keyword, format!("\"{raw}\" is empty after expansion"))
}

/// The argv of RUN, CMD or ENTRYPOINT: exec form as is, shell form wrapped in `shell`.
fn argv(cmd: &CommandLine, shell: &[String]) -> Vec<String> {
    match cmd {
        CommandLine::Exec(argv) => argv.clone(),
        CommandLine::Shell(line) => {
            let mut argv = shell.to_vec();
            argv.push(line.clone());
            argv
        }
    }
}

fn display_command(cmd: &CommandLine) -> String {
    match cmd {
        CommandLine::Shell(line) => line.clone(),
        CommandLine::Exec(argv) => json_array(argv),
    }
}

fn json_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::Value::String(s.clone()).to_string())
        .collect();
    format!("[{}]", quoted.join(", "))
}

fn display_pairs(pairs: &[(String, String)]) -> String {
    let shown: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", display_word(k), display_word(v)))
        .collect();
    shown.join(" ")
}

/// `word` as written in a Dockerfile: bare when that is unambiguous, else double-quoted.
fn display_word(word: &str) -> String {
    let plain = !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '$'));
    if plain {
        return word.to_string();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        if matches!(c, '"' | '\\' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `path` made absolute against `dir` and cleaned (`.`, `..` and repeated `/` resolved; `..`
/// stops at `/`). No trailing `/` except for the root.
fn absolute(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{dir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A source cleaned and made relative to the source root (`/a/./b/` → `a/b`, `/` → `.`);
/// `None` when `..` would leave the root.
fn relative_source(source: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

/// `755`, `0755`, `4755` → the mode; anything else (symbolic modes, > 0o7777) → `None`.
fn parse_mode(mode: &str) -> Option<u32> {
    if mode.is_empty() || mode.len() > 5 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(mode, 8).ok().filter(|m| *m <= 0o7777)
}

/// `80` → `80/tcp`, `53/UDP` → `53/udp`.
fn normalize_port(spec: &str) -> Result<String, String> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "port \"{spec}\" has protocol \"{proto}\"; use tcp, udp or sctp"
        ));
    }
    if port.contains('-') {
        return Err(format!(
            "port range \"{spec}\" is not supported; list each port"
        ));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(format!("{n}/{proto}")),
        _ => Err(format!(
            "port \"{spec}\" is not a port number from 1 to 65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn resolver(name: &str) -> Option<ImageConfig> {
        let mut config = ImageConfig::default();
        match name {
            "base" => config.set_env("PATH", "/bin"),
            "runtime" => {
                config.set_env("PATH", "/bin");
                config.set_env("LANG", "C.UTF-8");
                config.cmd = Some(vec!["serve".into()]);
            }
            _ => return None,
        }
        Some(config)
    }

    fn plan_text(text: &str, args: &[(&str, &str)]) -> Result<BuildPlan, DockerfileError> {
        let args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        plan(&parse(text)?, &args, &resolver)
    }

    fn ok(text: &str) -> BuildPlan {
        plan_text(text, &[]).expect("plans")
    }

    fn err(text: &str) -> DockerfileError {
        plan_text(text, &[]).expect_err("should fail")
    }

    fn texts(stage: &StagePlan) -> Vec<&str> {
        stage.steps.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn arg_scopes() {
        let text = "ARG IMG=base\nARG V=1\nFROM $IMG\nRUN a\nARG V\nARG W=$V-w\nRUN b\nFROM base\nARG IMG\nRUN c\n";
        let p = ok(text);
        assert_eq!(p.stages[0].base, Base::Image("base".into()));
        // A global ARG is invisible in a stage until redeclared; redeclared, it keeps its value.
        let Action::Run { env, .. } = &p.stages[0].steps[0].action else {
            panic!()
        };
        assert_eq!(env, &[("PATH".into(), "/bin".into())]);
        let Action::Run { env, .. } = &p.stages[0].steps[3].action else {
            panic!()
        };
        assert_eq!(
            env,
            &[
                ("PATH".into(), "/bin".into()),
                ("V".into(), "1".into()),
                ("W".into(), "1-w".into())
            ]
        );
        assert_eq!(texts(&p.stages[0])[1..3], ["ARG V=1", "ARG W=1-w"]);
        // ARG scope ends with the stage.
        let Action::Run { env, .. } = &p.stages[1].steps[1].action else {
            panic!()
        };
        assert_eq!(
            env,
            &[
                ("PATH".into(), "/bin".into()),
                ("IMG".into(), "base".into())
            ]
        );

        // Build args override defaults, both global and in the stage.
        let p = plan_text(text, &[("V", "9"), ("IMG", "runtime")]).expect("plans");
        assert_eq!(p.stages[0].base, Base::Image("runtime".into()));
        assert_eq!(texts(&p.stages[0])[1..3], ["ARG V=9", "ARG W=9-w"]);
    }

    #[test]
    fn env_wins_over_arg_and_sees_previous_values() {
        let p = ok(
            "FROM base\nARG A=arg\nENV A=env\nARG A=again\nENV B=$A C=${A}x A=new D=$A\nRUN x\n",
        );
        let Action::Run { env, .. } = &p.stages[0].steps[4].action else {
            panic!()
        };
        assert_eq!(
            env,
            &[
                ("PATH".into(), "/bin".into()),
                ("A".into(), "new".into()),
                ("B".into(), "env".into()),
                ("C".into(), "envx".into()),
                ("D".into(), "env".into()),
            ]
        );
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_only() {
        let p = ok("FROM runtime\nENTRYPOINT [\"/e\"]\n");
        assert_eq!(p.stages[0].config.cmd, None);
        let p = ok("FROM runtime\nCMD x\nENTRYPOINT [\"/e\"]\n");
        assert_eq!(
            p.stages[0].config.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "x".into()])
        );
        let p = ok("FROM runtime\nRUN x\n");
        assert_eq!(p.stages[0].config.cmd, Some(vec!["serve".into()]));
    }

    #[test]
    fn shell_carries_into_child_stages() {
        let p = ok("FROM base AS a\nSHELL [\"/bin/bash\", \"-euc\"]\nFROM a\nRUN echo hi\n");
        let Action::Run { argv, .. } = &p.stages[1].steps[0].action else {
            panic!()
        };
        assert_eq!(argv, &["/bin/bash", "-euc", "echo hi"]);
    }

    #[test]
    fn scratch_gets_default_path() {
        let p = ok("FROM scratch\nCOPY app /\n");
        assert_eq!(p.stages[0].base, Base::Scratch);
        assert_eq!(
            p.stages[0].config.env,
            [("PATH".to_string(), DEFAULT_PATH.to_string())]
        );
    }

    #[test]
    fn copy_paths() {
        let p = ok("FROM base\nWORKDIR /app\nCOPY a .\nCOPY ./x/../b/ sub/\nCOPY c ../etc/c\nCOPY d e /abs/\n");
        let dests: Vec<(Vec<String>, String)> = p.stages[0].steps[1..]
            .iter()
            .map(|s| match &s.action {
                Action::Copy { sources, dest, .. } => (sources.clone(), dest.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            dests,
            vec![
                (vec!["a".into()], "/app/".into()),
                (vec!["b".into()], "/app/sub/".into()),
                (vec!["c".into()], "/etc/c".into()),
                (vec!["d".into(), "e".into()], "/abs/".into()),
            ]
        );
        assert_eq!(
            err("FROM base\nCOPY a b /dst").to_string(),
            "line 2: COPY has several sources, so the destination must be a directory ending in '/', like /dst/"
        );
        assert_eq!(
            err("FROM base\nCOPY ../secret /").to_string(),
            "line 2: COPY source \"../secret\" points outside the source root"
        );
        assert_eq!(
            err("FROM base\nCOPY --chmod=u+x a /").to_string(),
            "line 2: COPY --chmod=\"u+x\" is not an octal mode like 0755"
        );
    }

    #[test]
    fn stage_references() {
        let p = ok("FROM base AS one\nFROM one\nCOPY --from=0 /a /b\nCOPY --from=runtime /c /d\nFROM base\nCOPY --from=1 /x /y\n");
        assert_eq!(p.stages[1].base, Base::Stage(0));
        assert!(matches!(
            p.stages[1].steps[0].action,
            Action::Copy {
                from: CopyFrom::Stage(0),
                ..
            }
        ));
        assert!(
            matches!(&p.stages[1].steps[1].action, Action::Copy { from: CopyFrom::Image(n), .. } if n == "runtime")
        );
        assert_eq!(p.needed_stages(), vec![0, 1, 2]);
        let p = ok("FROM base AS unused\nFROM base AS dep\nFROM dep\n");
        assert_eq!(p.needed_stages(), vec![1, 2]);

        let e = err("FROM base AS a\nCOPY --from=a /x /y\n");
        assert_eq!(e.to_string(), "line 2: COPY --from=\"a\" refers to the stage it is in; a stage can only use stages defined before it");
        let e = err("FROM base\nCOPY --from=later /x /y\nFROM base AS later\n");
        assert_eq!(e.to_string(), "line 2: COPY --from=\"later\" refers to stage 1, which comes later; a stage can only use stages defined before it");
        let e = err("FROM base\nCOPY --from=5 /x /y\n");
        assert_eq!(e.to_string(), "line 2: COPY --from=\"5\" is not a stage: stages are numbered from 0 and this Dockerfile has 1");
        let e = err("FROM base\nCOPY --from=nope /x /y\n");
        assert_eq!(e.kind(), strata_types::ErrorKind::NotFound);
        let e = err("FROM nope\n");
        assert_eq!(
            (e.kind(), e.line()),
            (strata_types::ErrorKind::NotFound, Some(1))
        );
    }

    #[test]
    fn expose_and_labels() {
        let p = ok("FROM base\nARG P=8080\nEXPOSE 80 $P/TCP 53/udp 80/tcp\nLABEL a=1 \"b c\"='$P' d=\"${P}\"\nMAINTAINER Jo <jo@example.com>\n");
        let c = &p.stages[0].config;
        assert_eq!(c.exposed_ports, ["80/tcp", "8080/tcp", "53/udp"]);
        assert_eq!(c.labels.get("b c").map(String::as_str), Some("$P"));
        assert_eq!(c.labels.get("d").map(String::as_str), Some("8080"));
        assert_eq!(
            c.labels.get("maintainer").map(String::as_str),
            Some("Jo <jo@example.com>")
        );
        assert_eq!(texts(&p.stages[0])[2], "LABEL a=1 \"b c\"=\"\\$P\" d=8080");
        assert_eq!(
            err("FROM base\nEXPOSE 8000-8010").to_string(),
            "line 2: EXPOSE port range \"8000-8010\" is not supported; list each port"
        );
    }

    #[test]
    fn expansion_errors_name_line_and_instruction() {
        let e = err("FROM base\n\nWORKDIR /app/${DIR\n");
        assert_eq!(
            e.to_string(),
            "line 3: WORKDIR: cannot expand \"/app/${DIR\": \"${\" is missing its closing \"}\""
        );
        assert_eq!(e.kind(), strata_types::ErrorKind::InvalidArgument);
        let e = err("ARG IMG\nFROM ${IMG}\n");
        assert_eq!(
            e.to_string(),
            "line 2: FROM image \"${IMG}\" is empty after expansion; give the ARG a value"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(absolute("/", "a/./b//c/.."), "/a/b");
        assert_eq!(absolute("/a", "../../.."), "/");
        assert_eq!(relative_source("/"), Some(".".into()));
        assert_eq!(relative_source("src/*.rs"), Some("src/*.rs".into()));
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("4755"), Some(0o4755));
        assert_eq!(parse_mode("8"), None);
        assert_eq!(parse_mode("77777"), None);
        assert_eq!(display_word("a b"), "\"a b\"");
        assert_eq!(display_word(""), "\"\"");
        assert_eq!(display_word("plain/path"), "plain/path");
    }
}
