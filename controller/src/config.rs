//! The `agent-orchestrator.yaml` file: its typed form, finding it, and loading it.
//!
//! The keys are those of the original TypeScript `ao` (camelCase), plus the placement keys
//! (`labels`, `capacity`). Loading expands `${VAR}`, deserializes strictly (an unknown key is an
//! error, not a silently ignored typo) and validates cross-references; every failure is a
//! [`ConfigError`] naming the file, the line and the key path so a user can jump straight to it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use ao_proto::home::Home;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// File names looked for in the current directory and its ancestors, in order of preference.
pub const CONFIG_FILE_NAMES: &[&str] = &["agent-orchestrator.yaml", "agent-orchestrator.yml"];

/// Agents known by name without an `agents.<name>` entry.
pub const BUILTIN_AGENTS: &[&str] = &["claude-code", "codex", "aider", "opencode", "gemini"];

/// The agent used when neither the project nor `defaults` names one.
const DEFAULT_AGENT: &str = "claude-code";

/// Project ids name directories (`worktrees/<project>/`) and appear in branch names, events and
/// the agents' environment: letters, digits, `_`, `.` and `-`, starting with a letter or digit
/// (so never an option to git or tmux), and never `..` (so never a parent directory).
static PROJECT_ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$").expect("valid regex"));

/// What [`PROJECT_ID_RE`] requires, for error messages.
const PROJECT_ID_RULE: &str = "must start with a letter or digit, contain only letters, digits, \
                               `_`, `.` and `-`, and not contain `..`";

/// Session prefixes make session ids (`<prefix>-<n>`), which are tmux session names and path
/// components. tmux turns `.` and `:` in a session name into `_`, so a name holding them is never
/// found again by its own id; hence no `.` here, unlike project ids.
static SESSION_PREFIX_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_-]*$").expect("valid regex"));

/// What [`SESSION_PREFIX_RE`] requires, for error messages.
const SESSION_PREFIX_RULE: &str =
    "must start with a letter or digit and contain only letters, digits, `_` and `-`";

/// The longest project id or session prefix: both are file names, and session ids add a number.
const MAX_ID_LEN: usize = 64;

/// Whether `id` may name a project (see [`PROJECT_ID_RE`]).
pub fn is_valid_project_id(id: &str) -> bool {
    id.len() <= MAX_ID_LEN && PROJECT_ID_RE.is_match(id) && !id.contains("..")
}

/// Whether `prefix` may start session ids (see [`SESSION_PREFIX_RE`]).
pub fn is_valid_session_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_ID_LEN && SESSION_PREFIX_RE.is_match(prefix)
}

/// `$${` (an escaped, literal `${`) or a `${NAME}` reference.
static VAR_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\$\{|\$\{[A-Za-z_][A-Za-z0-9_]*\}").expect("valid regex"));

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: Option<String>,
    pub worktree_dir: Option<String>,
    pub port: Option<u16>,
    pub terminal_port: Option<u16>,
    pub direct_terminal_port: Option<u16>,
    pub ready_threshold_ms: Option<u64>,
    pub defaults: Defaults,
    pub projects: BTreeMap<String, ProjectConfig>,
    pub agents: BTreeMap<String, AgentConfig>,
    pub reactions: BTreeMap<String, ReactionConfig>,
    pub notifiers: BTreeMap<String, PluginConfig>,
    pub notification_routing: NotificationRouting,
    pub orchestrator_rules: Option<String>,
    pub agent_rules: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Plugin choices that apply to every project that does not override them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Defaults {
    pub runtime: Option<String>,
    pub agent: Option<String>,
    pub workspace: Option<String>,
    pub notifiers: Vec<String>,
}

/// Which notifiers (keys of `notifiers`) receive events of each priority.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NotificationRouting {
    pub urgent: Vec<String>,
    pub action: Vec<String>,
    pub warning: Vec<String>,
    pub info: Vec<String>,
}

/// One repository the orchestrator works on (`projects.<id>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: Option<String>,
    /// `owner/name` on the SCM host.
    pub repo: Option<String>,
    /// Local path to the git repository; absolute once loaded.
    pub path: String,
    pub default_branch: Option<String>,
    pub session_prefix: Option<String>,
    pub agent: Option<String>,
    pub runtime: Option<String>,
    pub workspace: Option<String>,
    pub tracker: Option<PluginConfig>,
    pub scm: Option<PluginConfig>,
    #[serde(default)]
    pub symlinks: Vec<String>,
    #[serde(default)]
    pub post_create: Vec<String>,
    #[serde(default)]
    pub agent_config: BTreeMap<String, serde_json::Value>,
    pub agent_rules: Option<String>,
    pub agent_rules_file: Option<String>,
    pub orchestrator_rules: Option<String>,
    pub orchestrator_model: Option<String>,
    #[serde(default)]
    pub reactions: BTreeMap<String, ReactionConfig>,
    /// Placement: labels a worker must carry to run this project's sessions.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Placement: the most sessions of this project running at once.
    pub capacity: Option<u32>,
}

impl ProjectConfig {
    /// The prefix of this project's session ids: the configured one, else the project id with
    /// every character a session prefix may not hold (`.`) turned into `-`, so `lib.core`
    /// makes `lib-core-1`.
    pub fn session_prefix(&self, project_id: &str) -> String {
        self.session_prefix.clone().unwrap_or_else(|| {
            project_id
                .chars()
                .map(|c| match c {
                    'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
                    _ => '-',
                })
                .collect()
        })
    }

    /// The branch sessions start from and PRs target.
    pub fn default_branch(&self) -> &str {
        self.default_branch.as_deref().unwrap_or("main")
    }
}

impl Config {
    /// The agent a new session of `project_id` runs: project, then `defaults`, then `claude-code`.
    pub fn agent_for(&self, project_id: &str) -> String {
        self.projects
            .get(project_id)
            .and_then(|project| project.agent.clone())
            .or_else(|| self.defaults.agent.clone())
            .unwrap_or_else(|| DEFAULT_AGENT.to_owned())
    }
}

