//! What `runtime` and `docker.*` may say: a known runtime, and container settings Docker
//! accepts (a size, a positive CPU share and process limit, a network, absolute mounts).

use super::schema::{DockerConfig, RUNTIMES};

/// What is wrong with one key of a `docker` block, by its name in the block.
#[derive(Debug, PartialEq, Eq)]
pub struct DockerConfigError {
    pub field: &'static str,
    pub problem: String,
}

/// `runtime` names a runtime this build runs.
///
/// # Errors
/// The problem, for the `runtime` key.
pub fn check_runtime(runtime: &str) -> Result<(), String> {
    if RUNTIMES.contains(&runtime) {
        Ok(())
    } else {
        Err(format!(
            "unknown runtime `{runtime}`: expected one of {}",
            RUNTIMES.join(", ")
        ))
    }
}

/// One `docker` block's keys, each alone (whether an image is set is the caller's question:
/// it may come from another block).
///
/// # Errors
/// The first key that Docker would refuse, and why.
pub fn check_docker(docker: &DockerConfig) -> Result<(), DockerConfigError> {
    let fail = |field, problem: String| Err(DockerConfigError { field, problem });
    if docker.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return fail("image", "must not be empty".into());
    }
    if let Some(memory) = &docker.memory {
        match ao_proto::units::parse_size(memory) {
            Ok(0) => return fail("memory", "must be more than 0".into()),
            Ok(_) => {}
            Err(e) => return fail("memory", e),
        }
    }
    if let Some(cpus) = docker.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return fail(
                "cpus",
                format!("expected a number of CPUs above 0, got {cpus}"),
            );
        }
    }
    if let Some(pids) = docker.pids_limit {
        if pids < 1 {
            return fail("pidsLimit", format!("must be at least 1, got {pids}"));
        }
    }
    if docker
        .network
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        return fail(
            "network",
            "must not be empty: `bridge` (the default), `none` or a network's name".into(),
        );
    }
    for mount in &docker.mounts {
        if let Err(problem) = parse_mount(mount) {
            return fail("mounts", problem);
        }
    }
    if let Some(name) = docker.env.keys().find(|k| !is_env_name(k)) {
        return fail(
            "env",
            format!("`{name}` is not an environment variable name (letters, digits, `_`)"),
        );
    }
    Ok(())
}

/// A bind mount as written, `host:container` or `host:container:ro|rw`, both paths absolute.
///
/// # Errors
/// The problem, naming the mount.
pub fn parse_mount(mount: &str) -> Result<(&str, &str, bool), String> {
    let expected = || {
        format!(
            "expected `host-path:container-path` or `host-path:container-path:ro`, got `{mount}`"
        )
    };
    let mut parts = mount.split(':');
    let (Some(host), Some(inside)) = (parts.next(), parts.next()) else {
        return Err(expected());
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(expected()),
    };
    if parts.next().is_some() {
        return Err(expected());
    }
    for path in [host, inside] {
        if !path.starts_with('/') {
            return Err(format!("`{path}` in `{mount}` is not an absolute path"));
        }
    }
    Ok((host, inside, read_only))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_and_docker_keys_are_checked() {
        assert!(check_runtime("docker").is_ok());
        assert!(check_runtime("podman")
            .unwrap_err()
            .contains("expected one of tmux, docker"));
        let ok = DockerConfig {
            image: Some("ao-debian:latest".into()),
            memory: Some("2G".into()),
            cpus: Some(1.5),
            pids_limit: Some(256),
            network: Some("none".into()),
            mounts: vec!["/srv/cache:/cache:ro".into()],
            env: [("CI".into(), "1".into())].into(),
        };
        assert_eq!(check_docker(&ok), Ok(()));
        let field = |d: DockerConfig| check_docker(&d).unwrap_err().field;
        let memory = DockerConfig {
            memory: Some("lots".into()),
            ..ok.clone()
        };
        assert_eq!(field(memory), "memory");
        let cpus = DockerConfig {
            cpus: Some(0.0),
            ..ok.clone()
        };
        assert_eq!(field(cpus), "cpus");
        let pids = DockerConfig {
            pids_limit: Some(0),
            ..ok.clone()
        };
        assert_eq!(field(pids), "pidsLimit");
        let mounts = DockerConfig {
            mounts: vec!["cache:/cache".into()],
            ..ok.clone()
        };
        assert_eq!(field(mounts), "mounts");
        let env = DockerConfig {
            env: [("A-B".into(), String::new())].into(),
            ..ok
        };
        assert_eq!(field(env), "env");
        assert_eq!(parse_mount("/a:/b"), Ok(("/a", "/b", false)));
        assert!(parse_mount("/a:/b:rx").is_err());
    }

    #[test]
    fn a_file_error_names_the_key_and_its_line() {
        use crate::config::load::tests::parse;
        let text = "projects:\n  app:\n    path: /a\n    runtime: docker\n    docker:\n      \
                    image: ao-debian:latest\n      memory: lots\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains(":7: projects.app.docker.memory: expected a size"),
            "{err}"
        );
        let err = parse("projects:\n  app:\n    path: /a\n    runtime: docker\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: projects.app.docker.image: required with `runtime: docker`"),
            "{err}"
        );
        let err = parse("defaults:\n  runtime: podman\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: defaults.runtime: unknown runtime"),
            "{err}"
        );
        // The agent's image serves every project that runs it.
        let text = "projects:\n  app:\n    path: /a\n    runtime: docker\n    agent: bot\n\
                    agents:\n  bot:\n    command: ./bot\n    docker: {image: bot:1, cpus: 2}\n";
        let config = parse(text).unwrap();
        let docker = config.docker_for(&config.projects["app"], "bot");
        assert_eq!(
            (docker.image.as_deref(), docker.cpus),
            (Some("bot:1"), Some(2.0))
        );
    }
}
