//! Finding the file, reading it and turning its text into a [`Config`]: `${VAR}` expansion,
//! the size and nesting limits, strict deserializing with errors at their line, and project
//! paths made absolute.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use ao_proto::home::Home;
use regex::Regex;

use super::error::ConfigError;
use super::nesting::check_nesting;
use super::outline::{outline, Locator};
use super::schema::Config;
use super::validate::validate;

/// File names looked for in the current directory and its ancestors, in order of preference.
pub const CONFIG_FILE_NAMES: &[&str] = &["agent-orchestrator.yaml", "agent-orchestrator.yml"];

/// `$${` (an escaped, literal `${`) or a `${NAME}` reference.
static VAR_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\$\{|\$\{[A-Za-z_][A-Za-z0-9_]*\}").expect("valid regex"));

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
///
/// [`MAX_NESTING`]: crate::config::MAX_NESTING
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::nesting::MAX_NESTING;
    use crate::config::schema::{Priority, ReactionAction};
    use std::time::Duration;

    const SOURCE: &str = "/etc/ao/agent-orchestrator.yaml";

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/dev".into()),
            "SLACK_URL" => Some("https://hooks.example/T0".into()),
            _ => None,
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new(SOURCE), &env)
    }

    pub(crate) const FULL: &str = r##"
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
    notify: [slack]
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
        assert_eq!(
            config.notification_routing.urgent.as_deref(),
            Some(&["slack".to_string()][..])
        );

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
                "orchestrator:\n  agent: gpt\n",
                "orchestrator.agent",
                2,
                "unknown agent `gpt`",
            ),
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
            (
                "reactions:\n  agent-stuck:\n    notify: [pager]\n",
                "reactions.agent-stuck.notify",
                3,
                "unknown notifier `pager`",
            ),
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
    fn the_stuck_threshold_is_the_projects_then_the_top_levels_then_ten_minutes() {
        let config = parse(
            "reactions:\n  agent-stuck:\n    threshold: 15m\nprojects:\n  a:\n    path: /r\n    \
             reactions:\n      agent-stuck:\n        threshold: 90\n  b:\n    path: /s\n",
        )
        .unwrap();
        assert_eq!(config.stuck_threshold("a"), Duration::from_secs(90));
        assert_eq!(config.stuck_threshold("b"), Duration::from_secs(900));
        assert_eq!(
            Config::default().stuck_threshold("b"),
            crate::config::DEFAULT_STUCK_THRESHOLD
        );
        // Only the threshold is acted on: it alone is not warned about.
        assert!(crate::config::unimplemented_keys(&config).is_empty());
        let err = parse("projects:\n  a:\n    path: /r\n    reactions:\n      agent-stuck:\n        threshold: soon\n")
            .unwrap_err();
        assert_eq!(
            err.key.as_deref(),
            Some("projects.a.reactions.agent-stuck.threshold")
        );
        assert_eq!(err.line, Some(6));
        assert!(err.message.contains("a duration like"), "{err}");
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
            "# {deep}\nreactions:\n  ci-failed:\n    message: fix {deep}\n  changes-requested:\n    \
             message: '{deep}'\n  bugbot-comments:\n    message: |\n      {deep}\n  merge-conflicts:\n    \
             message: \"a\\\"{deep}\"\n  pr-closed: {{message: \"{deep}\"}}\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.reactions["changes-requested"].message.as_deref(),
            Some(deep.as_str())
        );
        assert_eq!(
            config.reactions["pr-closed"].message.as_deref(),
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
        let text = "# token: ${UNSET}\nreactions:\n  ci-failed:\n    message: \"cost $${PRICE} ${HOME}\"\n";
        let config = parse(text).unwrap();
        assert_eq!(
            config.reactions["ci-failed"].message.as_deref(),
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