/// A user-defined agent CLI (`agents.<name>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Run with `sh -c` inside the worktree.
    pub command: String,
    /// Regex on the last screen line meaning the agent's turn is over.
    pub ready_pattern: Option<String>,
    /// Regex on the screen meaning the agent asks a human something.
    pub input_pattern: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What to do when a session reaches a state (`reactions.<key>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReactionConfig {
    pub auto: Option<bool>,
    pub action: Option<ReactionAction>,
    pub message: Option<String>,
    pub priority: Option<Priority>,
    pub retries: Option<u32>,
    /// A number of attempts, or a duration such as `"30m"`.
    pub escalate_after: Option<serde_json::Value>,
    pub threshold: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReactionAction {
    Notify,
    SendToAgent,
    AutoMerge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    Action,
    Warning,
    Info,
}

/// A plugin choice with its settings; the settings belong to the plugin, so any key is accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginConfig {
    pub plugin: String,
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// A config file that cannot be read, parsed or accepted, with where in it the problem is.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based; only known for parse errors.
    pub column: Option<usize>,
    /// Dotted key path such as `projects.app.agent`.
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn new(file: &Path, line: Option<usize>, key: Option<String>, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line,
            column: None,
            key,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        match &self.key {
            Some(key) if !self.message.starts_with(key.as_str()) => {
                write!(f, ": {key}: {}", self.message)
            }
            _ => write!(f, ": {}", self.message),
        }
    }
}

/// The config file to load: `explicit` (from `AO_CONFIG_PATH` or a flag) as given, else the first
/// of [`CONFIG_FILE_NAMES`] in `cwd` or an ancestor, else `ao_home/config.yaml` if it exists.
pub fn find_config(explicit: Option<&Path>, cwd: &Path, ao_home: &Home) -> Option<PathBuf> {
    if let Some(path) = explicit {
        // Not checked for existence: loading it reports a missing file better than a fallback.
        return Some(path.to_path_buf());
    }
    cwd.ancestors()
        .flat_map(|dir| CONFIG_FILE_NAMES.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .or_else(|| Some(ao_home.config()).filter(|home| home.is_file()))
}

/// The config a process started in `cwd` uses: [`find_config`] with `AO_CONFIG_PATH` from `env`,
/// then [`load_file`]; `None` when there is none to find.
pub fn find_and_load(
    cwd: &Path,
    ao_home: &Home,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(PathBuf, Result<Config, ConfigError>)> {
    let explicit = env(ao_proto::env::AO_CONFIG_PATH).map(PathBuf::from);
    let path = find_config(explicit.as_deref(), cwd, ao_home)?;
    let loaded = load_file(&path, env);
    Some((path, loaded))
}

/// The largest config file accepted: far above any real config, small enough that the store
/// and every controller hold it without thought.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The largest config the controller accepts as JSON (`ApplyConfig`): twice
/// [`MAX_CONFIG_BYTES`], because JSON quotes every string and a `~` or `${VAR}` expands.
pub const MAX_CONFIG_JSON_BYTES: usize = 2 * MAX_CONFIG_BYTES;

/// The deepest nesting of collections accepted. A real config nests about six deep; the YAML
/// parser takes time quadratic in the depth of flow collections (`[[[…`), so deeper text is
/// refused before it is parsed.
pub const MAX_NESTING: usize = 64;

/// Reads and parses the config at `path`; `env` supplies `${VAR}` values and `HOME`.
///
/// # Errors
/// When the file cannot be read or is larger than [`MAX_CONFIG_BYTES`], or as [`parse_str`].
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let fail = |message: String| ConfigError::new(path, None, None, message);
    let file = std::fs::File::open(path).map_err(|err| fail(err.to_string()))?;
    // Read one byte past the limit, not the whole file, to know it is too large.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|err| fail(err.to_string()))?;
    if text.len() > MAX_CONFIG_BYTES {
        let size = std::fs::metadata(path).map_or(text.len() as u64, |m| m.len());
        return Err(fail(too_large(size)));
    }
    parse_str(&text, path, env)
}

fn too_large(size: u64) -> String {
    format!(
        "the config is {size} bytes, more than the limit of {MAX_CONFIG_BYTES} bytes ({} MiB)",
        MAX_CONFIG_BYTES >> 20
    )
}

/// Parses config `text` that was read from `source`, which names the file in errors and anchors
/// relative project paths.
///
/// # Errors
/// On text larger than [`MAX_CONFIG_BYTES`] or nested deeper than [`MAX_NESTING`], a `${VAR}`
/// missing from `env`, invalid YAML, an unknown key or a wrong type, and on values that do not
/// validate: bad project ids or session prefixes, prefixes shared by two projects, empty paths,
/// unknown agents or notifiers, patterns that are not regexes.
pub fn parse_str(
    text: &str,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            source,
            None,
            None,
            too_large(text.len() as u64),
        ));
    }
    let locator = Locator {
        source,
        outline: outline(text),
    };
    let expanded = expand_env(text, &locator, env)?;
    check_nesting(&expanded, &locator)?;
    // An empty or comment-only document is YAML null, which means "nothing configured".
    let mut config = serde_yaml::from_str::<Option<Config>>(&expanded)
        .map_err(|err| yaml_error(source, &err))?
        .unwrap_or_default();
    resolve_paths(&mut config, &locator, env)?;
    validate(&config, &locator)?;
    Ok(config)
}

/// Checks a config that arrives already parsed (as JSON over the controller's API) with the
/// rules [`parse_str`] applies to a file; `source` names where it came from. Such a config has
/// no lines, so errors name only the key.
///
/// # Errors
/// As the validation of [`parse_str`]; project paths must also be absolute already.
pub fn validate_parsed(config: &Config, source: &Path) -> Result<(), ConfigError> {
    validate(
        config,
        &Locator {
            source,
            outline: Vec::new(),
        },
    )
}

/// Builds errors that point at the line of a key path in the original text.
struct Locator<'a> {
    source: &'a Path,
    /// For each line, the key path of the mapping entry it belongs to; see [`outline`].
    outline: Vec<Vec<&'a str>>,
}

impl Locator<'_> {
    /// The error for `path`, at the line of its deepest ancestor present in the text (a key
    /// that was defaulted has no line of its own).
    fn error(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        let line = (1..=path.len())
            .rev()
            .find_map(|len| self.line(&path[..len]));
        ConfigError::new(self.source, line, Some(path.join(".")), message.into())
    }

    /// The 1-based line of the entry with key path `path`, if the text has one.
    fn line(&self, path: &[&str]) -> Option<usize> {
        locate(&self.outline, path)
    }
}

/// Replaces `${VAR}` from `env`, line by line so a missing variable can be reported with its line.
/// Comment lines are left alone: a commented-out line should not require its variables.
fn expand_env(
    text: &str,
    locator: &Locator<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut copied = 0;
        for found in VAR_RE.find_iter(line) {
            out.push_str(&line[copied..found.start()]);
            copied = found.end();
            let Some(name) = found.as_str().strip_prefix("${") else {
                out.push_str("${");
                continue;
            };
            let name = name.trim_end_matches('}');
            let value = env(name).ok_or_else(|| {
                let key = locator.outline.get(index).filter(|path| !path.is_empty());
                ConfigError::new(
                    locator.source,
                    Some(index + 1),
                    key.map(|path| path.join(".")),
                    format!("environment variable `{name}` is not set"),
                )
            })?;
            out.push_str(&value);
        }
        out.push_str(&line[copied..]);
    }
    Ok(out)
}

/// Refuses text nested deeper than [`MAX_NESTING`] before the YAML parser sees it, reading each
/// byte once. It is not a YAML parser: it counts block collections (indentation and `- `/`? `
/// markers) and flow collections (`[`, `{`) where a value starts, skipping comments, quoted and
/// block scalars, and errs on the side of counting deeper.
fn check_nesting(text: &str, locator: &Locator<'_>) -> Result<(), ConfigError> {
    let mut scan = NestingScan::default();
    for (index, line) in text.lines().enumerate() {
        if scan.line(line) > MAX_NESTING {
            // No key: the outline does not read flow collections, the usual culprit.
            return Err(ConfigError::new(
                locator.source,
                Some(index + 1),
                None,
                format!("nested more than {MAX_NESTING} collections deep (the limit)"),
            ));
        }
    }
    Ok(())
}

/// What [`check_nesting`] carries from one line to the next.
#[derive(Default)]
struct NestingScan {
    /// Indentation of each open block collection.
    blocks: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// The quote of a quoted scalar that goes on past the line.
    quote: Option<u8>,
    /// Indentation of the key whose block scalar (`|`, `>`) is being read.
    block_scalar: Option<usize>,
}

impl NestingScan {
    /// Reads one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str) -> usize {
        let bytes = line.as_bytes();
        let mut at = 0;
        if self.flow == 0 && self.quote.is_none() {
            let indent = bytes.iter().take_while(|&&b| b == b' ').count();
            let body = &line[indent..];
            if body.is_empty()
                || body.starts_with('#')
                || self.block_scalar.is_some_and(|key| indent > key)
            {
                return self.blocks.len();
            }
            self.block_scalar = None;
            self.blocks.retain(|&level| level < indent);
            self.blocks.push(indent);
            at = skip_blanks(bytes, indent);
            // A document start: `---` and a blank, or nothing.
            if indent == 0
                && body.starts_with("---")
                && matches!(bytes.get(3), None | Some(b' ' | b'\t'))
            {
                at = skip_blanks(bytes, 3);
            }
            // `- ` and `? ` open a collection inside the one of this line.
            while matches!(bytes.get(at), Some(b'-' | b'?'))
                && matches!(bytes.get(at + 1), None | Some(b' ' | b'\t'))
            {
                at = skip_blanks(bytes, at + 1);
                self.blocks.push(at);
            }
            at = skip_properties(bytes, at);
            if bytes.get(at) == Some(&b'#') {
                return self.blocks.len();
            }
            // A flow collection here may be a key (`[a]: [b]`): the flow scan reads on past it.
            let flow_first = matches!(bytes.get(at), Some(b'[' | b'{'));
            if let Some((_, value)) = split_key(&line[at..]).filter(|_| !flow_first) {
                at = skip_properties(bytes, skip_blanks(bytes, line.len() - value.len()));
            }
            match bytes.get(at) {
                Some(b'[' | b'{' | b'"' | b'\'') => {}
                Some(b'|' | b'>') => {
                    self.block_scalar = Some(indent);
                    return self.blocks.len();
                }
                // A comment, or a plain scalar whose brackets are text.
                _ => return self.blocks.len(),
            }
        }
        let mut deepest = self.blocks.len() + self.flow;
        // A quote opens a scalar only where a token starts, as a value or a line does here.
        let mut token_start = true;
        while at < bytes.len() {
            let byte = bytes[at];
            at += 1;
            if let Some(quote) = self.quote {
                // `\"` inside double quotes, `''` inside single ones: the quote goes on.
                let escaped = match quote {
                    b'"' => byte == b'\\',
                    _ => byte == b'\'' && bytes.get(at) == Some(&b'\''),
                };
                if escaped {
                    at += 1;
                } else if byte == quote {
                    // What follows may still open a collection: `'a': [b]`.
                    self.quote = None;
                }
                continue;
            }
            match byte {
                b'"' | b'\'' if token_start => self.quote = Some(byte),
                // A comment starts after a blank, or at the start of a line.
                b'#' if at == 1 || matches!(bytes[at - 2], b' ' | b'\t') => break,
                // Outside a flow collection (after one that was a key, as in `[a]: [b]`), only
                // where a value starts.
                b'[' | b'{' if self.flow > 0 || token_start => {
                    self.flow += 1;
                    deepest = deepest.max(self.blocks.len() + self.flow);
                }
                b']' | b'}' => self.flow = self.flow.saturating_sub(1),
                _ => {}
            }
            token_start = matches!(byte, b' ' | b'\t' | b'[' | b'{' | b',' | b':');
        }
        deepest
    }
}

/// The index after the anchors (`&a`) and tags (`!t`) at `at`, which come before the node they
/// name, key or value.
fn skip_properties(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b'&' | b'!')) {
        let end = bytes[at..]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t'))
            .map_or(bytes.len(), |len| at + len);
        at = skip_blanks(bytes, end);
    }
    at
}

/// The index of the first byte at or after `at` that is not a space or tab.
fn skip_blanks(bytes: &[u8], at: usize) -> usize {
    at + bytes.get(at..).map_or(0, |rest| {
        rest.iter()
            .take_while(|&&b| matches!(b, b' ' | b'\t'))
            .count()
    })
}

/// Turns a serde_yaml error into a [`ConfigError`], moving the key path that serde_yaml puts at
/// the front of its message (and the location it puts at the end) into their own fields.
fn yaml_error(source: &Path, err: &serde_yaml::Error) -> ConfigError {
    let mut message = err.to_string();
    let location = err.location();
    if let Some(at) = &location {
        message = message.replacen(
            &format!(" at line {} column {}", at.line(), at.column()),
            "",
            1,
        );
    }
    // A key path has no spaces, which tells it apart from messages like "invalid type: ...".
    let (path, message) = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(char::is_whitespace) => {
            (Some(path.to_owned()), rest.to_owned())
        }
        _ => (None, message),
    };
    // For an unknown or missing field the useful key is the field itself, not its parent.
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let key = match (path, field) {
        (Some(path), Some(field)) => Some(format!("{path}.{field}")),
        (path, field) => path.or(field.map(str::to_owned)),
    };
    ConfigError {
        file: source.to_path_buf(),
        line: location.as_ref().map(|at| at.line()),
        column: location.as_ref().map(|at| at.column()),
        key,
        message,
    }
}

/// Makes every project path absolute: `~/` from `HOME`, relative to the config file's directory.
fn resolve_paths(
    config: &mut Config,
    locator: &Locator<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (id, project) in &mut config.projects {
        let fail = |message: String| locator.error(&["projects", id, "path"], message);
        let raw = project.path.as_str();
        let path = if raw.trim().is_empty() {
            return Err(fail("must not be empty".into()));
        } else if let Some(rest) = raw.strip_prefix("~/").or((raw == "~").then_some("")) {
            let home =
                env("HOME").ok_or_else(|| fail("cannot expand `~`: HOME is not set".into()))?;
            Path::new(&home).join(rest)
        } else {
            locator.source.parent().unwrap_or(Path::new("")).join(raw)
        };
        // `absolute` only consults the current directory, for a relative `source` or HOME.
        let path = std::path::absolute(&path).map_err(|err| fail(err.to_string()))?;
        // `..` is folded lexically, as Node's `path.resolve` does for the original `ao`, so the
        // stored path is the one users recognise even if the directory does not exist yet.
        let mut clean = PathBuf::new();
        for part in path.components() {
            match part {
                Component::ParentDir => {
                    clean.pop();
                }
                part => clean.push(part),
            }
        }
        project.path = clean.to_string_lossy().into_owned();
    }
    Ok(())
}

/// Checks the shape of names and the references between sections.
fn validate(config: &Config, locator: &Locator<'_>) -> Result<(), ConfigError> {
    let check_agent = |path: &[&str], agent: Option<&String>| match agent {
        Some(name)
            if !BUILTIN_AGENTS.contains(&name.as_str()) && !config.agents.contains_key(name) =>
        {
            Err(locator.error(
                path,
                format!(
                    "unknown agent `{name}`: not built in ({}) and not defined under `agents`",
                    BUILTIN_AGENTS.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    };
    let check_notifiers = |path: &[&str], names: &[String]| match names
        .iter()
        .find(|name| !config.notifiers.contains_key(name.as_str()))
    {
        Some(name) => Err(locator.error(
            path,
            format!("unknown notifier `{name}`: not defined under `notifiers`"),
        )),
        None => Ok(()),
    };

    check_agent(&["defaults", "agent"], config.defaults.agent.as_ref())?;
    check_notifiers(&["defaults", "notifiers"], &config.defaults.notifiers)?;
    let routing = &config.notification_routing;
    for (priority, names) in [
        ("urgent", &routing.urgent),
        ("action", &routing.action),
        ("warning", &routing.warning),
        ("info", &routing.info),
    ] {
        check_notifiers(&["notificationRouting", priority], names)?;
    }

    for (name, agent) in &config.agents {
        if agent.command.trim().is_empty() {
            return Err(locator.error(&["agents", name, "command"], "must not be empty"));
        }
        for (key, pattern) in [
            ("readyPattern", &agent.ready_pattern),
            ("inputPattern", &agent.input_pattern),
        ] {
            if let Some(Err(err)) = pattern.as_deref().map(Regex::new) {
                return Err(locator.error(&["agents", name, key], format!("invalid regex: {err}")));
            }
        }
    }

    // Session ids are `<prefix>-<n>`: projects that share a prefix would share ids.
    let mut prefixes: BTreeMap<String, &str> = BTreeMap::new();
    for (id, project) in &config.projects {
        if !is_valid_project_id(id) {
            return Err(locator.error(
                &["projects", id],
                format!("project id `{id}` {PROJECT_ID_RULE} (at most {MAX_ID_LEN} characters)"),
            ));
        }
        let prefix = project.session_prefix(id);
        if !is_valid_session_prefix(&prefix) {
            return Err(locator.error(
                &["projects", id, "sessionPrefix"],
                format!("`{prefix}` {SESSION_PREFIX_RULE} (at most {MAX_ID_LEN} characters)"),
            ));
        }
        if let Some(first) = prefixes.insert(prefix.clone(), id) {
            let at = |id: &str| {
                let line = locator
                    .line(&["projects", id, "sessionPrefix"])
                    .or_else(|| locator.line(&["projects", id]));
                match line {
                    Some(line) => format!("project `{id}` (line {line})"),
                    None => format!("project `{id}`"),
                }
            };
            return Err(locator.error(
                &["projects", id, "sessionPrefix"],
                format!(
                    "session prefix `{prefix}` of {} is also that of {}: their session ids \
                     would collide; give one of them its own `sessionPrefix` \
                     (a defaulted prefix is the project id with `.` turned into `-`)",
                    at(id),
                    at(first)
                ),
            ));
        }
        if !Path::new(&project.path).is_absolute() {
            return Err(locator.error(
                &["projects", id, "path"],
                format!("`{}` is not an absolute path", project.path),
            ));
        }
        check_agent(&["projects", id, "agent"], project.agent.as_ref())?;
    }
    Ok(())
}

/// The only runtime that runs sessions yet; another `runtime` is recorded on the session but the
/// agent still runs in tmux.
const IMPLEMENTED_RUNTIME: &str = "tmux";

/// The keys of `config` that are accepted (and validated) for compatibility with the original
/// `ao` but not acted on yet, as dotted paths such as `reactions` or `projects.app.tracker`.
/// Only keys the config sets are named, so that a user is warned about what they wrote; a key
/// leaves this list when the issue that implements it lands.
pub fn unimplemented_keys(config: &Config) -> Vec<String> {
    let other_runtime = |runtime: &Option<String>| {
        runtime
            .as_deref()
            .is_some_and(|runtime| runtime != IMPLEMENTED_RUNTIME)
    };
    let top = [
        ("dataDir", config.data_dir.is_some()),
        ("worktreeDir", config.worktree_dir.is_some()),
        ("port", config.port.is_some()),
        ("terminalPort", config.terminal_port.is_some()),
        ("directTerminalPort", config.direct_terminal_port.is_some()),
        ("readyThresholdMs", config.ready_threshold_ms.is_some()),
        ("defaults.runtime", other_runtime(&config.defaults.runtime)),
        ("defaults.workspace", config.defaults.workspace.is_some()),
        ("defaults.notifiers", !config.defaults.notifiers.is_empty()),
        ("reactions", !config.reactions.is_empty()),
        ("notifiers", !config.notifiers.is_empty()),
        (
            "notificationRouting",
            config.notification_routing != NotificationRouting::default(),
        ),
        ("orchestratorRules", config.orchestrator_rules.is_some()),
        ("agentRules", config.agent_rules.is_some()),
        ("labels", !config.labels.is_empty()),
    ];
    let mut keys: Vec<String> = top
        .into_iter()
        .filter(|&(_, set)| set)
        .map(|(key, _)| key.to_owned())
        .collect();
    for (id, project) in &config.projects {
        let keys_of_project = [
            ("name", project.name.is_some()),
            ("repo", project.repo.is_some()),
            ("runtime", other_runtime(&project.runtime)),
            ("workspace", project.workspace.is_some()),
            ("tracker", project.tracker.is_some()),
            ("scm", project.scm.is_some()),
            ("agentConfig", !project.agent_config.is_empty()),
            ("agentRules", project.agent_rules.is_some()),
            ("agentRulesFile", project.agent_rules_file.is_some()),
            ("orchestratorRules", project.orchestrator_rules.is_some()),
            ("orchestratorModel", project.orchestrator_model.is_some()),
            ("reactions", !project.reactions.is_empty()),
        ];
        keys.extend(
            keys_of_project
                .into_iter()
                .filter(|&(_, set)| set)
                .map(|(key, _)| format!("projects.{id}.{key}")),
        );
    }
    keys
}

/// For each line of a YAML text, the key path of the mapping entry it belongs to (empty for blank
/// and comment lines). This is a small indentation-based reading of block-style YAML, enough to
/// point errors at lines; flow collections and multi-line quoted keys are not understood.
fn outline(text: &str) -> Vec<Vec<&str>> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    // Indentation of the key whose block scalar (`|`, `>`) is being read: its text has no keys.
    let mut block_scalar: Option<usize> = None;
    fn keys<'t>(stack: &[(usize, &'t str)]) -> Vec<&'t str> {
        stack.iter().map(|&(_, key)| key).collect()
    }
    text.lines()
        .map(|line| {
            let body = line.trim_start_matches(' ');
            let raw_indent = line.len() - body.len();
            if body.is_empty() || body.starts_with('#') {
                return Vec::new();
            }
            if block_scalar.is_some_and(|indent| raw_indent > indent) {
                return keys(&stack);
            }
            block_scalar = None;
            // A key after `- ` sits at the column where its text starts.
            let (mut indent, mut body, mut in_sequence) = (raw_indent, body, false);
            while let Some(rest) = body
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            {
                let trimmed = rest.trim_start_matches(' ');
                indent += body.len() - trimmed.len();
                (body, in_sequence) = (trimmed, true);
            }
            match split_key(body) {
                Some((key, value)) => {
                    stack.retain(|&(level, _)| level < indent);
                    stack.push((indent, key));
                    if value.trim_start().starts_with(['|', '>']) {
                        block_scalar = Some(indent);
                    }
                }
                // A sequence may sit at the same indentation as the key that holds it.
                None if in_sequence => stack.retain(|&(level, _)| level <= raw_indent),
                None => stack.retain(|&(level, _)| level < raw_indent),
            }
            keys(&stack)
        })
        .collect()
}

/// Splits `key: value` (or `key:`, or a tab after the colon) into the unquoted key and the rest
/// after the colon.
fn split_key(body: &str) -> Option<(&str, &str)> {
    if let Some(quote) = body.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let end = body[1..].find(quote)? + 1;
        let rest = body[end + 1..].strip_prefix(':')?;
        return (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some((&body[1..end], rest));
    }
    let (colon, _) = body.match_indices(':').find(|&(at, _)| {
        let rest = &body[at + 1..];
        rest.is_empty() || rest.starts_with([' ', '\t'])
    })?;
    Some((body[..colon].trim_end(), &body[colon + 1..]))
}

/// The 1-based line of the entry with key path `path`, if the outline has one.
fn locate(outline: &[Vec<&str>], path: &[&str]) -> Option<usize> {
    outline
        .iter()
        .position(|entry| entry == path)
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "/etc/ao/agent-orchestrator.yaml";

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/dev".into()),
            "SLACK_URL" => Some("https://hooks.example/T0".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new(SOURCE), &env)
    }

    const FULL: &str = r##"
port: 3000
readyThresholdMs: 300000
defaults:
  runtime: tmux
  agent: mybot
  notifiers: [slack]
projects:
  app:
    repo: acme/app
    path: ~/src/app
    defaultBranch: develop
    sessionPrefix: ap
    agent: codex
    tracker:
      plugin: github
    scm: {plugin: github, webhook: {enabled: true}}
    symlinks: [.env]
    postCreate:
      - pnpm install
    agentConfig:
      model: opus
    agentRules: |
      Run the tests: always.
    reactions:
      ci-failed:
        action: send-to-agent
        retries: 2
        escalateAfter: 30m
    labels: {gpu: "true"}
    capacity: 4
  "lib.core":
    path: ../lib
agents:
  mybot:
    command: python3 -u bot.py
    readyPattern: '^> $'
    inputPattern: '\(y/n\)'
    env: {BOT_MODE: fast}
reactions:
  approved-and-green:
    auto: false
    action: notify
    priority: action
notifiers:
  slack:
    plugin: slack
    webhookUrl: ${SLACK_URL}
    channel: "#agents"
notificationRouting:
  urgent: [slack]
  info: []
"##;

    #[test]
    fn unimplemented_keys_name_what_the_config_sets() {
        let keys = unimplemented_keys(&parse(FULL).unwrap());
        assert_eq!(
            keys,
            [
                "port",
                "readyThresholdMs",
                "defaults.notifiers",
                "reactions",
                "notifiers",
                "notificationRouting",
                "projects.app.repo",
                "projects.app.tracker",
                "projects.app.scm",
                "projects.app.agentConfig",
                "projects.app.agentRules",
                "projects.app.reactions",
            ]
        );
    }

    #[test]
    fn a_config_of_implemented_keys_has_no_unimplemented_keys() {
        let text = "defaults:\n  runtime: tmux\nprojects:\n  app:\n    path: /src/app\n    \
                    runtime: tmux\n    symlinks: [.env]\n    labels: {gpu: \"true\"}\n";
        assert_eq!(
            unimplemented_keys(&parse(text).unwrap()),
            Vec::<String>::new()
        );
        let docker = parse("projects:\n  app:\n    path: /src/app\n    runtime: docker\n");
        assert_eq!(
            unimplemented_keys(&docker.unwrap()),
            ["projects.app.runtime"]
        );
    }

    #[test]
    fn full_config_loads_and_round_trips() {
        let config = parse(FULL).unwrap();
        let app = &config.projects["app"];
        assert_eq!(app.path, "/home/dev/src/app");
        assert_eq!(app.session_prefix("app"), "ap");
        assert_eq!(app.default_branch(), "develop");
        assert_eq!(app.agent_config["model"], "opus");
        assert_eq!(
            app.scm.as_ref().unwrap().settings["webhook"]["enabled"],
            true
        );
        let ci = &app.reactions["ci-failed"];
        assert_eq!(ci.action, Some(ReactionAction::SendToAgent));
        assert_eq!(ci.escalate_after, Some(serde_json::json!("30m")));
        assert_eq!(app.capacity, Some(4));
        let lib = &config.projects["lib.core"];
        assert_eq!(lib.path, "/etc/lib");
        assert_eq!(lib.session_prefix("lib.core"), "lib-core");
        assert_eq!(lib.default_branch(), "main");
        assert_eq!(config.agent_for("app"), "codex");
        assert_eq!(config.agent_for("lib.core"), "mybot");
        assert_eq!(Config::default().agent_for("app"), "claude-code");
        assert_eq!(config.agents["mybot"].env["BOT_MODE"], "fast");
        let slack = &config.notifiers["slack"];
        assert_eq!(slack.settings["webhookUrl"], "https://hooks.example/T0");
        assert_eq!(
            config.reactions["approved-and-green"].priority,
            Some(Priority::Action)
        );
        assert_eq!(config.notification_routing.urgent, ["slack"]);

        let written = serde_yaml::to_string(&config).unwrap();
        assert_eq!(parse(&written).unwrap(), config);
    }

    #[test]
    fn empty_or_comment_only_file_is_an_empty_config() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing yet\n\n").unwrap(), Config::default());
    }

    /// Each case: config text, expected key, expected line, a fragment of the message.
    #[test]
    fn errors_name_the_key_and_line() {
        let cases = [
            ("port: 1\nbogus: 1\n", "bogus", 2, "unknown field `bogus`"),
            (
                "projects:\n  app:\n    path: /r\n\n    agnet: codex\n",
                "projects.app.agnet",
                5,
                "unknown field `agnet`, expected one of",
            ),
            (
                "projects:\n  app:\n    path: /r\n    postCreate: 5\n",
                "projects.app.postCreate",
                4,
                "invalid type: integer `5`, expected a sequence",
            ),
            (
                "reactions:\n  x:\n    action: merge\n",
                "reactions.x.action",
                3,
                "unknown variant `merge`",
            ),
            (
                "notifiers:\n  hook:\n    plugin: webhook\n    token: \"${HOOK_TOKEN}\"\n",
                "notifiers.hook.token",
                4,
                "`HOOK_TOKEN` is not set",
            ),
            (
                "projects:\n  app:\n    path: /r\n    postCreate:\n    - echo ${NOPE}\n",
                "projects.app.postCreate",
                5,
                "`NOPE` is not set",
            ),
            (
                "projects:\n  app:\n    path: /r\n    agent: claude\n",
                "projects.app.agent",
                4,
                "unknown agent `claude`",
            ),
            ("defaults:\n  agent: gpt\n", "defaults.agent", 2, "unknown agent `gpt`"),
            (
                "agents:\n  mybot:\n    command: bot\n    readyPattern: ok\n    inputPattern: '(y/n'\n",
                "agents.mybot.inputPattern",
                5,
                "invalid regex",
            ),
            (
                "projects:\n  app:\n    path: /r\n    sessionPrefix: -x\n",
                "projects.app.sessionPrefix",
                4,
                "must start with a letter or digit",
            ),
            ("projects:\n  _app:\n    path: /r\n", "projects._app", 2, "project id `_app`"),
            ("projects:\n  a..b:\n    path: /r\n", "projects.a..b", 2, "not contain `..`"),
            ("projects:\n  'a:b':\n    path: /r\n", "projects.a:b", 2, "project id `a:b`"),
            ("projects:\n  '#{x}':\n    path: /r\n", "projects.#{x}", 2, "project id"),
            ("projects:\n  'a b':\n    path: /r\n", "projects.a b", 2, "project id"),
            ("projects:\n  a/b:\n    path: /r\n", "projects.a/b", 2, "project id"),
            ("projects:\n  -a:\n    path: /r\n", "projects.-a", 2, "start with a letter"),
            (
                "projects:\n  app:\n    path: /r\n    sessionPrefix: a.b\n",
                "projects.app.sessionPrefix",
                4,
                "only letters, digits, `_` and `-`",
            ),
            ("projects:\n  app:\n    path: ''\n", "projects.app.path", 3, "must not be empty"),
            (
                "notifiers:\n  slack: {plugin: slack}\nnotificationRouting:\n  urgent: [slack, pager]\n",
                "notificationRouting.urgent",
                4,
                "unknown notifier `pager`",
            ),
            ("defaults:\n  notifiers: [desktop]\n", "defaults.notifiers", 2, "unknown notifier"),
        ];
        for (text, key, line, fragment) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.file, Path::new(SOURCE), "{text}");
            assert_eq!(err.key.as_deref(), Some(key), "{text}");
            assert_eq!(err.line, Some(line), "{text}");
            assert!(err.message.contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn a_defaulted_prefix_maps_what_tmux_would_rename() {
        let config = parse("projects:\n  lib.core:\n    path: /r\n").unwrap();
        assert_eq!(
            config.projects["lib.core"].session_prefix("lib.core"),
            "lib-core"
        );
    }

    /// Prefixes are compared after a defaulted one is derived from its project id.
    #[test]
    fn two_projects_sharing_a_session_prefix_are_refused_naming_both() {
        let cases = [
            (
                "projects:\n  a:\n    path: /r\n    sessionPrefix: x\n  b:\n    path: /r\n    sessionPrefix: x\n",
                "session prefix `x` of project `b` (line 7) is also that of project `a` (line 4)",
                7,
            ),
            (
                "projects:\n  lib-core:\n    path: /r\n  lib.core:\n    path: /r\n",
                "session prefix `lib-core` of project `lib.core` (line 4) is also that of project `lib-core` (line 2)",
                4,
            ),
            (
                "projects:\n  app:\n    path: /r\n  web:\n    path: /r\n    sessionPrefix: app\n",
                "session prefix `app` of project `web` (line 6) is also that of project `app` (line 2)",
                6,
            ),
        ];
        for (text, fragment, line) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.message.contains(fragment), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
            assert!(
                err.key.as_deref().unwrap().ends_with(".sessionPrefix"),
                "{err}"
            );
        }
    }

    /// A config sent as JSON meets the same rules, named by key alone.
    #[test]
    fn parsed_configs_are_validated_by_key() {
        let source = Path::new("ApplyConfig");
        let project = |path: &str| ProjectConfig {
            path: path.into(),
            ..Default::default()
        };
        let mut config = Config::default();
        config.projects.insert("../x".into(), project("/r"));
        let err = validate_parsed(&config, source).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("projects.../x"));
        assert_eq!(err.line, None);
        assert!(
            err.to_string()
                .starts_with("ApplyConfig: projects.../x: project id"),
            "{err}"
        );

        let mut config = Config::default();
        config
            .projects
            .insert("app".into(), project("relative/repo"));
        let err = validate_parsed(&config, source).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("projects.app.path"));
        assert!(err.message.contains("not an absolute path"), "{err}");

        let mut config = Config::default();
        config.projects.insert("a".into(), project("/r"));
        config.projects.insert(
            "b".into(),
            ProjectConfig {
                session_prefix: Some("a".into()),
                ..project("/r")
            },
        );
        let err = validate_parsed(&config, source).unwrap_err();
        assert!(
            err.message
                .contains("of project `b` is also that of project `a`"),
            "{err}"
        );
    }

    #[test]
    fn text_over_the_size_limit_is_refused_naming_the_limit() {
        let text = "#".repeat(MAX_CONFIG_BYTES + 1);
        let err = parse(&text).unwrap_err();
        assert!(
            err.message.contains(&format!(
                "{} bytes, more than the limit of {MAX_CONFIG_BYTES} bytes (1 MiB)",
                MAX_CONFIG_BYTES + 1
            )),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.yaml");
        std::fs::write(&file, &text).unwrap();
        let err = load_file(&file, &env).unwrap_err();
        assert_eq!(err.file, file);
        assert!(err.message.contains("limit of 1048576 bytes"), "{err}");
    }

    /// Each case: text nested past the limit, the line the error names.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = MAX_NESTING + 1;
        let cases = [
            ("[".repeat(deep), 1),
            ("{a: [".repeat(deep), 1),
            (
                format!(
                    "projects:\n  app:\n    path: /r\n    agentConfig:\n      x: {}",
                    "[".repeat(deep)
                ),
                5,
            ),
            (format!("a: [\n{}", "[\n".repeat(deep)), deep - 1),
            ("- ".repeat(deep) + "x", 1),
            (format!("--- {}", "[".repeat(deep)), 1),
            (format!("[a]: {}", "[".repeat(deep)), 1),
            (format!("{{a: b}}: {}", "[".repeat(deep)), 1),
            (format!("k:\t{}", "[".repeat(deep)), 1),
            (
                (0..deep)
                    .map(|level| format!("{}k:\n", " ".repeat(level)))
                    .collect(),
                deep,
            ),
        ];
        for (text, line) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(
                err.message.contains("nested more than 64 collections deep"),
                "{err}"
            );
            assert_eq!(err.line, Some(line), "{err}");
        }
    }

    /// Brackets inside scalars and comments are text, not nesting.
    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let deep = "[".repeat(MAX_NESTING + 1);
        let text = format!(
            "# {deep}\nreactions:\n  r:\n    message: fix {deep}\n  s:\n    message: '{deep}'\n  t:\n    message: |\n      {deep}\n  u:\n    message: \"a\\\"{deep}\"\n  v: {{message: \"{deep}\"}}\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.reactions["s"].message.as_deref(),
            Some(deep.as_str())
        );
        assert_eq!(
            config.reactions["v"].message.as_deref(),
            Some(deep.as_str())
        );
        let shallow = format!(
            "{}{}",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert!(parse(&format!("labels: {shallow}\n"))
            .unwrap_err()
            .message
            .contains("invalid type"));
    }

    #[test]
    fn display_puts_location_key_and_message_in_one_line() {
        let err = parse("projects:\n  app:\n    path: /r\n    agnet: x\n").unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{SOURCE}:4:5: projects.app.agnet: unknown field `agnet`, expected one of"
            )),
            "{err}"
        );
        let err = load_file(Path::new("/nonexistent/ao.yaml"), &env).unwrap_err();
        assert_eq!(err.file, Path::new("/nonexistent/ao.yaml"));
        assert!(
            err.to_string().starts_with("/nonexistent/ao.yaml: "),
            "{err}"
        );
    }

    #[test]
    fn yaml_syntax_error_names_the_line() {
        let err = parse("projects:\n  app:\n    path: /r\n   bad: [\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.column.is_some(), "{err}");
    }

    #[test]
    fn escaped_dollar_brace_stays_literal_and_comments_are_not_expanded() {
        let text = "# token: ${UNSET}\nreactions:\n  r:\n    message: \"cost $${PRICE} ${HOME}\"\n";
        let config = parse(text).unwrap();
        assert_eq!(
            config.reactions["r"].message.as_deref(),
            Some("cost ${PRICE} /home/dev")
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let text = "projects:\n  a:\n    path: repo\n  b:\n    path: /abs/b\n  c:\n    path: ~/c\n";
        let config = parse_str(text, Path::new("/srv/cfg/ao.yaml"), &env).unwrap();
        assert_eq!(config.projects["a"].path, "/srv/cfg/repo");
        assert_eq!(config.projects["b"].path, "/abs/b");
        assert_eq!(config.projects["c"].path, "/home/dev/c");
        let err = parse_str(text, Path::new("/srv/cfg/ao.yaml"), &|_| None).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("projects.c.path"));
        assert_eq!(err.line, Some(7));
    }

    #[test]
    fn outline_follows_sequences_and_skips_block_scalars() {
        let text = "a:\n  - b: 1\n    c:\n  d: |\n    e: no\n  'f g': 2\n";
        assert_eq!(locate(&outline(text), &["a", "c"]), Some(3));
        assert_eq!(locate(&outline(text), &["a", "d", "e"]), None);
        assert_eq!(locate(&outline(text), &["a", "f g"]), Some(6));
    }

    #[test]
    fn find_config_walks_up_then_falls_back_to_ao_home() {
        let root = tempfile::tempdir().unwrap();
        let (top, deep, home) = (
            root.path().join("top"),
            root.path().join("top/a/b"),
            Home::new(root.path().join("home")),
        );
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let explicit = Path::new("/elsewhere/x.yaml");
        assert_eq!(
            find_config(Some(explicit), &deep, &home).as_deref(),
            Some(explicit)
        );

        let home_config = home.join("config.yaml");
        std::fs::write(&home_config, "").unwrap();
        assert_eq!(find_config(None, &deep, &home), Some(home_config));

        let yml = top.join("agent-orchestrator.yml");
        std::fs::write(&yml, "").unwrap();
        assert_eq!(find_config(None, &deep, &home), Some(yml));

        let nearer = top.join("a/agent-orchestrator.yaml");
        std::fs::write(&nearer, "").unwrap();
        assert_eq!(find_config(None, &deep, &home), Some(nearer));
    }
}

/// Property tests: whatever the text, the loader returns (never panics), nothing nested past
/// [`MAX_NESTING`] reaches the YAML parser, and every config it accepts has ids and session
/// prefixes that are safe in tmux names and paths.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("/fuzz/ao.yaml"), &|name| {
            (name == "HOME").then(|| "/home/fuzz".to_owned())
        })
    }

    /// What every accepted config holds: safe ids and one project per session prefix.
    fn assert_safe(config: &Config) {
        let mut prefixes = std::collections::BTreeSet::new();
        for (id, project) in &config.projects {
            let prefix = project.session_prefix(id);
            assert!(is_valid_project_id(id), "{id:?}");
            assert!(is_valid_session_prefix(&prefix), "{prefix:?} of {id:?}");
            assert!(prefixes.insert(prefix), "shared prefix of {id:?}");
        }
    }

    /// How many collections deep `value` is.
    fn nesting(value: &serde_yaml::Value) -> usize {
        use serde_yaml::Value;
        match value {
            Value::Sequence(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
            Value::Mapping(map) => {
                1 + map
                    .iter()
                    .map(|(key, value)| nesting(key).max(nesting(value)))
                    .max()
                    .unwrap_or(0)
            }
            Value::Tagged(tagged) => nesting(&tagged.value),
            _ => 0,
        }
    }

    /// Fragments of YAML and of this config's keys, and characters tmux and paths care about.
    const TOKENS: &[&str] = &[
        "projects:",
        "\n",
        "  ",
        "- ",
        "? ",
        ": ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "'",
        "\"",
        "#",
        "|",
        ">",
        "&a ",
        "*a",
        "!!str ",
        "---",
        "path: /r",
        "sessionPrefix: ",
        "app",
        "lib.core",
        "../x",
        "a/b",
        "a:b",
        "#{x}",
        "-x",
        "${HOME}",
        "${NOPE}",
        "$${",
        "\\",
        "\t",
        "é",
    ];

    /// Names built from characters that are and are not allowed in ids.
    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(
                &[
                    "a", "Z", "0", "_", "-", ".", "..", "/", ":", "#", "{", "}", " ", "\t", "é",
                ][..],
            ),
            1..8,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A JSON value up to a few levels deep whose strings hold YAML's special characters.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "[\\[\\]{}#'\" :,|>&*!%@`a-z\\n -]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z#\\[{ ]{1,6}", inner, 0..4)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_is_loaded_or_refused(text in "\\PC{0,300}") {
            if let Ok(config) = parse(&text) {
                assert_safe(&config);
            }
        }

        #[test]
        fn yaml_ish_text_is_loaded_or_refused(
            tokens in proptest::collection::vec(prop::sample::select(TOKENS), 0..80),
        ) {
            if let Ok(config) = parse(&tokens.concat()) {
                assert_safe(&config);
            }
        }

        /// Deep text is refused by the scan, so the parser's time never depends on its depth.
        #[test]
        fn deep_text_is_refused_before_parsing(
            opener in prop::sample::select(&["[", "{a: ", "{a: [", "- ", "? ", "[{a: ", "- [", "-   "][..]),
            depth in (MAX_NESTING + 1)..4000,
            under_a_key in any::<bool>(),
        ) {
            let lead = if under_a_key { "projects:\n  app:\n    agentConfig:\n      x:\n        " } else { "" };
            let err = parse(&format!("{lead}{}", opener.repeat(depth))).unwrap_err();
            prop_assert!(err.message.contains("nested more than"), "{}", err);
        }

        /// What the scan lets through is no deeper than the limit once parsed: it never counts
        /// less than the parser nests, whatever comes before (keys that are flow collections or
        /// quoted, tags, anchors, comments, documents).
        #[test]
        fn the_scan_never_counts_less_than_the_parser(
            tokens in proptest::collection::vec(prop::sample::select(TOKENS), 0..6),
            key in prop::sample::select(&[
                "", "[a]: ", "{a: b}: ", "k:\t", "'k''s': ", "? [a]: ", "- [a]: ", "!t [a]: ",
                "&a k: ", "- - k: ", "k:\n  ", "k: [\n  ", "? # c\n  ", "--- ",
            ][..]),
            (open, close) in prop::sample::select(&[
                ("[", "]"), ("{a: ", "}"), ("{a: [", "]}"), ("- ", ""), ("[{a: ", "}]"), ("[a, ", "]"),
            ][..]),
            depth in (MAX_NESTING + 1)..200,
        ) {
            let text = format!("{}{key}{}x{}", tokens.concat(), open.repeat(depth), close.repeat(depth));
            let locator = Locator { source: Path::new("fuzz"), outline: Vec::new() };
            if check_nesting(&text, &locator).is_ok() {
                match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                    Ok(value) => prop_assert!(nesting(&value) <= MAX_NESTING, "{text:?}"),
                    Err(err) => prop_assert!(!err.to_string().contains("recursion limit"), "{text:?}"),
                }
            }
        }

        #[test]
        fn projects_with_arbitrary_ids_are_accepted_only_when_safe(
            projects in proptest::collection::vec((name(), proptest::option::of(name())), 1..5),
        ) {
            let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
            let text: String = projects
                .iter()
                .map(|(id, prefix)| {
                    let prefix = prefix.as_deref().map(|p| format!("    sessionPrefix: {}\n", quote(p)));
                    format!("  {}:\n    path: /r\n{}", quote(id), prefix.unwrap_or_default())
                })
                .collect();
            if let Ok(config) = parse(&format!("projects:\n{text}")) {
                assert_safe(&config);
            }
        }

        /// Whatever serde_yaml writes (quoting brackets, `#` and quotes its own way) loads back:
        /// the nesting scan does not mistake scalars for collections.
        #[test]
        fn written_configs_load_back(agent_config in proptest::collection::btree_map("[a-z]{1,5}", value(), 0..4)) {
            let mut config = Config::default();
            config.projects.insert("app".into(), ProjectConfig {
                path: "/r".into(),
                agent_config,
                ..Default::default()
            });
            let text = serde_yaml::to_string(&config).unwrap();
            prop_assert_eq!(parse(&text).unwrap(), config);
        }
    }
}
